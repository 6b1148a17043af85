"""A Starlette app whose guard issues and checks the verification codes, with a fake SMS sender.

    ./dev serve starlette                                         # memory backend
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \\
        ./dev serve starlette --workers 4                         # Redis, several workers

(``./dev serve starlette`` runs ``uvicorn starlette_app:app --app-dir examples
--no-proxy-headers``: without a proxy in front, uvicorn must not believe X-Forwarded-For.)
The middleware writes the guard's statistics when the app shuts down (its lifespan).

The guard and the request settings come from SMSGUARD_* environment variables (see
Guard.from_settings and Gate.settings), with the Tencent defaults. ``POST /sms/send`` issues the
code (the fake sender prints it in the server's output, for you to type in) and
``POST /sms/verify`` checks it:

    curl -s -XPOST localhost:8000/sms/send -H 'content-type: application/json' \\
        -d '{"phone": "+86 138 0013 8000"}'
    curl -s -XPOST localhost:8000/sms/verify -H 'content-type: application/json' \\
        -d '{"phone": "+86 138 0013 8000", "code": "<the printed code>"}'

and an SMS-bombing run:

    for i in $(seq 12); do curl -s -XPOST localhost:8000/sms/send \\
        -H 'content-type: application/json' -d '{"phone": "+86 138 0013 8000"}'; echo; done
"""

from __future__ import annotations

import os

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
    """Stands in for the SMS provider: counts what it would have sent, and prints it (with the
    number masked) so that a person trying the example can type the code in. An example only:
    a real app never logs a code."""

    def __init__(self) -> None:
        self.outbox: list[str] = []

    def send(self, phone: str, text: str) -> None:
        if phone.endswith("99999"):  # a number the provider rejects: shows the refund
            raise ConnectionError("provider rejected the number")
        self.outbox.append(phone[-4:])
        print(f"fake SMS to {phone[:-8]}****{phone[-4:]}: {text}", flush=True)


sms = FakeSMS()


async def send_code(request: Request) -> JSONResponse:
    issued = request.state.smsguard  # the send was allowed and the code issued: only send it
    try:
        sms.send(issued.decision.phone, f"Your code is {issued.code}")  # the number in E.164
    except ConnectionError as exc:
        return JSONResponse({"sent": False, "error": str(exc)}, status_code=502)  # a 5xx: refunded
    return JSONResponse({"sent": True})


async def verify(request: Request) -> JSONResponse:
    # Only a right code gets here: the middleware answered every other (400 invalid_code, 429).
    return JSONResponse({"verified": request.state.smsguard.ok})


async def outbox(request: Request) -> JSONResponse:
    return JSONResponse({"sent": len(sms.outbox), "pid": os.getpid()})


app = Starlette(
    routes=[
        Route("/sms/send", send_code, methods=["POST"]),
        Route("/sms/verify", verify, methods=["POST"]),
        Route("/sms/outbox", outbox),
    ]
)
app.add_middleware(
    SMSGuardMiddleware,
    guard=guard,
    routes={"POST /sms/send": "issue", "POST /sms/verify": "verify"},
    **Gate.settings(settings),
)
