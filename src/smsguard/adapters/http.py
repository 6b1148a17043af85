"""What both web adapters share, free of any framework: read a request, answer it.

An adapter hands a ``Gate`` the parts of a request (``Incoming``); the gate turns them into
the guard's arguments or an error ``Reply`` (400, 413), and a ``Decision`` into a refusal
(429, 503) or nothing (let the endpoint run). The ASGI middleware and the Flask extension are
the few lines of I/O around it.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl

from smsguard import attempt as codes
from smsguard.attempt import Decision
from smsguard.errors import ConfigError, InvalidInput

MAX_BODY = 16 * 1024
"""A send-code request is a phone number and a few fields: 16 KiB is generous."""


class Incoming(NamedTuple):
    """A request as an adapter sees it: headers looked up by lower-case name, the body
    already read."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: str
    body: bytes
    peer: str | None
    data: Mapping[str, Any] = MappingProxyType({})
    """The parsed body (JSON object or form) or, without a body, the query parameters;
    filled in by the Gate."""


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal before it is rendered: the status, the JSON body, extra headers."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A rendered response."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes


# Built once: json.dumps(separators=...) would build a new encoder on every call.
_to_json = json.JSONEncoder(separators=(",", ":")).encode


def json_reply(problem: Problem) -> Reply:
    """The default rendering: the problem's body as JSON."""
    body = _to_json(problem.body).encode()
    return Reply(problem.status, (("content-type", "application/json"), *problem.headers.items()), body)


Field = str | Callable[[Incoming], Any] | None
"""Where a value comes from: a field name (JSON body, form body, or query string), a
callable given the Incoming request (return None when absent), or None (not used)."""


class Gate:
    """Request in, guard arguments or refusal out. Shared by every adapter.

    - ``phone``: where the number is (default the ``phone`` field).
    - ``content``: where the content is; default None, which uses the route (``POST
      /sms/send``) as the content, so that SameContent limits one code per number per
      window per endpoint. Name a field (``"template"``) to count per template instead.
    - ``trusted_proxies``: CIDRs whose ``Forwarded`` / ``X-Forwarded-For`` are believed.
    - ``refund_on``: statuses of the endpoint's response that mean "not sent" (default
      every 5xx); an exception from the endpoint refunds as well.
    - ``render``: turns a Problem into a Reply (default: JSON).
    """

    def __init__(
        self,
        *,
        phone: Field = "phone",
        content: Field = None,
        trusted_proxies: Iterable[str] = (),
        max_body: int = MAX_BODY,
        refund_on: Collection[int] | Callable[[int], bool] | None = None,
        render: Callable[[Problem], Reply] = json_reply,
    ) -> None:
        if phone is None:
            raise ConfigError("phone must name a field or be a callable")
        try:
            self.trusted = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None
        self.phone, self.content, self.max_body, self.render = phone, content, max_body, render
        if refund_on is None:
            self.refund_on: Callable[[int], bool] = lambda status: status >= 500
        elif callable(refund_on):
            self.refund_on = refund_on
        else:
            statuses = frozenset(refund_on)
            self.refund_on = statuses.__contains__

    # -- request -> guard arguments ------------------------------------------------------

    def arguments(self, request: Incoming) -> dict[str, Any] | Reply:
        """``Guard.check`` keyword arguments for ``request`` (``ip`` as an ``ipaddress``
        object, see ``client_ip``), or a 400 Reply saying why not."""
        try:
            data = request.data or _data(request)
            phone = self._field(self.phone, request, data, "phone")
            if phone is None:
                raise InvalidInput(f"missing phone number: send it as {self._name(self.phone)}")
            content = None if self.content is None else self._field(self.content, request, data, "content")
            if content is None:
                content = f"{request.method} {request.path}"
        except InvalidInput as exc:
            return self.invalid(exc)
        return {"phone": phone, "content": content, "ip": self._client(request)}

    def _field(self, source: Field, request: Incoming, data: Mapping[str, Any], what: str) -> str | None:
        if source is None:
            return None
        value = source(request._replace(data=data)) if callable(source) else data.get(source)
        if value is None or isinstance(value, str):
            return value
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")

    @staticmethod
    def _name(source: Field) -> str:
        return repr(source) if isinstance(source, str) else "the configured field"

    def client_ip(self, request: Incoming) -> str | None:
        """The socket peer, unless it is a trusted proxy: then the right-most hop of
        ``Forwarded`` (or else ``X-Forwarded-For``) that is not a trusted proxy itself."""
        client = self._client(request)
        return None if client is None else str(client)

    def _client(self, request: Incoming) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        peer = _address(request.peer)
        if peer is None or not self.trusted or not self._trusted(peer):
            return peer
        hops = _forwarded_for(request.headers)
        client = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:  # garbage in the chain: stop at the last hop we could read
                break
            client = address
            if not self._trusted(address):
                break
        return client

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.trusted)

    # -- decision -> response ---------------------------------------------------------

    def refusal(self, decision: Decision) -> Reply | None:
        """The response for a denied decision, by its kind (429 for a limit or a challenge,
        403 forbidden, 503 unavailable), or None to let the endpoint run."""
        if decision.allowed:
            return None
        wait = None if decision.retry_after is None else max(1, math.ceil(decision.retry_after))
        kind = codes.kind_of(decision)
        if self.render is json_reply:  # it reads nothing but the problem: render each kind once
            return _json_refusal(decision.policy, decision.reason, kind, wait, decision.limit)
        return self.render(_refusal(decision.policy, decision.reason, kind, wait, decision.limit, decision))

    def invalid(self, exc: InvalidInput) -> Reply:
        """A 400 for input the guard cannot judge (a bad number, a missing field)."""
        return self.render(Problem(400, {"error": "invalid_request", "detail": str(exc)}))

    def too_large(self) -> Reply:
        return self.render(
            Problem(413, {"error": "payload_too_large", "detail": f"the body is over {self.max_body} bytes"})
        )


