"""The review page served by each adapter's view, behind the app's own access control: Flask's
view function, Django's view, and the Starlette endpoint (in Starlette and in FastAPI)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import django_app  # Django configured for the tests
import pytest
from conftest import Clock
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.test import Client, override_settings
from django.urls import path
from fastapi import Depends, FastAPI, HTTPException, Request
from flask import Flask
from flask import request as flask_request
from review_traffic import two_days
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser, requires
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.testclient import TestClient

from smsguard import BackendUnavailable, Guard, MemoryBackend
from smsguard.adapters.django import configured
from smsguard.adapters.django import review_view as django_review
from smsguard.adapters.flask import SMSGuard
from smsguard.adapters.flask import review_view as flask_review
from smsguard.adapters.starlette import review_endpoint
from smsguard.review import CSP, review_html

ADMIN = {"X-Admin": "yes"}  # what each test app's own access control lets through


class Flaky(MemoryBackend):
    """A memory backend whose reads fail while ``down``."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def read(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        if self.down:
            raise BackendUnavailable("connection refused")
        return super().read(keys, now)

    async def aread(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        return self.read(keys, now)


@pytest.fixture
def pumped(clock: Clock) -> tuple[Guard, Flaky]:
    backend = Flaky()
    return two_days(clock, backend)[0], backend


def check(get: Any, guard: Guard, backend: Flaky) -> None:
    """What every view answers: nothing without the app's own admission; the page of today or
    of ``?day=``, with its Content-Security-Policy; 400 for a bad day; 503 with the backend down.
    ``get(path, headers)`` returns (status, headers, body)."""
    status, _, _ = get("/ops/review", {})
    assert status == 403, "the app's access control stands in front of the page"
    status, headers, body = get("/ops/review", ADMIN)
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-security-policy"] == CSP
    assert headers["cache-control"] == "no-store"
    assert body == review_html(guard)
    status, _, body = get("/ops/review?day=2026-03-01", ADMIN)
    assert status == 200
    assert "<title>smsguard daily review: 2026-03-01</title>" in body
    status, headers, body = get("/ops/review?day=yesterday", ADMIN)
    assert (status, headers["content-type"]) == (400, "text/plain; charset=utf-8")
    assert body == "smsguard review: day='yesterday' is not a day: use YYYY-MM-DD\n"
    backend.down = True
    status, _, body = get("/ops/review", ADMIN)
    assert status == 503
    assert "connection refused" in body


def test_flask_review_view(pumped: tuple[Guard, Flaky]) -> None:
    guard, backend = pumped
    app = Flask(__name__)
    SMSGuard(app, guard=guard)
    review = flask_review()  # the extension's guard

    def admin_only() -> Any:
        if flask_request.headers.get("X-Admin") != "yes":
            return "forbidden", 403
        return review()

    app.add_url_rule("/ops/review", view_func=admin_only)
    client = app.test_client()

    def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        response = client.get(url, headers=headers)
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.text

    check(get, guard, backend)


def admin_only(view: Any) -> Any:
    def guarded(request: HttpRequest) -> HttpResponse:
        if request.headers.get("X-Admin") != "yes":
            return HttpResponseForbidden()
        return view(request)  # type: ignore[no-any-return]

    return guarded


urlpatterns = [path("ops/review", admin_only(django_review))]
django_guard: Guard | None = None  # named by the test's SMSGUARD["GUARD"]


@pytest.fixture
def django_settings(pumped: tuple[Guard, Flaky]) -> Iterator[None]:
    global django_guard
    django_guard = pumped[0]
    configured.clear(setting="SMSGUARD")
    with override_settings(
        ROOT_URLCONF=__name__, SMSGUARD={**django_app.SMSGUARD, "GUARD": f"{__name__}.django_guard"}
    ):
        yield
    configured.clear(setting="SMSGUARD")


def test_django_review_view(pumped: tuple[Guard, Flaky], django_settings: None) -> None:
    client = Client()

    def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
        response = client.get(url, headers=headers)
        return response.status_code, {k.lower(): v for k, v in response.items()}, response.content.decode()

    check(get, *pumped)


class HeaderAuth(AuthenticationBackend):
    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        if conn.headers.get("x-admin") == "yes":
            return AuthCredentials(["admin"]), SimpleUser("ops")
        return None


def test_starlette_review_endpoint(pumped: tuple[Guard, Flaky]) -> None:
    guard, backend = pumped
    app = Starlette(
        routes=[Route("/ops/review", requires("admin", status_code=403)(review_endpoint(guard)))],
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())],
    )
    with TestClient(app) as client:

        def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
            response = client.get(url, headers=headers)
            return response.status_code, dict(response.headers), response.text

        check(get, guard, backend)


def test_fastapi_review_endpoint(pumped: tuple[Guard, Flaky]) -> None:
    guard, backend = pumped

    def admin(request: Request) -> None:
        if request.headers.get("x-admin") != "yes":
            raise HTTPException(403)

    app = FastAPI()
    app.add_api_route("/ops/review", review_endpoint(guard), dependencies=[Depends(admin)])
    with TestClient(app) as client:

        def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
            response = client.get(url, headers=headers)
            return response.status_code, dict(response.headers), response.text

        check(get, guard, backend)
