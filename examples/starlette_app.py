"""A Starlette app with a guarded send-verification-code endpoint and a fake SMS sender.

    ./dev serve starlette                                         # memory backend
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \\
        ./dev serve starlette --workers 4                         # Redis, several workers

(``./dev serve starlette`` runs ``uvicorn starlette_app:app --app-dir examples
--no-proxy-headers``: without a proxy in front, uvicorn must not believe X-Forwarded-For.)
The middleware writes the guard's statistics when the app shuts down (its lifespan).

The guard and the request settings come from SMSGUARD_* environment variables (see
Guard.from_settings and Gate.settings), with the Tencent defaults; try an SMS-bombing run
with curl:

    for i in $(seq 12); do curl -s -XPOST localhost:8000/sms/send \\
        -H 'content-type: application/json' -d '{"phone": "+86 138 0013 8000"}'; echo; done
"""

from __future__ import annotations

import os
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from smsguard import Guard
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.http import Gate

settings = {"SMSGUARD_DEFAULT_REGION": "CN", "SMSGUARD_TIMEZONE": "Asia/Shanghai", **os.environ}
if "REDIS_URL" in os.environ:
    settings["SMSGUARD_STORAGE_URI"] = os.environ["REDIS_URL"]
guard = Guard.from_settings(settings)


class FakeSMS:
    """Stands in for the SMS provider: remembers what it would have sent."""

    def __init__(self) -> None:
        self.outbox: list[tuple[str, str]] = []

    def send(self, phone: str, text: str) -> None:
        if phone.endswith("99999"):  # a number the provider rejects: shows the refund
            raise ConnectionError("provider rejected the number")
        self.outbox.append((phone, text))


sms = FakeSMS()


async def send_code(request: Request) -> JSONResponse:
    phone = request.state.smsguard.phone  # the number the guard validated, in E.164
    code = f"{secrets.randbelow(10**6):06d}"
    try:
        sms.send(phone, f"Your code is {code}")
    except ConnectionError as exc:
        return JSONResponse({"sent": False, "error": str(exc)}, status_code=502)  # a 5xx: refunded
    return JSONResponse({"sent": True})


async def outbox(request: Request) -> JSONResponse:
    return JSONResponse({"sent": len(sms.outbox), "pid": os.getpid()})


app = Starlette(routes=[Route("/sms/send", send_code, methods=["POST"]), Route("/sms/outbox", outbox)])
app.add_middleware(SMSGuardMiddleware, guard=guard, routes=["POST /sms/send"], **Gate.settings(settings))
