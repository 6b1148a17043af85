"""What every web adapter shares, free of any framework: the rules of one guarded request.

A ``Gate`` holds the options; ``Gate.exchange`` is the whole trip of one request once its body
is read (bytes, or ``TOO_LARGE`` past ``max_body``, ``TOO_SLOW`` past ``body_timeout``, or
``UNREADABLE`` when the server could not read it),
written once as a generator that asks its adapter for what needs I/O and gets the answers sent
back (``smsguard.drive`` runs it, with ``exchange_io`` or ``aexchange_io``):

- ``("check", arguments)``: the guard's flow of ``Guard.check`` (``smsguard.flows``), which the
  exchange runs within itself (``yield from``): its backend steps go to the same I/O, so one
  request is one drive; the flow returns the Decision (an ``InvalidInput`` is thrown back in);
- ``("issue", arguments)``: the flow of ``Guard.issue_code`` (the Gate's ``action="issue"``),
  returning the ``Issued``;
- ``("verify", arguments)``: the flow of ``Guard.check_code`` (``action="verify"``), returning
  the ``CodeCheck``;
- ``("endpoint", admitted)``: the endpoint's status (its exception is thrown back in);
- ``("refund", decision)``: the flow of ``Guard.refund``.

It returns the Reply to send instead of the endpoint's response, or None. The ASGI middleware
and the Flask extension are the few lines of I/O that drive it (sans-I/O, as h11 does), so
their rules cannot drift apart. The request's fields are read by ``smsguard.adapters.fields``,
its client's address by ``smsguard.adapters.proxies``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

from smsguard import attempt as codes
from smsguard.adapters import ratelimit
from smsguard.adapters.exempt import Exemption
from smsguard.adapters.fields import Fields
from smsguard.adapters.incoming import Field as Field
from smsguard.adapters.incoming import Incoming as Incoming
from smsguard.adapters.proxies import Proxies
from smsguard.adapters.ratelimit import sf_string
from smsguard.attempt import Decision
from smsguard.backends.base import RUN
from smsguard.drive import Flow
from smsguard.errors import ConfigError, InvalidInput, MissingSubject
from smsguard.pumping import ROUTE
from smsguard.settings import Settings

if TYPE_CHECKING:
    from smsguard import CodeCheck, Issued
    from smsguard.guard import Guard

log = logging.getLogger("smsguard")

MAX_BODY = 16 * 1024
"""A send-code request is a phone number and a few fields: 16 KiB is generous."""
BODY_TIMEOUT = 10.0
"""Seconds a client has to deliver the body of a guarded request."""
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal before it is rendered: the status, the JSON body, extra headers, and what the
    guard answered (the send's Decision, or the CodeCheck of a code refused: its exact reason,
    which the body does not show)."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    decision: Decision | None = None
    code_check: CodeCheck | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """A rendered response."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes


class Marker:
    """A body that could not be read: TOO_LARGE, TOO_SLOW or UNREADABLE."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


TOO_LARGE: Final = Marker("TOO_LARGE")
TOO_SLOW: Final = Marker("TOO_SLOW")
UNREADABLE: Final = Marker("UNREADABLE")
"""The server failed reading the body (a malformed chunk under a WSGI server): a 400."""
Exchange = Generator[tuple[Any, ...], Any, "Reply | None"]
Admitted: TypeAlias = "Decision | Issued | CodeCheck"
"""What an admitted request hands its endpoint, by the Gate's action: the Decision
(``check``), the Issued code (``issue``), the CodeCheck of a right code (``verify``)."""

CHECK: Final = "check"
ISSUE: Final = "issue"
VERIFY: Final = "verify"
ACTIONS: Final = (CHECK, ISSUE, VERIFY)


# Built once: json.dumps(separators=...) would build a new encoder on every call.
_to_json = json.JSONEncoder(separators=(",", ":")).encode


def json_reply(problem: Problem) -> Reply:
    """The default rendering: the problem's body as JSON."""
    body = _to_json(problem.body).encode()
    return Reply(problem.status, (("content-type", "application/json"), *problem.headers.items()), body)


