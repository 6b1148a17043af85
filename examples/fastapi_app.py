"""A FastAPI app whose guard issues and checks the verification codes, by dependencies that
judge after validation.

    ./dev serve fastapi                                           # memory backend
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \\
        ./dev serve fastapi --workers 4                           # Redis, several workers

(``uvicorn fastapi_app:app --app-dir examples --no-proxy-headers``.) ``SMSGuard(app)`` writes
the guard's statistics when the app shuts down (its lifespan).

The guard and the request settings come from SMSGUARD_* environment variables. The bodies are
pydantic models: a body FastAPI rejects gets its 422 and is never counted. ``POST /sms/send``
issues the code (the fake sender prints it in the server's output, for you to type in), and
``POST /sms/verify`` checks it (which also teaches the pumping defences the number is real):

    curl -s -XPOST localhost:8000/sms/send -H 'content-type: application/json' \\
        -d '{"phone": "+86 138 0013 8000"}'
    curl -s -XPOST localhost:8000/sms/verify -H 'content-type: application/json' \\
        -d '{"phone": "+86 138 0013 8000", "code": "<the printed code>"}'

An SMS-bombing run:

    for i in $(seq 12); do curl -s -XPOST localhost:8000/sms/send \\
        -H 'content-type: application/json' -d '{"phone": "+86 138 0013 8000"}'; echo; done
"""

from __future__ import annotations

import os

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

from smsguard import CodeCheck, Guard, Issued
from smsguard.adapters.fastapi import SMSGuard

settings = {"SMSGUARD_DEFAULT_REGION": "CN", "SMSGUARD_TIMEZONE": "Asia/Shanghai", **os.environ}
if "REDIS_URL" in os.environ:
    settings["SMSGUARD_STORAGE_URI"] = os.environ["REDIS_URL"]

app = FastAPI()
sms = SMSGuard(app, guard=Guard.from_settings(settings))
outbox: list[str] = []


def send_sms(phone: str, text: str) -> None:
    """Stands in for the SMS provider: prints the message (the number masked) so that a person
    trying the example can type the code in. An example only: a real app never logs a code."""
    if phone.endswith("99999"):  # a number the provider rejects: the quota comes back
        raise HTTPException(502, "the SMS provider rejected the number")
    outbox.append(phone[-4:])
    print(f"fake SMS to {phone[:-8]}****{phone[-4:]}: {text}", flush=True)


class SendCode(BaseModel):
    phone: str
    template: str = "login"


class Verify(BaseModel):
    phone: str
    code: str


issue = sms.protect(SendCode, action="issue")  # judges body.phone once FastAPI validated it, issues the code
check = sms.protect(Verify, action="verify")  # checks body.code against body.phone


@app.post("/sms/send")
async def send_code(body: SendCode, issued: Issued = Depends(issue)) -> dict[str, bool]:
    send_sms(issued.decision.phone, f"Your code is {issued.code}")  # the number in E.164
    return {"sent": True}


@app.post("/sms/verify")
async def verify(body: Verify, result: CodeCheck = Depends(check)) -> dict[str, bool]:
    # Only a right code gets here: the dependency answered every other (400 invalid_code, 429).
    return {"verified": result.ok}


@app.get("/sms/outbox")
async def sent() -> dict[str, int]:
    return {"sent": len(outbox), "pid": os.getpid()}
