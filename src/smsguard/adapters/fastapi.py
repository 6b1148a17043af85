"""FastAPI: a dependency that judges the attempt after FastAPI has validated the request.

    sms = SMSGuard(app, guard=guard)       # or SMSGuard(app): a guard from SMSGUARD_* variables

    class SendCode(BaseModel):
        phone: str
        template: str = "login"

    @app.post("/sms/send")
    async def send_code(body: SendCode, decision: Decision = Depends(sms.protect(SendCode))):
        ...                                # decision.phone: the number, validated, in E.164

``protect(SendCode)`` declares the same ``body: SendCode`` parameter as the endpoint, so FastAPI
parses and validates the body once, and a body it rejects (its 422) never reaches the guard:
nothing is counted for it. The number comes from the model's ``phone`` field (``phone=`` names
another, or takes a callable given the model); ``content=`` likewise, else the route counts as
the content. Without a model, ``protect(param="phone", source=Query())`` judges a parameter.
On a router: ``APIRouter(dependencies=[Depends(sms.protect(SendCode))])``, the decision then in
``request.state.smsguard``.

The responses are the middleware's (a 400 for a bad number, 429/403/503 by kind, with the same
JSON and headers): ``SMSGuard(app)`` installs the handler that renders them. An exception from
the endpoint gives the quota back (an ``HTTPException`` if its status is one of ``refund_on``),
as the middleware does. A dependency does not see a ``Response`` the endpoint returns: raise
``HTTPException`` to say the code was not sent. Only ``acheck``: the loop never blocks.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response

from smsguard.adapters.asgi import Headers
from smsguard.adapters.http import Gate, Incoming, Reply, aexchange_io, check_options
from smsguard.attempt import Decision
from smsguard.drive import adrive
from smsguard.guard import Guard

Source = str | Callable[[Any], Any] | None


class Refused(Exception):
    """Raised by the dependency with the reply to send: a refusal or a 400."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


async def _render(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)  # the handler is installed for Refused alone
    reply = exc.reply
    return Response(reply.body, status_code=reply.status, headers=dict(reply.headers))


class SMSGuard:
    """The guard of a FastAPI app and its dependencies. ``guard`` defaults to one built from the
    ``SMSGUARD_*`` environment (``Guard.from_settings``); ``options`` are the Gate's
    (``trusted_proxies``, ``refund_on``, ``render``, ``challenge``...), for every dependency."""

    def __init__(self, app: FastAPI | None = None, *, guard: Guard | None = None, **options: Any) -> None:
        check_options(options)
        if guard is None:
            guard = Guard.from_settings(os.environ)
        self.guard, self.options = guard, {**Gate.settings(os.environ), **options}
        Gate(**self.options)  # a bad value fails now
        if app is not None:
            self.init_app(app)

    def init_app(self, app: FastAPI) -> None:
        """Install the handler that renders the guard's refusals."""
        app.add_exception_handler(Refused, _render)

    def protect(
        self,
        model: type[Any] | None = None,
        *,
        param: str = "body",
        source: Any = inspect.Parameter.empty,
        phone: Source = "phone",
        content: Source = None,
        **overrides: Any,
    ) -> Callable[..., AsyncIterator[Decision]]:
        """A dependency that judges the attempt in the validated ``param`` (``model``, a
        pydantic model of the body, or with no model the value itself, a string: ``source``
        says where it is, ``Query()`` by FastAPI's default) and yields the decision."""
        check_options(overrides)
        gate = Gate(
            **{**self.options, **overrides, "phone": "phone", "content": "content" if content else None}
        )
        guard = self.guard
        pick_phone = _picker(phone if model is not None else None)
        pick_content = _picker(content) if content else None
        aio = aexchange_io(guard, None)  # the endpoint runs between admit and settle

        async def dependency(request: Request, **values: Any) -> AsyncIterator[Decision]:
            value = values[param]
            data = {"phone": pick_phone(value)}
            if pick_content is not None:
                data["content"] = pick_content(value)
            scope = request.scope
            client = scope.get("client")
            incoming = Incoming(
                scope["method"],
                scope["path"],  # not request.url, which parses a URL it rebuilds
                Headers(scope["headers"]),
                scope.get("query_string", b"").decode("latin-1"),
                b"",
                client[0] if client else None,
                data,
            )
            admitted = await adrive(gate.admit(incoming, b""), aio)
            if not isinstance(admitted, Decision):
                raise Refused(admitted)
            request.state.smsguard = admitted
            try:
                yield admitted
            except HTTPException as exc:
                await adrive(gate.settle(admitted, exc.status_code), aio)
                raise
            except Exception as exc:
                await adrive(gate.settle(admitted, exc), aio)
                raise
            await adrive(gate.settle(admitted, 200), aio)

        annotation = model if model is not None else str
        dependency.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
                inspect.Parameter(
                    param, inspect.Parameter.KEYWORD_ONLY, default=source, annotation=annotation
                ),
            ]
        )
        return dependency


def _picker(source: Source) -> Callable[[Any], Any]:
    if source is None:
        return lambda value: value
    if callable(source):
        return source
    return lambda value: value.get(source) if isinstance(value, Mapping) else getattr(value, source, None)
