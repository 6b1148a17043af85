"""A Flask app with a guarded send-verification-code endpoint and a fake SMS sender.

    ./dev serve flask                                               # gunicorn, memory backend
    REDIS_URL=redis://localhost:6379/0 SMSGUARD_SECRET=change-me \\
        ./dev serve flask -w 4                                      # Redis, several workers

(``gunicorn --chdir examples flask_app:app``.) Settings come from SMSGUARD_* environment
variables into app.config (see Guard.from_settings); the extension writes the guard's
statistics when the worker exits. Try an SMS-bombing run with curl:

    for i in $(seq 12); do curl -s -XPOST localhost:8000/sms/send -d phone=13800138000; echo; done
"""

from __future__ import annotations

import os
import secrets

from flask import Flask, g, jsonify

from smsguard.adapters.flask import SMSGuard

app = Flask(__name__)
app.config.update(SMSGUARD_DEFAULT_REGION="CN", SMSGUARD_TIMEZONE="Asia/Shanghai")
app.config.update({k: v for k, v in os.environ.items() if k.startswith("SMSGUARD_")})
if "REDIS_URL" in os.environ:
    app.config["SMSGUARD_STORAGE_URI"] = os.environ["REDIS_URL"]
sms_guard = SMSGuard(app)
outbox: list[tuple[str, str]] = []


def send_sms(phone: str, text: str) -> None:
    """Stands in for the SMS provider."""
    if phone.endswith("99999"):  # a number the provider rejects: shows the refund
        raise ConnectionError("provider rejected the number")
    outbox.append((phone, text))


@app.post("/sms/send")
@sms_guard.protect()
def send_code():  # type: ignore[no-untyped-def]
    phone = g.smsguard.phone  # the number the guard validated, in E.164
    try:
        send_sms(phone, f"Your code is {secrets.randbelow(10**6):06d}")
    except ConnectionError as exc:
        return jsonify(sent=False, error=str(exc)), 502  # a 4xx or 5xx: the guard refunds the quota
    return jsonify(sent=True)


@app.get("/sms/outbox")
def show_outbox():  # type: ignore[no-untyped-def]
    return jsonify(sent=len(outbox), pid=os.getpid())
