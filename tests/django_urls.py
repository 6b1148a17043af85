"""The test app's views and routes."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

from smsguard.adapters.django import protect

seen: list[str] = []
guard: Any = None  # a test's own guard, named by SMSGUARD["GUARD"]


def send(request: HttpRequest) -> JsonResponse:
    seen.append(request.smsguard.phone)
    return JsonResponse({"phone": request.smsguard.phone, "bytes": len(request.body)})


def fail(request: HttpRequest) -> JsonResponse:
    raise RuntimeError("the SMS provider is down")


def bad_gateway(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"sent": False}, status=502)


@protect(phone="mobile", content="template")
def send_sync(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"phone": request.smsguard.phone})


@protect(phone="mobile")
async def send_async(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"phone": request.smsguard.phone})


urlpatterns = [
    path("sms/send", send),
    path("v1/sms/send.json", send),
    path("sms/fail", fail),
    path("sms/502", bad_gateway),
    path("v2/sync", send_sync),
    path("v2/async", send_async),
]
