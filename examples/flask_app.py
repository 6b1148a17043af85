"""A Flask app whose guard issues and checks the verification codes, with a fake SMS sender.

    ./dev serve flask                                               # gunicorn, memory backend
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \\
        ./dev serve flask -w 4                                      # Redis, several workers

(``gunicorn --chdir examples flask_app:app``.) Settings come from SMSGUARD_* environment
variables into app.config (see Guard.from_settings); the extension writes the guard's
statistics when the worker exits. ``POST /sms/send`` issues the code (the fake sender prints it
in the server's output, for you to type in) and ``POST /sms/verify`` checks it:

    curl -s -XPOST localhost:8000/sms/send -d phone=13800138000
    curl -s -XPOST localhost:8000/sms/verify -d phone=13800138000 -d code=<the printed code>

An SMS-bombing run:

    for i in $(seq 12); do curl -s -XPOST localhost:8000/sms/send -d phone=13800138000; echo; done
"""

from __future__ import annotations

import os

from flask import Flask, g, jsonify

from smsguard.adapters.flask import SMSGuard

app = Flask(__name__)
app.config.update(SMSGUARD_DEFAULT_REGION="CN", SMSGUARD_TIMEZONE="Asia/Shanghai")
app.config.update({k: v for k, v in os.environ.items() if k.startswith("SMSGUARD_")})
if "REDIS_URL" in os.environ:
    app.config["SMSGUARD_STORAGE_URI"] = os.environ["REDIS_URL"]
sms_guard = SMSGuard(app)
outbox: list[str] = []


def send_sms(phone: str, text: str) -> None:
    """Stands in for the SMS provider: prints the message (the number masked) so that a person
    trying the example can type the code in. An example only: a real app never logs a code."""
    if phone.endswith("99999"):  # a number the provider rejects: shows the refund
        raise ConnectionError("provider rejected the number")
    outbox.append(phone[-4:])
    print(f"fake SMS to {phone[:-8]}****{phone[-4:]}: {text}", flush=True)


@app.post("/sms/send")
@sms_guard.protect(action="issue")  # the send judged and the code issued: the view only sends it
def send_code():  # type: ignore[no-untyped-def]
    issued = g.smsguard
    try:
        send_sms(issued.decision.phone, f"Your code is {issued.code}")  # the number in E.164
    except ConnectionError as exc:
        return jsonify(sent=False, error=str(exc)), 502  # a 4xx or 5xx: the guard refunds the quota
    return jsonify(sent=True)


@app.post("/sms/verify")
@sms_guard.protect(action="verify")  # only a right code reaches the view (else 400 invalid_code, 429)
def verify():  # type: ignore[no-untyped-def]
    return jsonify(verified=g.smsguard.ok)


@app.get("/sms/outbox")
def show_outbox():  # type: ignore[no-untyped-def]
    return jsonify(sent=len(outbox), pid=os.getpid())
