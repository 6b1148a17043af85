"""Starlette (and FastAPI, Litestar through Starlette's types): the daily review as an endpoint.

    from smsguard.adapters.starlette import review_endpoint
    app.add_route("/ops/sms-review", requires("admin")(review_endpoint(guard)))

The guarding itself is the ASGI middleware's (``smsguard.adapters.asgi``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from smsguard.guard import Guard
from smsguard.review import HEADERS, aserve


def review_endpoint(guard: Guard) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that serves ``guard``'s daily review page (``smsguard.review``):
    ``?day=YYYY-MM-DD`` for a day other than today. It has no access control of its own: mount
    it behind the app's (Starlette's ``requires``, a FastAPI dependency)."""

    async def sms_review(request: Request) -> Response:
        served = await aserve(guard, request.query_params)
        return Response(served.body, served.status, dict(HEADERS), media_type=served.content_type)

    return sms_review
