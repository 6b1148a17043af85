"""A Quart app whose guard issues and checks the verification codes, through the ASGI
middleware wrapped around ``app.asgi_app``, with a fake SMS sender.

    ./dev serve quart                                             # memory backend
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \\
        ./dev serve quart --workers 4                             # Redis, several workers

(``uvicorn quart_app:app --app-dir examples --no-proxy-headers``.) The middleware sees Quart's
lifespan, so it writes the guard's statistics when the app stops.

The guard and the request settings come from SMSGUARD_* environment variables (see
Guard.from_settings and Gate.settings). ``POST /sms/send`` issues the code (the fake sender
prints it in the server's output, for you to type in) and ``POST /sms/verify`` checks it:

    curl -s -XPOST localhost:8000/sms/send -H 'content-type: application/json' \\
        -d '{"phone": "+86 138 0013 8000"}'
    curl -s -XPOST localhost:8000/sms/verify -H 'content-type: application/json' \\
        -d '{"phone": "+86 138 0013 8000", "code": "<the printed code>"}'
"""

from __future__ import annotations

import os
from typing import Any

from quart import Quart, request

from smsguard import CodeCheck, Guard, Issued
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.http import Gate

settings = {"SMSGUARD_DEFAULT_REGION": "CN", "SMSGUARD_TIMEZONE": "Asia/Shanghai", **os.environ}
if "REDIS_URL" in os.environ:
    settings["SMSGUARD_STORAGE_URI"] = os.environ["REDIS_URL"]
guard = Guard.from_settings(settings)
outbox: list[str] = []

app = Quart(__name__)
# Quart's ASGI types are TypedDicts, the middleware's plain mappings: the same messages.
app.asgi_app = SMSGuardMiddleware(  # type: ignore[method-assign,assignment]
    app.asgi_app,  # type: ignore[arg-type]
    guard=guard,
    routes={"POST /sms/send": "issue", "POST /sms/verify": "verify"},
    **Gate.settings(settings),
)


def send_sms(phone: str, text: str) -> None:
    """Stands in for the SMS provider: prints the message (the number masked) so that a person
    trying the example can type the code in. An example only: a real app never logs a code."""
    if phone.endswith("99999"):  # a number the provider rejects: shows the refund
        raise ConnectionError("provider rejected the number")
    outbox.append(phone[-4:])
    print(f"fake SMS to {phone[:-8]}****{phone[-4:]}: {text}", flush=True)


@app.post("/sms/send")
async def send_code() -> tuple[dict[str, Any], int]:
    # Quart's request has no ``state``: the middleware's hand-over is in the ASGI scope.
    issued: Issued = request.scope["state"]["smsguard"]  # allowed, the code issued: only send it
    try:
        send_sms(issued.decision.phone, f"Your code is {issued.code}")  # the number in E.164
    except ConnectionError as exc:
        return {"sent": False, "error": str(exc)}, 502  # a 5xx: refunded
    return {"sent": True}, 200


@app.post("/sms/verify")
async def verify() -> dict[str, bool]:
    # Only a right code gets here: the middleware answered every other (400 invalid_code, 429).
    result: CodeCheck = request.scope["state"]["smsguard"]
    return {"verified": result.ok}


@app.get("/sms/outbox")
async def sent() -> dict[str, int]:
    return {"sent": len(outbox), "pid": os.getpid()}
