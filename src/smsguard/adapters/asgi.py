"""Pure ASGI middleware for Starlette, FastAPI or any ASGI app.

Shaped like Starlette's own middleware: plain config in ``__init__``; ``__call__`` passes
other routes and non-HTTP scopes straight through, and drives the Gate's exchange for a guarded
one: the body read once (up to ``max_body``, within ``body_timeout``), then replayed to the app.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from typing import Any

from smsguard import checks
from smsguard.adapters.http import (
    GUARD,
    TOO_LARGE,
    TOO_SLOW,
    Gate,
    Incoming,
    Reply,
    RouteOptions,
    Routes,
    aexchange_io,
    check_options,
)
from smsguard.drive import adrive
from smsguard.errors import ConfigError
from smsguard.guard import Guard
from smsguard.lifecycle import astop, serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SMSGuardMiddleware:
    """Guards ``routes`` (``"POST /sms/send"``) of an ASGI app with ``guard``.

    ``options`` configure the Gate: ``phone``, ``content``, ``trusted_proxies``,
    ``proxy_header``, ``max_body``, ``body_timeout``, ``refund_on``, ``render``, ``challenge``,
    ``action``, ``code`` (see ``smsguard.adapters.http.Gate``). ``routes`` may map each route
    to its action or options of its own: ``{"POST /sms/send": "issue", "POST /sms/verify":
    "verify"}`` issues the code on one and checks it on the other, and ``{"POST /sms/send":
    {"guard": strict}}`` judges a route with a Guard of its own. A route is matched below the
    app's mount point (``root_path``), so a guarded app mounted under ``/api`` guards
    ``/api/sms/send``. Another method on a guarded path gets a 405 (see
    ``smsguard.adapters.http.Routes``).

    The endpoint finds what its route's action hands it in ``request.state.smsguard``
    (``scope["state"]``): the Decision, whose ``phone`` is the number already validated and in
    E.164, so the endpoint need not parse it again; the ``Issued`` code; or the ``CodeCheck``
    of a right code.
    """

    def __init__(
        self,
        app: ASGIApp | None = None,
        /,
        *,
        guard: Guard,
        routes: str | Iterable[str] | Mapping[str, RouteOptions] = ("POST /sms/send",),
        **options: Any,
    ) -> None:
        if app is None:  # by keyword, as Litestar's DefineMiddleware passes it
            app = options.pop("app", None)
            if app is None:
                raise TypeError("SMSGuardMiddleware needs the ASGI app it wraps")
        check_options(options)
        self.app, self.guard = app, guard
        self.routes = Routes(routes)
        self.gates = self.routes.gates(options)
        self._watchdog: Watchdog | None = None  # of the loop this middleware serves (one, in practice)
        self._guards = _guards(guard, self.routes)
        for served in self._guards:
            serve(served)
        # What is unsafe in this set-up, in the log (smsguard.checks); what asks the backend, at
        # the lifespan's startup, off the loop (Starlette builds its middleware on the loop).
        self._trusts = self.gates.default.proxies.any
        checks.at_start(guard, trusted_proxies=self._trusts, backend=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope) if scope["type"] == "http" else None
        if route is None:
            if scope["type"] == "lifespan":
                send = _lifespan(send, self._guards, self._trusts)
            await self.app(scope, receive, send)
            return
        path, methods = route
        method = scope["method"]
        if method not in methods:
            await _respond(send, self.gates.default.not_allowed(self.routes.allow(path)))
            return
        overrides = methods[method]
        gate = self.gates.of((method, path), overrides)
        guard = overrides.get(GUARD) or self.guard
        client = scope.get("client")
        body, app_receive = await self._read_body(gate, scope, receive)
        request = Incoming(
            scope["method"],
            scope["path"],
            Headers(scope["headers"]),
            scope.get("query_string", b"").decode("latin-1"),
            b"",
            client[0] if client else None,
        )
        reply = await adrive(
            gate.exchange(request, body),
            aexchange_io(guard, lambda admitted: self._endpoint(gate, scope, app_receive, send, admitted)),
        )
        if reply is not None:
            await _respond(send, reply)

    def _route(self, scope: Scope) -> tuple[str, Mapping[str, Mapping[str, Any]]] | None:
        """The guarded path ``scope`` is on and its guarded methods, or None."""
        path: str = scope["path"]
        methods = self.routes.methods(path)
        if methods is None:
            # Mounted below a prefix: Starlette keeps the full path in "path", the prefix in "root_path".
            root: str = scope.get("root_path", "")
            if not (root and path.startswith(root)):
                return None
            path = path[len(root) :]
            methods = self.routes.methods(path)
            if methods is None:
                return None
        return path, methods

    async def _endpoint(self, gate: Gate, scope: Scope, receive: Receive, send: Send, admitted: Any) -> int:
        scope.setdefault("state", {})["smsguard"] = admitted
        status = 0
        extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in gate.rate_headers_of(admitted)]

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, watch)
        return status

    async def _read_body(self, gate: Gate, scope: Scope, receive: Receive) -> tuple[Any, Receive]:
        """The whole body (TOO_LARGE past ``max_body``, checked against Content-Length first;
        TOO_SLOW past ``body_timeout``), and the receive to hand the app: one that replays the
        body if it was read."""
        # What the server delivers is read whatever the headers say: a request without length
        # or chunks has an empty body under an HTTP/1 server, but an in-process client (Quart's
        # test client) delivers one all the same, and the app would read what the guard did not.
        for name, value in scope["headers"]:
            if name == b"content-length" and gate.declared(value.decode("latin-1")) is TOO_LARGE:
                return TOO_LARGE, receive
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        watchdog = self._watchdog
        if watchdog is None or watchdog.loop is not loop:
            watchdog = self._watchdog = Watchdog(loop, gate.body_timeout)
        watchdog.due[task] = loop.time() + gate.body_timeout
        if watchdog.running is None:
            watchdog.start()
        chunks, size = [], 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break  # the client went away; judge what arrived
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > gate.max_body:
                    return TOO_LARGE, receive
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if task not in watchdog.expired:
                raise  # a cancellation of the request itself
            watchdog.expired.discard(task)
            if sys.version_info >= (3, 11):
                task.uncancel()
            return TOO_SLOW, receive
        finally:
            watchdog.due.pop(task, None)
        body = b"".join(chunks)
        return body, _replay(body, receive)


def _guards(guard: Guard, routes: Routes) -> list[Guard]:
    """The middleware's guard and its routes' own (a ConfigError for a ``guard`` that is none)."""
    found = [guard]
    for path, methods in routes.items():
        for method, options in methods.items():
            own = options.get(GUARD)
            if own is None:
                continue
            if not isinstance(own, Guard):
                raise ConfigError(f"route '{method} {path}': guard must be a Guard, not {type(own).__name__}")
            if own not in found:
                found.append(own)
    return found


def _lifespan(send: Send, guards: Sequence[Guard], trusts: bool) -> Send:
    """``send`` for the app's lifespan: the guards served once it has started (and the first's
    backend checked, off the loop), their statistics written before the server hears that the
    app has shut down."""

    async def lifespan_send(message: Message) -> None:
        kind = message["type"]
        if kind.startswith("lifespan.shutdown."):
            for guard in guards:
                await astop(guard)
        elif kind == "lifespan.startup.complete":
            for guard in guards:
                serve(guard)  # again, after a shutdown (a test client's second run)
            await asyncio.to_thread(functools.partial(checks.at_start, guards[0], trusted_proxies=trusts))
        await send(message)

    return lifespan_send


class Lifespan:
    """Answers the ASGI lifespan protocol for an app that does not (Django's): ``guard`` (or
    a callable that returns it) is served from startup and its statistics written at shutdown,
    as ``SMSGuardMiddleware`` does for an app with a lifespan of its own. Other scopes go to
    ``app``. A guard that cannot be built fails the startup, with the reason."""

    def __init__(self, app: ASGIApp, /, *, guard: Guard | Callable[[], Guard]) -> None:
        self.app = app
        self._guard = guard if callable(guard) else lambda: guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    serve(self._guard())
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": f"smsguard: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await astop(self._guard())
                await send({"type": "lifespan.shutdown.complete"})
                return


class Watchdog:
    """Ends body reads past their deadline: one task per event loop that wakes a few times per
    timeout, rather than a timer per request (which would cost more than the guard's decision).

    A read registers its task and deadline; the watchdog cancels a task found past it and notes
    it in ``expired``, so the read can tell its own timeout from any other cancellation.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop, self.interval = loop, min(1.0, timeout / 4)
        self.due: dict[asyncio.Task[Any], float] = {}
        """The reads being watched: their task and deadline (the loop's clock)."""
        self.expired: set[asyncio.Task[Any]] = set()
        self.running: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.running = self.loop.create_task(self._run())

    async def _run(self) -> None:
        loop = self.loop
        while True:
            await asyncio.sleep(self.interval)
            if not self.due:  # idle for a whole interval: stop until the next read
                self.running = None
                return
            now = loop.time()
            for task, deadline in list(self.due.items()):
                if deadline <= now:
                    del self.due[task]
                    self.expired.add(task)
                    task.cancel()


class Headers(Mapping[str, str]):
    """An ASGI header list as a read-only mapping, decoded only where looked up.

    Names are looked up in any case (ASGI servers deliver them in lower case); a header sent
    several times reads as its values joined by ", " (RFC 9110, 5.3).
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def __getitem__(self, name: str) -> str:
        try:
            key = name.lower().encode("latin-1")
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
