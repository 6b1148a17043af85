"""Flask: the ``SMSGuard`` extension and its ``protect`` decorator.

Follows Flask-Limiter's conventions: ``SMSGuard(app)`` or ``ext.init_app(app)`` later,
settings from ``app.config["SMSGUARD_..."]``, a decorator on the view to guard::

    sms = SMSGuard(app)              # a guard built from SMSGUARD_* config (see Guard.from_settings)

    @app.post("/sms/send")
    @sms.protect()                   # or @sms.protect(phone="mobile", content="template")
    def send_code(): ...

``protect`` also works without the extension: ``@protect(guard)``. The view finds the
decision in ``flask.g.smsguard``: its ``phone`` is the number already validated, in E.164
(absent while ``SMSGUARD_ENABLED`` is False).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from flask import Flask, Request, Response, current_app, g, request
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge

from smsguard.adapters.http import Gate, Incoming, Reply
from smsguard.errors import ConfigError, InvalidInput
from smsguard.guard import Guard

View = TypeVar("View", bound=Callable[..., Any])

# Gate options and the SMSGUARD_* keys they are read from.
GATE_SETTINGS = {
    "phone": "PHONE_FIELD",
    "content": "CONTENT_FIELD",
    "trusted_proxies": "TRUSTED_PROXIES",
    "max_body": "MAX_BODY",
    "refund_on": "REFUND_ON",
}


class SMSGuard:
    """The Flask extension. ``guard`` overrides the one built from ``SMSGUARD_*`` config."""

    def __init__(self, app: Flask | None = None, *, guard: Guard | None = None, **gate_options: Any) -> None:
        self._guard, self._options = guard, gate_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        config = app.config
        guard = self._guard or Guard.from_settings(config)
        options = {
            option: config[f"SMSGUARD_{key}"]
            for option, key in GATE_SETTINGS.items()
            if f"SMSGUARD_{key}" in config
        }
        app.extensions["smsguard"] = _State(
            guard, {**options, **self._options}, config.get("SMSGUARD_ENABLED", True)
        )

    @property
    def guard(self) -> Guard:
        """The guard of the current app."""
        return _state().guard

    def protect(self, **overrides: Any) -> Callable[[View], View]:
        """Guard a view; ``overrides`` change Gate options (``phone``, ``content``...) for it."""

        def decorate(view: View) -> View:
            @functools.wraps(view)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                state = _state()
                if not state.enabled:
                    return current_app.ensure_sync(view)(*args, **kwargs)
                return _guarded_call(state.guard, state.gate(overrides), view, args, kwargs)

            return cast(View, guarded)

        return decorate


def protect(guard: Guard, **gate_options: Any) -> Callable[[View], View]:
    """Guard a view with ``guard``, without the extension."""
    gate = Gate(**gate_options)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return _guarded_call(guard, gate, view, args, kwargs)

        return cast(View, guarded)

    return decorate


class _State:
    def __init__(self, guard: Guard, options: dict[str, Any], enabled: bool) -> None:
        self.guard, self.options, self.enabled = guard, options, enabled
        self._default = Gate(**options)

    def gate(self, overrides: dict[str, Any]) -> Gate:
        return Gate(**{**self.options, **overrides}) if overrides else self._default


def _state() -> _State:
    state = current_app.extensions.get("smsguard")
    if state is None:
        raise ConfigError("SMSGuard is not initialised on this app: call SMSGuard(app) or init_app(app)")
    return cast(_State, state)


def _guarded_call(guard: Guard, gate: Gate, view: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    # The request and app behind Flask's proxies, looked up once rather than per attribute.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    if environ.get("CONTENT_LENGTH", "") in ("", "0") and "HTTP_TRANSFER_ENCODING" not in environ:
        body = b""  # no length and no chunks: HTTP says there is no body (RFC 9112, 6.3)
    else:
        req.max_content_length = gate.max_body
        try:
            body = req.get_data(cache=True)  # cached: the view reads it again as usual
        except RequestEntityTooLarge:
            return _response(gate.too_large())
    incoming = Incoming(
        req.method,
        req.path,
        _Headers(req.headers),
        environ.get("QUERY_STRING", ""),  # what req.query_string encodes
        body,
        req.remote_addr,
    )
    arguments = gate.arguments(incoming)
    if isinstance(arguments, Reply):
        return _response(arguments)
    try:
        decision = guard.check(**arguments)
    except InvalidInput as exc:
        return _response(gate.invalid(exc))
    refusal = gate.refusal(decision)
    if refusal is not None:
        return _response(refusal)
    g.smsguard = decision
    try:
        response = app.make_response(app.ensure_sync(view)(*args, **kwargs))
    except Exception:  # not SystemExit and the like: those say nothing of the SMS
        guard.refund(decision)  # the endpoint failed: the code was not sent
        raise
    if gate.refund_on(response.status_code):
        guard.refund(decision)
    return response


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


def _response(reply: Reply) -> Response:
    return Response(reply.body, status=reply.status, headers=reply.headers)