_SET_BY: Final = {
    "phone": "PHONE_FIELD",
    "content": "CONTENT_FIELD",
    "code": "CODE_FIELD",
    "trusted_proxies": "TRUSTED_PROXIES",
    "proxy_header": "PROXY_HEADER",
    "max_body": "MAX_BODY",
    "body_timeout": "BODY_TIMEOUT",
    "refund_on": "REFUND_ON",
    "exempt_networks": "EXEMPT_NETWORKS",
    "rate_headers": "RATE_HEADERS",
}
"""The key of flat settings that sets each Gate option (``Gate.settings``)."""

OPTIONS: Final = (
    "phone",
    "content",
    "trusted_proxies",
    "proxy_header",
    "max_body",
    "body_timeout",
    "refund_on",
    "render",
    "challenge",
    "action",
    "code",
    "exempt_networks",
    "exempt",
    "rate_headers",
)
"""The Gate's options: what every adapter takes."""


def check_options(options: Mapping[str, Any]) -> None:
    """A ConfigError naming any key of ``options`` that is not a Gate option."""
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}: the options are {list(OPTIONS)}")


class Gates:
    """An app's Gate options, and the Gate of each view that overrides some of them, each
    built once (the views that override nothing share the app's)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        check_options(options)
        self.options = dict(options)
        self.default = Gate(**self.options)
        self._views: dict[Any, Gate] = {}

    def of(self, view: Any, overrides: Mapping[str, Any]) -> Gate:
        if not overrides:
            return self.default
        gate = self._views.get(view)
        if gate is None:
            gate = self._views[view] = Gate(**{**self.options, **gate_options(overrides)})
        return gate


GUARD: Final = "guard"
"""What a route of a mapping takes beside the Gate's options: a Guard of its own (another set
of policies), for the adapter to judge it with."""


def gate_options(options: Mapping[str, Any]) -> Mapping[str, Any]:
    """``options`` without a route's ``guard``."""
    return {k: v for k, v in options.items() if k != GUARD} if GUARD in options else options


class Switch:
    """Guarding on or off in every adapter of this process, over each app's ``ENABLED``: what
    the pytest plugin's ``smsguard_disabled`` turns off for a test. Off, an adapter does as with
    ``SMSGUARD_ENABLED=false``: the number validated, nothing counted."""

    def __init__(self) -> None:
        self.on = True

    def turn(self, on: bool) -> None:
        self.on = on


switch = Switch()
"""The process's switch (``smsguard.testing``)."""


def exchange_io(
    guard: Guard, endpoint: Callable[[Admitted], int], enabled: bool = True
) -> Callable[[tuple[Any, ...]], Any]:
    """The I/O of a sync adapter's exchange, for ``smsguard.drive.drive``: the guard's flow of
    a step (its check; or, while the app's guard is switched off by ``SMSGUARD_ENABLED`` or the
    process's ``switch``, the number validated, InvalidPhone as ever, and nothing counted; a code
    issued or checked, switched off or not: the codes are the app's, not a limit; a refund),
    which the exchange runs in the same drive, the steps of that flow on the guard's backend,
    and the endpoint (its status)."""
    backend, run = guard.io, guard.backend.run

    def io(step: tuple[Any, ...]) -> Any:
        kind = step[0]
        if kind == RUN:  # a decision's one step, first
            return run(step[1])
        if kind == "endpoint":
            return endpoint(step[1])
        if kind in _JUDGED:
            return _flow(guard, kind, step[1], enabled)
        return backend(step)

    return io


