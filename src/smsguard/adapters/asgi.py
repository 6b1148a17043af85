"""Pure ASGI middleware for Starlette, FastAPI or any ASGI app.

Shaped like Starlette's own middleware: plain config in ``__init__``; ``__call__`` passes
other routes and non-HTTP scopes straight through, reads a guarded request's body once (up to
``max_body``), decides, and either answers itself or calls the app with the body replayed.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from smsguard.adapters.http import Gate, Incoming, Reply
from smsguard.errors import InvalidInput
from smsguard.guard import Guard

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SMSGuardMiddleware:
    """Guards ``routes`` (``"POST /sms/send"``) of an ASGI app with ``guard``.

    ``options`` configure the Gate: ``phone``, ``content``, ``trusted_proxies``, ``max_body``,
    ``refund_on``, ``render`` (see ``smsguard.adapters.http.Gate``).

    The endpoint finds the decision in ``request.state.smsguard`` (``scope["state"]``): its
    ``phone`` is the number already validated and in E.164, so the endpoint need not parse it
    again.
    """

    def __init__(
        self, app: ASGIApp, /, *, guard: Guard, routes: Iterable[str] = ("POST /sms/send",), **options: Any
    ) -> None:
        self.app, self.guard, self.gate = app, guard, Gate(**options)
        self.routes = {tuple(route.split(None, 1)) for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) not in self.routes:
            await self.app(scope, receive, send)
            return
        body, app_receive = await self._read_body(scope, receive)
        if body is None:
            await _respond(send, self.gate.too_large())
            return
        client = scope.get("client")
        request = Incoming(
            scope["method"],
            scope["path"],
            Headers(scope["headers"]),
            scope.get("query_string", b"").decode("latin-1"),
            body,
            client[0] if client else None,
        )
        arguments = self.gate.arguments(request)
        if isinstance(arguments, Reply):
            await _respond(send, arguments)
            return
        try:
            decision = await self.guard.acheck(**arguments)
        except InvalidInput as exc:
            await _respond(send, self.gate.invalid(exc))
            return
        refusal = self.gate.refusal(decision)
        if refusal is not None:
            await _respond(send, refusal)
            return

        scope.setdefault("state", {})["smsguard"] = decision
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, app_receive, watch)
        except Exception:  # not a cancellation: a client must not win a refund by hanging up
            await self.guard.arefund(decision)  # the endpoint failed: the code was not sent
            raise
        if self.gate.refund_on(status):
            await self.guard.arefund(decision)

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, Receive]:
        """The whole body (None past ``max_body``, checked against Content-Length first), and
        the receive to hand the app: one that replays the body if it was read."""
        limit = self.gate.max_body
        framed = False  # the request announces a body
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    return None, receive
                framed = framed or value != b"0"
            elif name == b"transfer-encoding":
                framed = True
        if not framed and scope.get("http_version", "1.0") in ("1.0", "1.1"):  # ASGI: absent is 1.0
            return b"", receive  # no length and no chunks: HTTP/1 says there is no body (RFC 9112, 6.3)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away; judge what arrived
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None, receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        return body, _replay(body, receive)


class Headers(Mapping[str, str]):
    """An ASGI header list as a read-only mapping, decoded only where looked up.

    Names are looked up in lower case, as ASGI servers deliver them; a header sent several
    times reads as its values joined by ", " (RFC 9110, 5.3).
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        try:
            key = name.encode("latin-1")
        except UnicodeEncodeError:
            raise KeyError(name) from None
        values = [value for k, value in self._raw if k == key]
        if not values:
            raise KeyError(name)
        return b", ".join(values).decode("latin-1")

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k.decode("latin-1") for k, _ in self._raw))

    def __len__(self) -> int:
        return len({k for k, _ in self._raw})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body once, then the client's later messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(send: Send, reply: Reply) -> None:
    head = reply.headers
    if isinstance(head, tuple):  # the default rendering's, repeated under a flood: encode once
        headers = list(_encode(head, len(reply.body)))  # a fresh list: outer middleware may add to it
    else:
        headers = list(_encode.__wrapped__(head, len(reply.body)))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


@functools.lru_cache(maxsize=1024)
def _encode(headers: Sequence[tuple[str, str]], length: int) -> tuple[tuple[bytes, bytes], ...]:
    """Reply headers as ASGI wants them, with the Content-Length."""
    return (
        *[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        (b"content-length", b"%d" % length),
    )
