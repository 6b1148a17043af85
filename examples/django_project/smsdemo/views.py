"""The views: a send-code endpoint under the middleware, an async one under ``@protect``, each
handed the code the guard issued, and the verification endpoint, which the middleware reaches
with a right code only."""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse

from smsguard import Issued
from smsguard.adapters.django import protect

outbox_: list[str] = []


def _send(issued: Issued) -> JsonResponse:
    """Stands in for the SMS provider: prints the message (the number masked) so that a person
    trying the example can type the code in. An example only: a real app never logs a code."""
    phone = issued.decision.phone  # the number the guard validated, in E.164
    if phone.endswith("99999"):  # a number the provider rejects: a 5xx gives the quota back
        return JsonResponse({"sent": False}, status=502)
    outbox_.append(phone[-4:])
    print(f"fake SMS to {phone[:-8]}****{phone[-4:]}: Your code is {issued.code}", flush=True)
    return JsonResponse({"sent": True})


def send_code(request: HttpRequest) -> JsonResponse:
    return _send(request.smsguard)


@protect(phone="mobile", action="issue")
async def send_code_v2(request: HttpRequest) -> JsonResponse:
    return _send(request.smsguard)


def verify(request: HttpRequest) -> JsonResponse:
    # Only a right code gets here: the middleware answered every other (400 invalid_code, 429).
    return JsonResponse({"verified": request.smsguard.ok})


def outbox(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"sent": len(outbox_), "pid": os.getpid()})