def aexchange_io(
    guard: Guard, endpoint: Callable[[Admitted], Awaitable[int]] | None, enabled: bool = True
) -> Callable[[tuple[Any, ...]], Awaitable[Any]]:
    """``exchange_io`` for an async adapter, for ``smsguard.drive.adrive``: the backend's steps
    awaited. ``endpoint`` None for an adapter that runs the endpoint itself between
    ``Gate.admit`` and ``Gate.settle`` (FastAPI's dependency)."""
    backend, arun = guard.aio, guard.backend.arun

    async def aio(step: tuple[Any, ...]) -> Any:
        kind = step[0]
        if kind == RUN:
            return await arun(step[1])
        if kind == "endpoint" and endpoint is not None:
            return await endpoint(step[1])
        if kind in _JUDGED:
            return _flow(guard, kind, step[1], enabled)
        return await backend(step)

    return aio


_JUDGED: Final = frozenset({CHECK, ISSUE, VERIFY, "refund"})


def _flow(guard: Guard, kind: str, value: Any, enabled: bool) -> Flow[Any]:
    """The guard's flow for an exchange's step ``(kind, value)``: no I/O until it is run."""
    flows = guard.flows
    if kind == CHECK:
        if "exempt" in value:
            return _given(_unguarded(guard, value["phone"], value["exempt"]))
        if not (enabled and switch.on):
            return _given(_unguarded(guard, value["phone"]))
        return flows.check(
            value["phone"],
            value.get("content"),
            value.get("ip"),
            value.get("context"),
            value.get("challenge_passed", False),
        )
    if kind == ISSUE:
        return flows.issue_code(**value)
    if kind == VERIFY:
        return flows.check_code(value["phone"], value["code"], value.get("ip"))
    return flows.refund(value)


def _given(decision: Decision) -> Flow[Decision]:
    """A flow with no step that returns ``decision``."""
    return decision
    yield  # a generator: the exchange runs it as any flow


def _unguarded(guard: Guard, phone: str, exempt: str | None = None) -> Decision:
    """The number validated and nothing counted: guarding switched off, or the request exempt
    (``exempt`` names what exempted it: the Decision's policy, with reason ``exempt``)."""
    number = guard.identify(phone)
    reason = None if exempt is None else codes.EXEMPT
    return Decision(True, number.e164, exempt, reason, country=number.region, phone_hash=number.phone_id)


