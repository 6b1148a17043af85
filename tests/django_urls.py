"""The test app's views and routes."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

from smsguard.adapters.django import protect

seen: list[str] = []
codes: list[tuple[str, str]] = []  # (number, code) the issuing views were handed
guard: Any = None  # a test's own guard, named by SMSGUARD["GUARD"]
strict: Any = None  # a route's own guard, named by a view's protect(guard=...) or a route's "guard"


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


def issued(request: HttpRequest) -> JsonResponse:
    """A send route with ``action="issue"``: what a view handed the code would text."""
    phone = request.smsguard.decision.phone
    if phone.endswith("99999"):  # a number the provider rejects
        return JsonResponse({"sent": False}, status=502)
    codes.append((phone, request.smsguard.code))
    return JsonResponse({"sent": True})


def verified(request: HttpRequest) -> JsonResponse:
    """A check route with ``action="verify"``: reached with a right code only."""
    return JsonResponse({"verified": request.smsguard.ok})


@protect(action="issue")
def issued_sync(request: HttpRequest) -> JsonResponse:
    return issued(request)


@protect(action="verify")
async def verified_async(request: HttpRequest) -> JsonResponse:
    return verified(request)


@protect(guard="django_urls.strict", rate_headers="x-ratelimit")
def send_strict(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"phone": request.smsguard.phone, "policy": request.smsguard.policy})


urlpatterns = [
    path("sms/send", send),
    path("v1/sms/send.json", send),
    path("sms/fail", fail),
    path("sms/502", bad_gateway),
    path("v2/sync", send_sync),
    path("v2/async", send_async),
    path("v2/strict", send_strict),
    path("codes/send", issued),  # the middleware's, when a test's ROUTES name it
    path("codes/verify", verified),
    path("codes/v2/send", issued_sync),
    path("codes/v2/verify", verified_async),
]