# The status and the body's "error" for each kind of refusal.
_STATUS = {
    codes.LIMIT: (429, "rate_limited"),
    codes.FORBIDDEN: (403, "forbidden"),
    codes.UNAVAILABLE: (503, "unavailable"),
    codes.CHALLENGE: (429, "challenge_required"),
}


def _refusal(
    policy: str | None,
    reason: str | None,
    kind: str,
    wait: int | None,
    limit: int | None,
    decision: Decision | None,
) -> Problem:
    """The Problem for a denial of ``kind``; a spent limit also gets RateLimit headers."""
    status, error = _STATUS.get(kind, _STATUS[codes.FORBIDDEN])
    headers = {} if wait is None else {"retry-after": str(wait)}
    if kind == codes.LIMIT and limit is not None and policy is not None:
        name = _sf_string(policy)
        headers["ratelimit-policy"] = f"{name};q={limit}"
        headers["ratelimit"] = f"{name};r=0" + ("" if wait is None else f";t={wait}")
    body = {"error": error, "policy": policy, "reason": reason, "retry_after": wait}
    return Problem(status, body, headers, decision)


# Under a flood the same denials repeat (one policy, a few retry times): each is rendered once.
# Policy names come from the configuration, not from clients, so the keys are few anyway.
@functools.lru_cache(maxsize=1024)
def _json_refusal(
    policy: str | None, reason: str | None, kind: str, wait: int | None, limit: int | None
) -> Reply:
    return json_reply(_refusal(policy, reason, kind, wait, limit, None))


def _sf_string(text: str) -> str:
    """``text`` as a structured-field string (RFC 8941): quoted, with \\ and \" escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _data(request: Incoming) -> Mapping[str, Any]:
    """The request's fields: its body parsed by content type, or without a body its query."""
    if not request.body:
        return _form(request.query)
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            data = json.loads(request.body)
        except (ValueError, RecursionError):
            raise InvalidInput("the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidInput("the JSON body must be an object")
        return data
    if kind == "application/x-www-form-urlencoded":
        try:
            return _form(request.body.decode())
        except UnicodeDecodeError:
            raise InvalidInput("the form body is not UTF-8") from None
    raise InvalidInput(
        f"unsupported content type {kind or 'none'!r}: send application/json or a urlencoded form"
    )


def _form(text: str) -> dict[str, str]:
    """``text`` (a query or urlencoded body) as a dict, as ``parse_qsl`` reads it."""
    if "%" in text or "+" in text:
        return dict(parse_qsl(text, keep_blank_values=True))
    # Nothing to unquote: split it here, which is the same and a third of parse_qsl's cost.
    fields = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            fields[name] = value
    return fields


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a peer or a forwarded hop (``1.2.3.4:80``, ``"[2001:db8::1]:443"``)."""
    # No address is longer than this (an IPv6 one in brackets, with a zone and a port, quoted):
    # longer text is refused before the cache, so a client cannot fill it with big strings.
    if not text or len(text) > 72:
        return None
    return _parse_address(text)


@functools.lru_cache(maxsize=4096)  # peers and proxies repeat: parse each once
def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _forwarded_for(headers: Mapping[str, str]) -> list[str]:
    """The client hops, left to right: ``Forwarded: for=`` if present, else ``X-Forwarded-For``."""
    forwarded = headers.get("forwarded")
    if forwarded:
        hops = []
        for element in forwarded.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for":
                    hops.append(value)
        return hops
    return [hop for hop in headers.get("x-forwarded-for", "").split(",") if hop.strip()]