class Gate:
    """The rules of a guarded request. Shared by every adapter.

    - ``phone``: where the number is (default the ``phone`` field).
    - ``content``: where the content is; default None, which uses the route (``POST
      /sms/send``) as the content, so that SameContent limits one code per number per
      window per endpoint: a label, named in the context under ``ROUTE``, which ContentRules
      reads as no text. Name a field (``"template"``) to count per template instead.
      A phone or content field given more than once (in the body, or in the query and the
      body) is a 400: the endpoint might read another copy than the guard counted. So is a
      urlencoded body that reads as JSON: a view that reads JSON whatever the type would text
      another number than the form names.
    - ``trusted_proxies``: CIDRs of the proxies whose ``proxy_header`` is believed, and
      ``"unix"`` for a proxy on a unix socket.
    - ``proxy_header``: the one header the proxy sets: ``x-forwarded-for`` (nginx, the cloud
      load balancers), ``forwarded`` (RFC 7239) or a single-address one such as ``x-real-ip``.
      No other is read: a client's own forwarding header would otherwise be believed.
    - ``max_body``: larger bodies get a 413; ``body_timeout``: a body not delivered within it
      gets a 408 (where the adapter can tell).
    - ``refund_on``: statuses of the endpoint's response that mean "not sent" (default every
      4xx and 5xx); an exception from the endpoint refunds as well.
    - ``render``: turns a Problem into a Reply (default: JSON).
    - ``challenge``: a callable given the request that says whether it passed a challenge (a
      CAPTCHA token the app verified). A policy of kind ``challenge`` (``UnverifiedCap(...,
      challenge=True)``) then passes it over, and the remaining policies judge it; a request
      that did not pass gets a 429 ``challenge_required``.
    - ``action``: what the route does. ``"check"`` (the default) judges a send and hands the
      endpoint the Decision; ``"issue"`` judges it the same way and issues the code
      (``Guard.issue_code``), handing the endpoint the ``Issued`` (``.code`` to text to
      ``.decision.phone``), so the endpoint only sends the SMS; ``"verify"`` checks the code in
      the ``code`` field against the number (``Guard.check_code``) and hands the endpoint the
      ``CodeCheck`` of a right code. A refused code never reaches the endpoint: a wrong code, an
      expired one and none at all are one 400 ``invalid_code`` (no oracle), a code past its
      wrong guesses and a check-side limit a 429, an outage a 503 as for sends. Under
      ``"issue"`` and ``"verify"`` the content is the guard's (the code), not ``content``.
    - ``code``: where the code is, for ``action="verify"`` (default the ``code`` field; a field
      name or a callable, as ``phone``). Absent or not a string: a 400 ``invalid_request``.
    - ``opaque``: the reasons answered opaquely (default ``OPAQUE``: the anti-fraud scopes'),
      with reason ``refused``, no policy and a Retry-After rounded up to 15 minutes; the
      Decision, logs, events and statistics keep the exact ones. ``()`` shows every reason.
    - ``exempt_networks`` (client addresses or CIDRs: an office, a monitoring probe) and
      ``exempt`` (a callable given the request): requests let through unjudged and uncounted,
      the code issued all the same; never a code's check (see ``smsguard.adapters.exempt``).
    - ``rate_headers``: ``True`` (or ``"ratelimit"``) adds RateLimit-Policy and RateLimit
      headers to an allowed response, ``"x-ratelimit"`` the X-RateLimit-* ones (see
      ``smsguard.adapters.ratelimit``); off by default.
    """

    def __init__(
        self,
        *,
        phone: Field = "phone",
        content: Field = None,
        trusted_proxies: Iterable[str] = (),
        proxy_header: str = "x-forwarded-for",
        max_body: int = MAX_BODY,
        body_timeout: float = BODY_TIMEOUT,
        refund_on: Collection[int] | Callable[[int], bool] | None = None,
        render: Callable[[Problem], Reply] = json_reply,
        challenge: Callable[[Incoming], bool] | None = None,
        action: str = CHECK,
        code: Field = "code",
        opaque: Collection[str] = codes.OPAQUE,
        exempt_networks: Iterable[str] = (),
        exempt: Callable[[Incoming], Any] | None = None,
        rate_headers: bool | str = False,
    ) -> None:
        if action not in ACTIONS:
            raise ConfigError(f"action must be one of {list(ACTIONS)}, not {action!r}")
        if not ((code and isinstance(code, str)) or callable(code)):
            raise ConfigError(f"code must name a field or be a callable, not {code!r}")
        if not ((phone and isinstance(phone, str)) or callable(phone)):
            raise ConfigError(f"phone must name a field or be a callable, not {phone!r}")
        if content is not None and not ((content and isinstance(content, str)) or callable(content)):
            raise ConfigError(f"content must name a field, be a callable, or be None, not {content!r}")
        self.proxies = Proxies(trusted_proxies, proxy_header)
        if not (isinstance(max_body, int) and max_body >= 0):
            raise ConfigError(f"max_body must be a whole number of bytes, not {max_body!r}")
        if not (isinstance(body_timeout, int | float) and body_timeout > 0):
            raise ConfigError(f"body_timeout must be a positive number of seconds, not {body_timeout!r}")
        if challenge is not None and not callable(challenge):
            raise ConfigError("challenge must be a callable given the request")
        self.phone, self.content, self.max_body, self.render = phone, content, max_body, render
        self.challenge = challenge
        self.action, self.code = action, code
        self.opaque = frozenset(opaque)
        self.exemption = Exemption(exempt_networks, exempt)
        self.rate_headers = ratelimit.style(rate_headers)
        self.body_timeout = float(body_timeout)
        # With the phone, a code's check reads its code, a send its content; an issue reads none.
        self.fields = Fields(
            phone, code if action == VERIFY else content if action == CHECK else None, action
        )
        if refund_on is None:
            self.refund_on: Callable[[int], bool] = lambda status: status >= 400
        elif callable(refund_on):
            self.refund_on = refund_on
        else:
            statuses = frozenset(refund_on)
            self.refund_on = statuses.__contains__

    @staticmethod
    def settings(settings: Mapping[str, Any], prefix: str = "SMSGUARD_") -> dict[str, Any]:
        """The Gate options that flat settings set (``SMSGUARD_PHONE_FIELD``, ``CONTENT_FIELD``,
        ``CODE_FIELD``, ``TRUSTED_PROXIES``, ``PROXY_HEADER``, ``MAX_BODY``, ``BODY_TIMEOUT``,
        ``REFUND_ON``, ``EXEMPT_NETWORKS``, ``RATE_HEADERS``), each given as a value or a
        string: ``Gate(**Gate.settings(os.environ))``. A value the Gate refuses is a ConfigError
        naming its key (``SMSGUARD_MAX_BODY``, or ``SMSGUARD['MAX_BODY']`` with no prefix)."""
        read = Settings(settings, prefix)
        found: dict[str, Any] = {}
        if "CODE_FIELD" in read and read.string("PHONE_FIELD", "phone") == read.string("CODE_FIELD", "code"):
            raise ConfigError(f"{read.key('PHONE_FIELD')} and {read.key('CODE_FIELD')} name the same field")
        if "PHONE_FIELD" in read:
            found["phone"] = read.string("PHONE_FIELD", "phone")
        if "CONTENT_FIELD" in read:
            found["content"] = read.optional("CONTENT_FIELD")
        if "CODE_FIELD" in read:
            found["code"] = read.string("CODE_FIELD", "code")
        if "TRUSTED_PROXIES" in read:
            found["trusted_proxies"] = read.strings("TRUSTED_PROXIES")
        if "PROXY_HEADER" in read:
            found["proxy_header"] = read.string("PROXY_HEADER", "x-forwarded-for")
        if "MAX_BODY" in read:
            found["max_body"] = read.integer("MAX_BODY", MAX_BODY)
        if "BODY_TIMEOUT" in read:
            found["body_timeout"] = read.number("BODY_TIMEOUT", BODY_TIMEOUT)
        if "REFUND_ON" in read:
            found["refund_on"] = read.integers("REFUND_ON")
        if "EXEMPT_NETWORKS" in read:
            found["exempt_networks"] = read.strings("EXEMPT_NETWORKS")
        if "RATE_HEADERS" in read:
            try:
                found["rate_headers"] = read.boolean("RATE_HEADERS", False)
            except ConfigError:  # a style's name
                found["rate_headers"] = read.string("RATE_HEADERS", "")
        for option, value in found.items():
            with read.about(_SET_BY[option]):
                Gate(**{option: value})  # one refused here names its key
        return found

    # -- the exchange -------------------------------------------------------------------

    def exchange(self, request: Incoming, body: bytes | Marker) -> Exchange:
        """One guarded request, from its body to the reply (see the module docstring)."""
        admitted = yield from self.admit(request, body)
        if isinstance(admitted, Reply):
            return admitted
        try:
            status = yield ("endpoint", admitted)
        except Exception as exc:  # not a cancellation: a client must not win a refund by hanging up
            yield from self.settle(admitted, exc)
            raise
        yield from self.settle(admitted, status)
        return None

    def admit(
        self, request: Incoming, body: bytes | Marker
    ) -> Generator[tuple[Any, ...], Any, Admitted | Reply]:
        """The exchange up to the endpoint: what the endpoint is handed (the allowed Decision,
        the Issued code, the right code's CodeCheck, by ``action``), or the Reply that refuses."""
        if body is UNREADABLE:
            return self.invalid(InvalidInput("the body could not be read: send it whole, in valid chunks"))
        if not isinstance(body, bytes):
            return self.too_large() if body is TOO_LARGE else self.too_slow()
        request = request._replace(body=body)
        arguments = self.arguments(request)
        if isinstance(arguments, Reply):
            return arguments
        try:
            answer = yield from (yield (self.action, arguments))
        except MissingSubject as exc:  # what the adapter gives every request: the server's doing
            return self.misconfigured(exc, request)
        except InvalidInput as exc:
            return self.invalid(exc)
        if self.action == VERIFY:
            return answer if answer.ok else self.code_refusal(answer)
        refusal = self.refusal(answer.decision if self.action == ISSUE else answer)
        return answer if refusal is None else refusal

    def settle(self, admitted: Admitted, ended: int | Exception) -> Flow[None]:
        """The exchange after the endpoint, which ``ended`` with a status or an exception: the
        quota given back when the code was not sent. (A code checked stays spent: giving it
        back would let it be used twice.)"""
        if self.action == VERIFY:
            return
        if isinstance(ended, Exception) or self.refund_on(ended):
            decision = cast("Issued", admitted).decision if self.action == ISSUE else admitted
            yield from (yield ("refund", decision))

    def declared(self, length: str | None) -> int | Marker | None:
        """What a Content-Length header says: the length, TOO_LARGE past ``max_body``, or None
        when absent (or unreadable: the body is then read up to ``max_body``)."""
        if length is None or not length.isdigit():
            return None
        size = int(length)
        return TOO_LARGE if size > self.max_body else size

    # -- request -> guard arguments ------------------------------------------------------

    def arguments(self, request: Incoming) -> dict[str, Any] | Reply:
        """The keyword arguments of the guard's call for ``request`` (``Guard.check``, or
        ``issue_code`` or ``check_code`` by ``action``; ``ip`` as an ``ipaddress`` object, see
        ``client_ip``), or a 400 Reply saying why not."""
        try:
            data, phone, other = self.fields.read(request)
        except InvalidInput as exc:
            return self.invalid(exc)
        if self.action == VERIFY:
            return {"phone": phone, "code": other, "ip": self.proxies.client(request)}
        if self.action == ISSUE:  # the content is the code: the guard's own
            found: dict[str, Any] = {"phone": phone, "ip": self.proxies.client(request)}
            if self.challenge is not None:
                found["challenge_passed"] = self._passed(request._replace(data=data))
            return self._exempt(found, request, data)
        found = {"phone": phone, "content": other, "ip": self.proxies.client(request)}
        if other is None:  # the route: a label to count by, which ContentRules reads as no text
            found["content"] = route = f"{request.method} {request.path}"
            found["context"] = {ROUTE: route}
        if self.challenge is not None:
            found["challenge_passed"] = self._passed(request._replace(data=data))
        return self._exempt(found, request, data)

    def client_ip(self, request: Incoming) -> str | None:
        """The socket peer, unless it is a trusted proxy: then the right-most hop of
        ``proxy_header`` that is not a trusted proxy itself."""
        return self.proxies.client_ip(request)

    def _exempt(self, found: dict[str, Any], request: Incoming, data: Mapping[str, Any]) -> dict[str, Any]:
        """``found``, with ``exempt`` naming what exempts the request, if anything does."""
        if self.exemption:
            name = self.exemption.of(request._replace(data=data), found["ip"])
            if name is not None:
                found["exempt"] = name
        return found

    def rate_headers_of(self, admitted: Admitted) -> list[tuple[str, str]]:
        """The rate headers of an admitted request's response (``rate_headers``; none for a
        code's check)."""
        if self.rate_headers is None or self.action == VERIFY:
            return []
        decision = cast("Issued", admitted).decision if self.action == ISSUE else cast(Decision, admitted)
        return ratelimit.headers(decision, self.rate_headers, self.opaque)

    def _passed(self, request: Incoming) -> bool:
        """Whether ``request`` passed the app's challenge (a failing callable says no)."""
        assert self.challenge is not None
        try:
            return bool(self.challenge(request))
        except Exception as exc:
            log.warning("smsguard: the challenge callable failed on a request: %r", exc)
            return False

    # -- replies ------------------------------------------------------------------------

    def refusal(self, decision: Decision) -> Reply | None:
        """The response for a denied decision, by its kind (429 for a limit or a challenge,
        403 forbidden, 503 unavailable), or None to let the endpoint run."""
        if decision.allowed:
            return None
        wait = None if decision.retry_after is None else max(1, math.ceil(decision.retry_after))
        kind = codes.kind_of(decision)
        policy, reason, limit = decision.policy, decision.reason, decision.limit
        if reason in self.opaque:  # no oracle: which scope, and exactly when, stay with the operator
            policy, reason, limit = None, codes.REFUSED, None
            wait = None if wait is None else -(-wait // codes.COARSE) * codes.COARSE
        if self.render is json_reply:  # it reads nothing but the problem: render each kind once
            return _json_refusal(policy, reason, kind, wait, limit)
        return self.render(_refusal(policy, reason, kind, wait, limit, decision))

    def code_refusal(self, check: CodeCheck) -> Reply:
        """The response for a code ``check`` refused, in the JSON of a send's refusal. No oracle:
        a wrong code, an expired one and none at all are the one 400 ``invalid_code``, the exact
        reason kept in the CodeCheck (``Problem.code_check``), the log and the events. A code
        past its wrong guesses (``check_attempts``: a new one is needed) and a check-side limit
        (``too_many_checks``) are a 429 with their reason, an outage a 503."""
        reason = check.reason or ""
        wait = None if check.retry_after is None else max(1, math.ceil(check.retry_after))
        if reason in UNTOLD:
            status, error, reason, wait = 400, INVALID_CODE, INVALID_CODE, None
        else:
            status, error = _STATUS.get(codes.KIND_OF.get(reason, codes.LIMIT), _STATUS[codes.LIMIT])
        headers = {} if wait is None else {"retry-after": str(wait)}
        body = {"error": error, "policy": None, "reason": reason, "retry_after": wait}
        return self.render(Problem(status, body, headers, code_check=check))

    def invalid(self, exc: InvalidInput) -> Reply:
        """A 400 for input the guard cannot judge (a bad number, a missing field)."""
        return self.render(Problem(400, {"error": "invalid_request", "detail": str(exc)}))

    def too_large(self) -> Reply:
        return self.render(
            Problem(413, {"error": "payload_too_large", "detail": f"the body is over {self.max_body} bytes"})
        )

    def too_slow(self) -> Reply:
        detail = f"the body did not arrive within {self.body_timeout:g} s"
        return self.render(
            Problem(408, {"error": "request_timeout", "detail": detail}, {"connection": "close"})
        )

    def misconfigured(self, exc: MissingSubject, request: Incoming) -> Reply:
        """A 500 for a policy that needs what the server gave no request (a client address): the
        deployment's fault, not the client's. What to change goes to the log, never to the
        client."""
        if exc.subject != "ip":
            log.error("smsguard: %s", exc)
        elif request.peer is None:
            log.error(
                "smsguard: the server gives no client address (a unix socket?) and %s: add 'unix' to "
                "trusted_proxies so that the proxy's %s header is read",
                exc,
                self.proxies.proxy_header,
            )
        else:
            log.error(
                "smsguard: the server gives the peer %r, which is no address, and %s", request.peer, exc
            )
        return self.render(_MISCONFIGURED)

    def not_allowed(self, methods: str) -> Reply:
        """A 405 for a method the routes do not guard, on a path they guard: its endpoint might
        send for it unguarded. ``methods``: the Allow header's value."""
        return self.render(
            Problem(
                405,
                {"error": "method_not_allowed", "detail": f"this path takes {methods}"},
                {"allow": methods},
            )
        )

    def screen(self, request: Incoming) -> Reply | None:
        """The rules of ``request.body`` alone, for an adapter that reads the fields itself
        (FastAPI's model): a 413 past ``max_body``, a 400 for a body that is not exactly one
        thing or gives a watched field twice; None when it passes."""
        if len(request.body) > self.max_body:
            return self.too_large()
        try:
            self.fields.data(request)
        except InvalidInput as exc:
            return self.invalid(exc)
        return None


_MISCONFIGURED: Final = Problem(
    500, {"error": "server_misconfigured", "detail": "the server cannot serve this request"}
)


RouteOptions = str | Mapping[str, Any]
"""What a route of a mapping takes: its ``action`` (``"issue"``), or Gate options of its own
(``{"action": "verify", "code": "otp"}``), and its own ``guard``."""


class Routes:
    """What a middleware guards: ``"POST /sms/send"`` items (any case for the method), or a
    mapping of them to each one's options: an action (``{"POST /sms/send": "issue",
    "POST /sms/verify": "verify"}``) or Gate options (``{"POST /sms/verify": {"action":
    "verify", "code": "otp"}}``). A path they name is guarded for the methods they name with it,
    and refused for the others (an endpoint might send whatever the method). A ConfigError for
    any other shape, since a route that never matches would leave its endpoint silently
    unguarded."""

    __slots__ = ("_allow", "_methods")

    def __init__(self, routes: str | Iterable[str] | Mapping[str, RouteOptions]) -> None:
        if isinstance(routes, str):
            items: list[tuple[Any, RouteOptions]] = [(routes, {})]
        elif isinstance(routes, Mapping):
            items = list(routes.items())
        else:
            items = [(route, {}) for route in routes]
        methods: dict[str, dict[str, Mapping[str, Any]]] = {}
        for route, options in items:
            parts = route.split() if isinstance(route, str) else []
            if len(parts) != 2 or parts[0].upper() not in METHODS or not parts[1].startswith("/"):
                raise ConfigError(f"route {route!r} is not 'METHOD /path', as in 'POST /sms/send'")
            methods.setdefault(parts[1], {})[parts[0].upper()] = _route_options(route, options)
        if not methods:
            raise ConfigError("routes is empty: name the endpoints to guard, as in ['POST /sms/send']")
        self._methods = {path: MappingProxyType(names) for path, names in methods.items()}
        self._allow = {path: ", ".join(sorted(names)) for path, names in methods.items()}

    def methods(self, path: str) -> Mapping[str, Mapping[str, Any]] | None:
        """The methods guarded on ``path``, each with its Gate options (beside the app's), or
        None when it is not guarded."""
        return self._methods.get(path)

    def gates(self, options: Mapping[str, Any]) -> Gates:
        """The Gates of these routes over the app's ``options``, each built now: a bad option
        of a route fails when the app starts. ``Gates.of((method, path), overrides)`` finds
        a route's."""
        gates = Gates(options)
        for path, names in self._methods.items():
            for method, overrides in names.items():
                gates.of((method, path), overrides)
        return gates

    def items(self) -> Iterable[tuple[str, Mapping[str, Mapping[str, Any]]]]:
        """Each guarded path and its methods, each with its options."""
        return self._methods.items()

    def allow(self, path: str) -> str:
        """The Allow header of a guarded ``path``."""
        return self._allow[path]


INVALID_CODE: Final = "invalid_code"
"""What a client is shown for a wrong code, an expired one, and no code at all."""
UNTOLD: Final = frozenset({"wrong_code", "code_expired", "no_code"})
"""The reasons of a refused code that a client is not told apart (semantics 18)."""


def _route_options(route: str, options: RouteOptions) -> Mapping[str, Any]:
    if isinstance(options, str):
        options = {"action": options}
    if not isinstance(options, Mapping):
        raise ConfigError(
            f"route {route!r}: give an action ('issue', 'verify') or a dict of options, not {options!r}"
        )
    check_options(gate_options(options))
    return dict(options)


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
        name = sf_string(policy)
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
