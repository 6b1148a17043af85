"""The apps benchmarks/web.py serves: one send-code endpoint, bare or guarded.

The endpoint does what a real one must before texting: validate the number (phonenumbers).
Behind smsguard it takes the number the guard already validated, from the decision.

BENCH_VARIANT picks ``bare``, ``smsguard`` or ``peer`` (slowapi for Starlette and FastAPI,
Flask-Limiter for Flask, django-ratelimit for Django); BENCH_STORAGE is ``memory://`` or a Redis
URL. The phone number comes in the
query string so that every variant can key on it without reading the body. The four limits
are the same everywhere; the IP limit is set high because the load comes from one address.

The client's address: every app believes X-Forwarded-For from its loopback proxy (wrk stands in
for it), so that a flood from many addresses reaches each variant as such. Under uvicorn that is
its own default (--forwarded-allow-ips 127.0.0.1 sets the ASGI client); under gunicorn, werkzeug's
ProxyFix (one hop) sets REMOTE_ADDR, around every variant alike, the bare one included.
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
from werkzeug.middleware.proxy_fix import ProxyFix

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


def slowapi_limited(app: Any, endpoint: Any) -> Any:
    """``endpoint`` under slowapi's four limits (moving windows), its handler installed on
    ``app`` (Starlette or FastAPI)."""
    from slowapi import Limiter, _rate_limit_exceeded_handler
    from slowapi.errors import RateLimitExceeded
    from slowapi.util import get_remote_address

    limiter = Limiter(key_func=get_remote_address, storage_uri=STORAGE, strategy="moving-window")
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)

    # slowapi passes the request to a key function whose parameter is named "request".
    def phone(request: Request) -> str:
        return str(request.query_params.get("phone", ""))

    def phone_content(request: Request) -> str:
        return phone(request) + ":POST /sms/send"

    for rate, key in [(SAME, phone_content), (DAILY, phone), (RATES, phone), (PER_IP, get_remote_address)]:
        endpoint = limiter.limit(rate, key_func=key)(endpoint)
    return endpoint


def starlette_app() -> Starlette:
    if VARIANT == "peer":

        async def limited(request: Request) -> JSONResponse:  # slowapi wraps each limit around it
            return await send(request)

        app = Starlette()
        app.add_route("/sms/send", slowapi_limited(app, limited), methods=["POST"])
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
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    return app


# -- FastAPI ----------------------------------------------------------------------------------


def fastapi_app() -> Any:
    from fastapi import Depends, FastAPI, Query

    app = FastAPI()
    if VARIANT == "smsguard":
        from smsguard.adapters.fastapi import SMSGuard

        guarded = Depends(SMSGuard(app, guard=guard()).protect(param="phone", source=Query()))

        @app.post("/sms/send")
        async def send_guarded(decision: Any = guarded) -> Any:
            return sent(decision.phone)

        return app
    if VARIANT == "peer":
        # (Annotations are strings here: FastAPI resolves them in this module's globals.)
        async def send_limited(request: Request, phone: str = "") -> Any:
            return sent(validated(phone))

        app.post("/sms/send")(slowapi_limited(app, send_limited))
        return app

    @app.post("/sms/send")
    async def send_bare(phone: str = "") -> Any:
        return sent(validated(phone))

    return app


# -- Django -----------------------------------------------------------------------------------

django_guard: Guard | None = None


def django_app() -> Any:
    """Django's WSGI app: the view bare, under ``@protect``, or under django-ratelimit (its
    fixed windows, in Django's cache: local memory, or Redis)."""
    global django_guard
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import JsonResponse

    cache = (
        # LocMemCache keeps 300 keys by default: too few to count 50,000 numbers.
        {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"MAX_ENTRIES": 10**6}}
        if STORAGE.startswith("memory")
        else {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": STORAGE}
    )
    if VARIANT == "smsguard":
        django_guard = guard()
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="web_apps",
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        CACHES={"default": cache},
        SMSGUARD={"GUARD": "web_apps.django_guard", "PHONE_FIELD": "phone"},
        RATELIMIT_USE_CACHE="default",
        SILENCED_SYSTEM_CHECKS=["django_ratelimit.E003", "django_ratelimit.W001"],
    )
    django.setup()

    def view(request: Any) -> Any:
        decision = getattr(request, "smsguard", None)
        return JsonResponse(sent(decision.phone if decision else validated(request.GET.get("phone", ""))))

    if VARIANT == "smsguard":
        from smsguard.adapters.django import protect

        view = protect()(view)
    elif VARIANT == "peer":
        from django_ratelimit.decorators import ratelimit

        def phone(group: str, request: Any) -> str:
            return str(request.GET.get("phone", ""))

        def phone_content(group: str, request: Any) -> str:
            return phone(group, request) + ":POST /sms/send"

        for rate, key in [
            ("1/30s", phone_content),
            ("10/d", phone),
            ("1/m", phone),
            ("5/h", phone),
            ("100000/h", "ip"),
        ]:
            view = ratelimit(key=key, rate=rate, method="POST", block=True)(view)
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    globals()["urlpatterns"] = [path("sms/send", csrf_exempt(view))]
    return ProxyFix(get_wsgi_application(), x_for=1)


starlette = starlette_app()
flask = flask_app()
fastapi = fastapi_app()
django = django_app() if os.environ.get("BENCH_FRAMEWORK") == "django" else None
