"""FastAPI: a dependency that judges the attempt after FastAPI has validated the request.

    sms = SMSGuard(app, guard=guard)       # or SMSGuard(app): a guard from SMSGUARD_* variables

    class SendCode(BaseModel):
        phone: str
        template: str = "login"

    @app.post("/sms/send")
    async def send_code(body: SendCode, decision: Decision = Depends(sms.protect(SendCode))):
        ...                                # decision.phone: the number, validated, in E.164

``protect(SendCode)`` takes the body the endpoint's ``body`` parameter takes (FastAPI parses it
once) and validates it with the model itself: a body the model rejects gets FastAPI's own 422,
each error listed once, and nothing is counted for it. The raw body is then held to the
middleware's rules: ``max_body`` (413), and the phone and content fields given once (400). The
number comes from the model's ``phone`` field
(``phone=`` names another, or takes a callable given the model); ``content=`` likewise, else
the route counts as the content. Without a model, ``protect(param="phone", source=Query())``
judges a parameter. On a router: ``APIRouter(dependencies=[Depends(sms.protect(SendCode))])``,
the decision then in ``request.state.smsguard``.

``protect(SendCode, action="issue")`` issues the code as well and yields the ``Issued`` (text
``.code`` to ``.decision.phone``); ``protect(Verify, action="verify")`` checks the model's
``code`` field (``code=`` names another, or takes a callable given the model) and yields the
right code's ``CodeCheck``: a refused code never reaches the endpoint (see
``smsguard.adapters.http.Gate``).

The responses are the middleware's (a 400 for a bad number, 429/403/503 by kind, with the same
JSON and headers): ``SMSGuard(app)`` installs the handler that renders them. An exception from
the endpoint gives the quota back (an ``HTTPException`` if its status is one of ``refund_on``),
as the middleware does. A dependency does not see a ``Response`` the endpoint returns: raise
``HTTPException`` to say the code was not sent. ``rate_headers`` go on the response FastAPI
builds from what the endpoint returns (FastAPI adds a dependency's headers to it, not to a
``Response`` the endpoint returns itself). ``protect(SendCode, guard=strict)`` judges a route
with a Guard of its own. Only ``acheck``: the loop never blocks.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastapi import Body, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from smsguard import checks
from smsguard.adapters.asgi import Headers
from smsguard.adapters.http import (
    CHECK,
    TOO_LARGE,
    VERIFY,
    Field,
    Gate,
    Incoming,
    Reply,
    aexchange_io,
    check_options,
)
from smsguard.drive import adrive
from smsguard.errors import ConfigError
from smsguard.guard import Guard
from smsguard.lifecycle import astop, serve

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
    (``trusted_proxies``, ``max_body``, ``refund_on``, ``render``, ``challenge``...), for every
    dependency."""

    def __init__(self, app: FastAPI | None = None, *, guard: Guard | None = None, **options: Any) -> None:
        check_options(options)
        if guard is None:
            guard = Guard.from_settings(os.environ)
        self.guard, self.options = guard, {**Gate.settings(os.environ), **options}
        gate = Gate(**self.options)  # a bad value fails now
        serve(guard)
        checks.at_start(guard, trusted_proxies=gate.proxies.any)  # in the log
        if app is not None:
            self.init_app(app)

    def init_app(self, app: FastAPI) -> None:
        """Install the handler that renders the guard's refusals, and a lifespan around the
        app's own that writes the guard's statistics at shutdown."""
        app.add_exception_handler(Refused, _render)
        app.router.lifespan_context = _lifespan(app.router.lifespan_context, self.guard)

    def protect(
        self,
        model: type[Any] | None = None,
        *,
        param: str = "body",
        source: Any = inspect.Parameter.empty,
        phone: Source = "phone",
        content: Source = None,
        code: Source = "code",
        action: str = CHECK,
        guard: Guard | None = None,
        **overrides: Any,
    ) -> Callable[..., AsyncIterator[Any]]:
        """A dependency that judges the attempt in ``param`` (``model``, a pydantic model of the
        JSON body, or with no model the value itself, a string: ``source`` says where it is,
        ``Query()`` by FastAPI's default) and yields what ``action`` hands the endpoint: the
        Decision (``"check"``), the Issued code (``"issue"``), or the right code's CodeCheck
        (``"verify"``, which takes the code from the model's ``code`` field). ``guard``: this
        route's own Guard (another set of policies) instead of the app's."""
        check_options(overrides)
        code_field: Field = "code"
        pick_code: Callable[[Any], Any] | None = None
        if action == VERIFY:
            if model is None:
                raise ConfigError("action 'verify' needs a model with the phone and code fields")
            code_field, pick_code = _source(model, code, "code")
        if model is None:
            # The parameter itself: its name in the request is the field the Gate watches.
            phone_field: Field = getattr(source, "alias", None) or param
            content_field: Field = None
            pick_phone: Callable[[Any], Any] = _itself
            pick_content: Callable[[Any], Any] | None = None
        else:
            phone_field, pick_phone = _source(model, phone, "phone")
            if content is not None:
                content_field, pick_content = _source(model, content, "content")
            else:
                content_field, pick_content = None, None
        fields = {"phone": phone_field, "content": content_field, "code": code_field, "action": action}
        gate = Gate(**{**self.options, **overrides, **fields})
        if guard is not None:
            serve(guard)
        aio = aexchange_io(guard or self.guard, None)  # the endpoint runs between admit and settle
        validate = None if model is None else _validator(model, source, param)

        async def admit(request: Request, response: Response, **values: Any) -> Any:
            scope = request.scope
            client = scope.get("client")
            incoming = Incoming(
                scope["method"],
                scope["path"],  # not request.url, which parses a URL it rebuilds
                Headers(scope["headers"]),
                scope.get("query_string", b"").decode("latin-1"),
                b"",
                client[0] if client else None,
            )
            if gate.declared(incoming.headers.get("content-length")) is TOO_LARGE:
                raise Refused(gate.too_large())
            incoming = incoming._replace(body=await request.body())  # FastAPI's copy, read once
            value = values[param] if validate is None else validate(values[param], incoming.body)
            refusal = gate.screen(incoming)
            if refusal is not None:
                raise Refused(refusal)
            data = {phone_field if isinstance(phone_field, str) else "phone": pick_phone(value)}
            if pick_content is not None:
                data[content_field if isinstance(content_field, str) else "content"] = pick_content(value)
            if pick_code is not None:
                data[code_field if isinstance(code_field, str) else "code"] = pick_code(value)
            admitted = await adrive(gate.admit(incoming._replace(data=data), incoming.body), aio)
            if isinstance(admitted, Reply):
                raise Refused(admitted)
            request.state.smsguard = admitted
            for name, header in gate.rate_headers_of(admitted):
                response.headers[name] = header
            return admitted

        async def dependency(admitted: Any) -> AsyncIterator[Any]:
            try:
                yield admitted
            except HTTPException as exc:
                await adrive(gate.settle(admitted, exc.status_code), aio)
                raise
            except Exception as exc:
                await adrive(gate.settle(admitted, exc), aio)
                raise
            await adrive(gate.settle(admitted, 200), aio)

        annotation: Any
        if model is None:
            annotation, default = str, source
        else:
            # Not the model: FastAPI would validate the body for the dependency as well as for the
            # endpoint, and list each error twice. The value as it came, validated here.
            annotation, default = Any, Body(None) if source is inspect.Parameter.empty else source
        admit.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
                inspect.Parameter("response", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Response),
                inspect.Parameter(
                    param, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
                ),
            ]
        )
        # Two dependencies: a refusal is raised by the plain one, before FastAPI enters the
        # generator that settles the admitted attempt after the endpoint (a flood's denials
        # skip that machinery: its exit stack and shielded scope were a third of what a denial
        # cost over the bare endpoint).
        positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
        admitted = inspect.Parameter("admitted", positional, default=Depends(admit))
        dependency.__signature__ = inspect.Signature([admitted])  # type: ignore[attr-defined]
        return dependency


