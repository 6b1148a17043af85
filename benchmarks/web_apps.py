"""The apps benchmarks/web.py serves: one send-code endpoint, bare or guarded.

The endpoint does what a real one must before texting: validate the number (phonenumbers).
Behind smsguard it takes the number the guard already validated, from the decision.

BENCH_VARIANT picks ``bare``, ``smsguard`` or ``peer`` (slowapi for Starlette, Flask-Limiter
for Flask); BENCH_STORAGE is ``memory://`` or a Redis URL. The phone number comes in the
query string so that every variant can key on it without reading the body. The four limits
are the same everywhere; the IP limit is set high because the load comes from one address.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, g, jsonify
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from smsguard import DailyCap, Guard, InvalidPhone, IPThrottle, PhoneRate, SameContent, normalize
from smsguard.backends import backend_from_url

VARIANT = os.environ.get("BENCH_VARIANT", "bare")
STORAGE = os.environ.get("BENCH_STORAGE", "memory://")
SAME, DAILY, RATES, PER_IP = "1/30 seconds", "10/day", "1/minute;5/hour", "100000/hour"


def guard() -> Guard:
    policies = [SameContent(30), DailyCap(10, tz="Asia/Shanghai"), PhoneRate(RATES), IPThrottle(PER_IP)]
    return Guard(policies, backend=backend_from_url(STORAGE), default_region="CN", secret="bench")  # type: ignore[arg-type]


def sent(phone: str) -> dict[str, Any]:
    return {"sent": True, "to": phone}  # the fake SMS provider


def validated(raw: str) -> str:
    try:
        return normalize(raw, "CN")
    except InvalidPhone:
        return ""


# -- Starlette --------------------------------------------------------------------------------


async def send(request: Request) -> JSONResponse:
    decision = getattr(request.state, "smsguard", None)
    return JSONResponse(
        sent(decision.phone if decision else validated(request.query_params.get("phone", "")))
    )


def starlette_app() -> Starlette:
    if VARIANT == "peer":
        from slowapi import Limiter, _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.util import get_remote_address

        limiter = Limiter(key_func=get_remote_address, storage_uri=STORAGE, strategy="moving-window")

        def phone(request: Request) -> str:
            return request.query_params.get("phone", "")

        def phone_content(request: Request) -> str:
            return phone(request) + ":POST /sms/send"

        async def limited(request: Request) -> JSONResponse:  # slowapi wraps each limit around it
            return await send(request)

        for rate, key in [
            (SAME, phone_content),
            (DAILY, phone),
            (RATES, phone),
            (PER_IP, get_remote_address),
        ]:
            limited = limiter.limit(rate, key_func=key)(limited)
        app = Starlette(routes=[Route("/sms/send", limited, methods=["POST"])])
        app.state.limiter = limiter
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
        return app
    app = Starlette(routes=[Route("/sms/send", send, methods=["POST"])])
    if VARIANT == "smsguard":
        from smsguard.adapters.asgi import SMSGuardMiddleware

        app.add_middleware(SMSGuardMiddleware, guard=guard())
    return app


# -- Flask ------------------------------------------------------------------------------------


def flask_app() -> Flask:
    app = Flask(__name__)

    def view() -> Any:
        decision = getattr(g, "smsguard", None)
        return jsonify(sent(decision.phone if decision else validated(flask_request.args.get("phone", ""))))

    if VARIANT == "peer":
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address

        limiter = Limiter(get_remote_address, app=app, storage_uri=STORAGE, strategy="moving-window")

        def phone() -> str:
            return flask_request.args.get("phone", "")

        for rate, key in [(SAME, lambda: phone() + ":POST /sms/send"), (DAILY, phone), (RATES, phone)]:
            view = limiter.limit(rate, key_func=key)(view)
        view = limiter.limit(PER_IP)(view)
    elif VARIANT == "smsguard":
        from smsguard.adapters.flask import protect

        view = protect(guard())(view)
    app.add_url_rule("/sms/send", "send", view, methods=["POST"])
    return app


starlette = starlette_app()
flask = flask_app()
