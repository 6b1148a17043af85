"""Flask: the ``SMSGuard`` extension and its ``protect`` decorator.

Follows Flask-Limiter's conventions: ``SMSGuard(app)`` or ``ext.init_app(app)`` later,
settings from ``app.config["SMSGUARD_..."]``, a decorator on the view to guard::

    sms = SMSGuard(app)              # a guard built from SMSGUARD_* config (see Guard.from_settings)

    @app.post("/sms/send")
    @sms.protect()                   # or @sms.protect(phone="mobile", content="template")
    def send_code(): ...

``protect`` also works without the extension: ``@protect(guard)``. The view finds the
decision in ``flask.g.smsguard``: its ``phone`` is the number already validated, in E.164
(while ``SMSGUARD_ENABLED`` is false, the number is still validated, and nothing counted).
``@sms.protect(guard=strict)`` guards a view with a Guard of its own (other policies).
A refusal is raised as ``Refused``, a werkzeug ``HTTPException`` of its status, so that
``@app.errorhandler(429)`` reaches it; unhandled, it is the JSON reply. (Where the app has no
handler that would take it, nor traps HTTP exceptions, the view returns that reply instead of
raising: the response is the same, at half the cost of a denial.)
``@sms.protect(action="issue")`` issues the code as well (``g.smsguard`` is the ``Issued``:
text ``.code`` to ``.decision.phone``), and ``@sms.protect(action="verify")`` guards the view
that checks it (``g.smsguard`` is the right code's ``CodeCheck``; a refused code never reaches
the view). See ``smsguard.adapters.http.Gate``.

The rules of the request live in the Gate's exchange (``smsguard.adapters.http``); this module
is its WSGI I/O. The body is read here from ``wsgi.input`` (chunked ones too, up to
``max_body``), then handed back to the view as a plain body of known length.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from flask import Flask, Request, Response, current_app, g, request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, default_exceptions

from smsguard import checks
from smsguard.adapters.http import (
    TOO_LARGE,
    UNREADABLE,
    Admitted,
    Gate,
    Gates,
    Incoming,
    Marker,
    Reply,
    check_options,
    exchange_io,
)
from smsguard.drive import drive
from smsguard.errors import ConfigError
from smsguard.guard import Guard
from smsguard.lifecycle import serve
from smsguard.review import HEADERS as REVIEW_HEADERS
from smsguard.review import serve as serve_review
from smsguard.settings import Settings

View = TypeVar("View", bound=Callable[..., Any])


class SMSGuard:
    """The Flask extension. ``guard`` overrides the one built from ``SMSGUARD_*`` config;
    ``gate_options`` override the ``SMSGUARD_*`` request settings (see ``Gate.settings``)."""

    def __init__(self, app: Flask | None = None, *, guard: Guard | None = None, **gate_options: Any) -> None:
        check_options(gate_options)
        self._guard, self._options = guard, gate_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        config = app.config
        guard = self._guard or Guard.from_settings(config)
        options = {**Gate.settings(config), **self._options}
        enabled = Settings(config).boolean("ENABLED", True)
        app.extensions["smsguard"] = _State(guard, options, enabled)
        serve(guard)  # statistics on a timer, and written at the worker's exit
        gate = Gate(**options)  # what is unsafe in this set-up, in the log (smsguard.checks)
        checks.at_start(guard, production=not app.debug, trusted_proxies=gate.proxies.any)
        from smsguard.cli import commands

        app.cli.add_command(commands(lambda _: guard, config=False))  # flask smsguard status ...

    @property
    def guard(self) -> Guard:
        """The guard of the current app."""
        return _state().guard

    def protect(self, *, guard: Guard | None = None, **overrides: Any) -> Callable[[View], View]:
        """Guard a view; ``overrides`` change Gate options (``phone``, ``content``, ``action``,
        ``code``...) for it. They are checked here, when the view is decorated. ``guard``: this
        view's own Guard (another set of policies) instead of the app's."""
        check_options(overrides)
        Gate(**overrides)  # a bad value fails now, not on the first request
        if guard is not None:
            serve(guard)

        def decorate(view: View) -> View:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                state = _state()
                return _guarded_call(
                    guard or state.guard, state.gates.of(view, overrides), view, args, kwargs, state.enabled
                )

            return cast(View, guarded)

        return decorate


def protect(guard: Guard, **gate_options: Any) -> Callable[[View], View]:
    """Guard a view with ``guard``, without the extension."""
    check_options(gate_options)
    gate = Gate(**gate_options)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return _guarded_call(guard, gate, view, args, kwargs, True)

        return cast(View, guarded)

    return decorate


class Refused(HTTPException):
    """What a guarded view raises instead of running: a refusal (429, 403, 503), or a 400, 408,
    413 or 500 of the Gate, as a werkzeug ``HTTPException`` of its status (a 429 is a
    ``TooManyRequests``), so that ``@app.errorhandler(429)`` (or ``errorhandler(Refused)``)
    reaches it, as it reaches Flask-Limiter's. Unhandled, it renders as the Gate's reply
    (``reply``: its status, headers and JSON body, also in ``response``). Where no handler of
    the app (or of the request's blueprints) would take it and HTTP exceptions are not trapped
    (``TRAP_HTTP_EXCEPTIONS``, ``TRAP_BAD_REQUEST_ERRORS``), the view returns that reply as its
    response instead of raising: what the client gets is the same, and a denial costs half."""

    reply: Reply

    def __init__(self, reply: Reply) -> None:
        super().__init__(
            reply.body.decode("utf-8", "replace"),
            Response(reply.body, status=reply.status, headers=reply.headers),
        )
        self.reply = reply


_refused: dict[int, type[Refused]] = {}


def refused(reply: Reply) -> Refused:
    """The ``Refused`` of ``reply``'s status: a subclass of werkzeug's exception for it too."""
    return _refused_kind(reply.status)(reply)


def _refused_kind(status: int) -> type[Refused]:
    kind = _refused.get(status)
    if kind is None:
        base = default_exceptions.get(status, HTTPException)
        name = f"Refused{base.__name__}" if base is not HTTPException else f"Refused{status}"
        kind = _refused[status] = type(name, (Refused, base), {"code": status})
    return kind


class _State:
    def __init__(self, guard: Guard, options: dict[str, Any], enabled: bool) -> None:
        self.guard, self.gates, self.enabled = guard, Gates(options), enabled


def _state() -> _State:
    state = current_app.extensions.get("smsguard")
    if state is None:
        raise ConfigError("SMSGuard is not initialised on this app: call SMSGuard(app) or init_app(app)")
    return cast(_State, state)


def _guarded_call(
    guard: Guard, gate: Gate, view: Callable[..., Any], args: Any, kwargs: Any, enabled: bool
) -> Any:
    # The request and app behind Flask's proxies, looked up once rather than per attribute.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    request_ = Incoming(
        req.method,
        req.path,
        _Headers(req.headers),
        environ.get("QUERY_STRING", ""),  # what req.query_string encodes
        b"",
        environ.get("REMOTE_ADDR") or None,  # empty or absent on a unix socket
    )
    response: Response | None = None

    def endpoint(admitted: Admitted) -> int:
        nonlocal response
        g.smsguard = admitted
        response = app.make_response(app.ensure_sync(view)(*args, **kwargs))
        for name, value in gate.rate_headers_of(admitted):
            response.headers[name] = value
        return response.status_code

    reply = drive(gate.exchange(request_, _read_body(req, gate)), exchange_io(guard, endpoint, enabled))
    if reply is None:
        return response
    kind = _refused_kind(reply.status)
    if _observed(app, kind, req.blueprints):
        raise kind(reply)
    # No handler of the app's would see it: the reply Flask would render, without running the
    # exception as a WSGI app through its handler lookup (twice the cost of a denial).
    return app.response_class(reply.body, reply.status, reply.headers)


def _observed(app: Flask, kind: type[Refused], blueprints: list[str]) -> bool:
    """Whether the app would do anything with a raised ``kind`` but render it: an error handler
    for its status or one of its classes (the app's, or a blueprint's of this request, as
    Flask's ``_find_error_handler`` looks them up), trapped HTTP exceptions, or an app class
    that handles exceptions its own way."""
    config = app.config
    if config["TRAP_HTTP_EXCEPTIONS"] or config["TRAP_BAD_REQUEST_ERRORS"]:
        return True
    cls = type(app)
    if cls.handle_user_exception is not Flask.handle_user_exception or (
        cls.handle_http_exception is not Flask.handle_http_exception
    ):
        return True
    spec = app.error_handler_spec
    for code in (kind.code, None):
        for name in (*blueprints, None):
            handlers = spec.get(name, {}).get(code)
            if handlers and any(c in handlers for c in kind.__mro__):
                return True
    return False


def _read_body(req: Request, gate: Gate) -> bytes | Marker:
    """The body, read from ``wsgi.input`` up to ``max_body`` (TOO_LARGE past it, UNREADABLE if
    the server fails reading it), and put back as a plain body of known length so that the view
    reads it as usual.

    werkzeug stops at ``max_content_length`` without an error for a chunked body, so the limit
    is kept here: a chunked body is read to its end or to one byte past the limit.
    """
    environ = req.environ
    if "stream" in req.__dict__ or "_cached_data" in req.__dict__:  # already read (a before_request hook)
        req.max_content_length = gate.max_body
        data = req.get_data(cache=True)
        return TOO_LARGE if len(data) > gate.max_body else data
    declared = gate.declared(environ.get("CONTENT_LENGTH") or None)
    if declared is TOO_LARGE:
        return TOO_LARGE
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if declared is None and not chunked:
        return b""  # no length and no chunks: HTTP says there is no body (RFC 9112, 6.3)
    stream = environ["wsgi.input"]
    if chunked and not environ.get("wsgi.input_terminated"):
        return b""  # the server cannot tell where a chunked body ends: neither can the view
    try:  # a malformed chunk is the server's exception (gunicorn's InvalidChunkSize), not a 500
        body = _read_upto(stream, gate.max_body + 1 if chunked else cast(int, declared))
    except Exception:
        return UNREADABLE
    if len(body) > gate.max_body:
        return TOO_LARGE
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False
    return body


def _read_upto(stream: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``stream``, fewer if it ends first."""
    parts, size = [], 0
    while size < limit:
        part = stream.read(min(limit - size, 65536))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


class _Headers(Mapping[str, str]):
    """werkzeug's request headers as a Mapping (iterating them yields pairs, not names)."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return self._headers[name]  # any case; the WSGI server joins a repeated header

    def __iter__(self) -> Iterator[str]:
        return (name.lower() for name, _ in self._headers)

    def __len__(self) -> int:
        return len(self._headers)


def review_view(guard: Guard | None = None) -> Callable[[], Response]:
    """A view that serves the daily review page (``smsguard.review``) of ``guard`` (default:
    the extension's): ``?day=YYYY-MM-DD`` for a day other than today. It has no access control
    of its own: mount it behind the app's, as in
    ``app.add_url_rule("/ops/sms-review", view_func=login_required(review_view()))``."""

    def sms_review() -> Response:
        served = serve_review(guard or _state().guard, request.args)
        return Response(served.body, served.status, REVIEW_HEADERS, content_type=served.content_type)

    return sms_review