def _lifespan(inner: Callable[[Any], Any], guard: Guard) -> Callable[[Any], Any]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        serve(guard)  # again, after a shutdown (a test client's second run)
        try:
            async with inner(app) as state:
                yield state
        finally:
            await astop(guard)

    return lifespan


def _source(model: type[Any], source: Source, what: str) -> tuple[Field, Callable[[Any], Any]]:
    """What the Gate reads ``what`` from (the field's name in the body, which it watches; for a
    callable, which names no field, the value picked), and the picker of the value in the
    validated model."""
    if callable(source):
        return lambda request: request.data.get(what), source
    if not isinstance(source, str):
        raise ConfigError(f"{what} must name a field of {model.__name__} or be a callable given it")
    alias = getattr(getattr(model, "model_fields", {}).get(source), "alias", None)
    return alias or source, functools.partial(_attribute, name=source)


def _itself(value: Any) -> Any:
    return value


def _attribute(value: Any, *, name: str) -> Any:
    return value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)


def _validator(model: type[Any], source: Any, param: str) -> Callable[[Any, bytes], Any]:
    """What FastAPI would make of the endpoint's ``param: model``: the value validated, or its
    RequestValidationError (the same errors, at the same place)."""
    adapter: TypeAdapter[Any] = TypeAdapter(model)
    loc = ("body", param) if getattr(source, "embed", False) else ("body",)

    def validate(value: Any, body: bytes) -> Any:
        if value is None and not body:
            raise RequestValidationError(
                [{"type": "missing", "loc": loc, "msg": "Field required", "input": None}]
            )
        try:
            return adapter.validate_python(value, from_attributes=True)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            raise RequestValidationError(
                [{**error, "loc": (*loc, *error["loc"])} for error in errors]
            ) from None

    return validate
