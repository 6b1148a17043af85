"""A FastAPI app whose send-code endpoint is guarded by a dependency, after validation.

    ./dev serve fastapi                                           # memory backend
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \\
        ./dev serve fastapi --workers 4                           # Redis, several workers

(``uvicorn fastapi_app:app --app-dir examples --no-proxy-headers``.) ``SMSGuard(app)`` writes
the guard's statistics when the app shuts down (its lifespan).

The guard and the request settings come from SMSGUARD_* environment variables. The body is a
pydantic model: a body FastAPI rejects gets its 422 and is never counted. An SMS-bombing run:

    for i in $(seq 12); do curl -s -XPOST localhost:8000/sms/send \\
        -H 'content-type: application/json' -d '{"phone": "+86 138 0013 8000"}'; echo; done

and a verification, once the user types the code in (what teaches the pumping defences):

    curl -s -XPOST localhost:8000/sms/verify -H 'content-type: application/json' \\
        -d '{"phone": "+86 138 0013 8000", "code": "123456"}'
"""

from __future__ import annotations

import os
import secrets

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from smsguard import Decision, Guard, InvalidInput
from smsguard.adapters.fastapi import SMSGuard

settings = {"SMSGUARD_DEFAULT_REGION": "CN", "SMSGUARD_TIMEZONE": "Asia/Shanghai", **os.environ}
if "REDIS_URL" in os.environ:
    settings["SMSGUARD_STORAGE_URI"] = os.environ["REDIS_URL"]

app = FastAPI()
sms = SMSGuard(app, guard=Guard.from_settings(settings))
codes: dict[str, str] = {}  # E.164 -> the code last sent (a real app keeps it in its store)
outbox: list[str] = []


class SendCode(BaseModel):
    phone: str
    template: str = "login"


class Verify(BaseModel):
    phone: str
    code: str


guarded = sms.protect(SendCode)  # judges body.phone once FastAPI has validated the body


@app.post("/sms/send")
async def send_code(body: SendCode, decision: Decision = Depends(guarded)) -> dict[str, bool]:
    if decision.phone.endswith("99999"):  # a number the provider rejects: the quota comes back
        raise HTTPException(502, "the SMS provider rejected the number")
    codes[decision.phone] = f"{secrets.randbelow(10**6):06d}"
    outbox.append(decision.phone)
    return {"sent": True}


@app.post("/sms/verify")
async def verify(body: Verify) -> dict[str, bool]:
    try:
        phone = sms.guard.identify(body.phone).e164
    except InvalidInput as exc:
        raise HTTPException(400, str(exc)) from None
    if codes.get(phone) != body.code:
        raise HTTPException(400, "wrong code")
    await sms.guard.averified(phone)
    return {"verified": True}


@app.get("/sms/outbox")
async def sent() -> dict[str, int]:
    return {"sent": len(outbox), "pid": os.getpid()}
