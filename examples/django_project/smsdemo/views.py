"""The views: a send-code endpoint under the middleware, an async one under ``@protect``, and a
verification endpoint that tells the guard a code was entered."""

from __future__ import annotations

import json
import os
import secrets

from django.http import HttpRequest, JsonResponse

from smsguard import InvalidInput
from smsguard.adapters.django import guard, protect

codes: dict[str, str] = {}  # E.164 -> the code last sent (a real app keeps it in its store)
outbox_: list[str] = []


def _send(phone: str) -> JsonResponse:
    if phone.endswith("99999"):  # a number the provider rejects: a 5xx gives the quota back
        return JsonResponse({"sent": False}, status=502)
    codes[phone] = f"{secrets.randbelow(10**6):06d}"
    outbox_.append(phone)
    return JsonResponse({"sent": True})


def send_code(request: HttpRequest) -> JsonResponse:
    return _send(request.smsguard.phone)


@protect(phone="mobile")
async def send_code_v2(request: HttpRequest) -> JsonResponse:
    return _send(request.smsguard.phone)


def verify(request: HttpRequest) -> JsonResponse:
    try:
        data = json.loads(request.body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("send a JSON object")
        phone = guard().identify(str(data.get("phone", ""))).e164
    except (ValueError, InvalidInput) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    if codes.get(phone) != data.get("code"):
        return JsonResponse({"verified": False}, status=400)
    guard().verified(phone)
    return JsonResponse({"verified": True})


def outbox(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"sent": len(outbox_), "pid": os.getpid()})
