"""Django: the middleware and the decorator (sync and async views) through Django's test
clients, on every backend; manage.py smsguard against Redis; the example project under uvicorn
and gunicorn over loopback, on memory and on Redis."""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import django_app
import django_urls
import httpx
import pytest
from conftest import Clock, at, unique_prefix
from django.test import AsyncClient, Client, override_settings
from servers import RedisServer, free_port, wait_until
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from smsguard import Guard
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.django import configured, guard
from smsguard.backends.base import Backend

VICTIM = "+8613800138000"
PROJECT = Path(__file__).parent.parent / "examples" / "django_project"


@pytest.fixture(autouse=True)
def fresh() -> Any:
    """Each test on a fresh guard (the settings' one is built on first use)."""
    configured.clear(setting="SMSGUARD")
    django_urls.seen.clear()
    yield
    configured.clear(setting="SMSGUARD")


def post(client: Client, path: str, data: Any, **extra: Any) -> Any:
    return client.post(
        path, json.dumps(data), content_type="application/json", REMOTE_ADDR="203.0.113.9", **extra
    )


def on(backend: Backend) -> Any:
    """The settings, with a guard of the test's backend (named by ``GUARD``)."""
    django_urls.guard = Guard.from_settings({**django_app.SMSGUARD}, prefix="")
    django_urls.guard = Guard(
        django_urls.guard.policies, backend=backend, default_region="CN", secret="django-test"
    )
    return override_settings(SMSGUARD={**django_app.SMSGUARD, "GUARD": "django_urls.guard"})


@pytest.mark.usefixtures("fresh")
def test_the_middleware_on_every_backend(backend: Backend) -> None:
    with on(backend):
        middleware_on(backend)


def middleware_on(backend: Backend) -> None:
    assert guard().backend is backend
    client = Client()
    r = post(client, "/sms/send", {"phone": "138 0013 8000"})
    assert (r.status_code, r.json()["phone"]) == (200, VICTIM)
    assert r.json()["bytes"] > 0, "the view reads the same body"
    assert [post(client, "/sms/send", {"phone": VICTIM}).status_code for _ in range(3)] == [200, 200, 429]
    denied = post(client, "/sms/send", {"phone": VICTIM})
    assert denied.json() == {
        "error": "rate_limited",
        "policy": "daily_cap",
        "reason": "daily_cap",
        "retry_after": denied.json()["retry_after"],
    }
    assert denied["Retry-After"] == str(denied.json()["retry_after"])
    assert denied["RateLimit-Policy"] == '"daily_cap";q=3'
    assert django_urls.seen == [VICTIM] * 3
    bad = post(client, "/sms/send", {"phone": "12"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")


def test_the_same_responses_as_the_asgi_middleware() -> None:
    async def endpoint(request: Any) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/sms/send", endpoint, methods=["POST"])])
    app.add_middleware(SMSGuardMiddleware, guard=Guard.from_settings(django_app.SMSGUARD, prefix=""))
    asgi = TestClient(app, client=("203.0.113.9", 1))
    client = Client()
    for body in (
        {"phone": "12"},
        {"phone": VICTIM},
        {"phone": VICTIM},
        {"phone": VICTIM},
        {"phone": VICTIM},
        {"x": 1},
    ):
        ours, theirs = post(client, "/sms/send", body), asgi.post("/sms/send", json=body)
        assert ours.status_code == theirs.status_code
        if ours.status_code != 200:
            assert ours.json() == theirs.json()
            for header in ("Retry-After", "RateLimit", "RateLimit-Policy", "Content-Type"):
                assert ours.get(header) == theirs.headers.get(header), header


def test_refunds_and_body_limits() -> None:
    client = Client(raise_request_exception=False)
    assert post(client, "/sms/fail", {"phone": VICTIM}).status_code == 500
    assert post(client, "/sms/502", {"phone": VICTIM}).status_code == 502
    assert guard().status(VICTIM)[0].used == 0, "an exception and a 5xx give the quota back"
    big = {"phone": VICTIM, "pad": "x" * 2000}
    assert post(client, "/sms/send", big).status_code == 413
    assert guard().status(VICTIM)[0].used == 0


def test_trusted_proxies() -> None:
    with override_settings(SMSGUARD={**django_app.SMSGUARD, "IP_RATE": "1/hour"}):
        client = Client()
        # Behind the trusted proxy (203.0.113.0/24), each forwarded client has its own quota.
        for n, forwarded in enumerate(["198.51.100.1", "198.51.100.2"]):
            r = post(client, "/sms/send", {"phone": f"+861380013800{n}"}, HTTP_X_FORWARDED_FOR=forwarded)
            assert r.status_code == 200
        # From anywhere else the header is the client's own: it is counted on the peer.
        untrusted = {"REMOTE_ADDR": "192.0.2.1"}
        for n, forged in enumerate(["198.51.100.3", "198.51.100.4"]):
            r = client.post(
                "/sms/send",
                json.dumps({"phone": f"+861390013900{n}"}),
                content_type="application/json",
                HTTP_X_FORWARDED_FOR=forged,
                **untrusted,
            )
            assert r.status_code == (200, 429)[n], forged
        assert r.json()["reason"] == "ip_throttle"


def test_the_decorator_on_sync_and_async_views() -> None:
    client = Client()
    r = post(client, "/v2/sync", {"mobile": VICTIM, "template": "signup"})
    assert r.json() == {"phone": VICTIM}
    assert [post(client, "/v2/sync", {"mobile": VICTIM}).status_code for _ in range(3)] == [200, 200, 429]

    async def run() -> list[int]:
        aclient = AsyncClient()
        statuses = []
        for _ in range(3):
            response = await aclient.post(
                "/v2/async", json.dumps({"mobile": "+8613900139000"}), content_type="application/json"
            )
            statuses.append(response.status_code)
        return statuses

    assert asyncio.run(run()) == [200, 200, 200], "async view, async guard"
    assert post(client, "/v2/async", {"mobile": "+8613900139000"}).status_code == 429, "the fourth"


def test_disabled_still_validates() -> None:
    with override_settings(SMSGUARD={**django_app.SMSGUARD, "ENABLED": False}):
        client = Client()
        assert all(post(client, "/sms/send", {"phone": VICTIM}).status_code == 200 for _ in range(5))
        assert post(client, "/sms/send", {"phone": "12"}).status_code == 400
        assert guard().status(VICTIM)[0].used == 0


def test_a_bad_setting_fails_when_the_app_loads() -> None:
    from django.core.handlers.wsgi import WSGIHandler

    from smsguard import ConfigError

    bad = override_settings(SMSGUARD={**django_app.SMSGUARD, "DAILY_CAP": "ten"})
    with bad, pytest.raises(ConfigError, match="DAILY_CAP"):
        WSGIHandler()  # builds the middleware chain, as the server does at start
    with (
        override_settings(SMSGUARD={"GUARD": "django_urls.nothing_here"}),
        pytest.raises(ConfigError, match="GUARD"),
    ):
        WSGIHandler()


@pytest.mark.redis_server
def test_manage_py_smsguard_against_redis(
    redis_server: RedisServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """manage.py smsguard sees what the app counted: the app's guard is built from the example
    project's own settings (its time zone too), and both sides run on the test's clock."""
    prefix = unique_prefix()
    env = {"REDIS_URL": redis_server.url, "SMSGUARD_SECRET": "django-cli", "SMSGUARD_KEY_PREFIX": prefix}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    project = runpy.run_path(str(PROJECT / "smsdemo" / "settings.py"))
    app_guard = Guard.from_settings(project["SMSGUARD"], prefix="")
    clock.advance(14 * 3600)  # 18:00 UTC, 02:00 in Shanghai: a guard on UTC would count another day
    app_guard.clock = clock
    for content in ("a", "b"):
        assert app_guard.check(VICTIM, content=content, ip="203.0.113.1").allowed
        clock.advance(60)  # the project's PhoneRate: one a minute
    app_guard.flush()  # its statistics, which it writes with its next write, within a second

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "smsguard", *args],
            cwd=PROJECT,
            env={**os.environ, **at(clock)},
            capture_output=True,
            text=True,
            timeout=60,
        )

    status = manage("--json", "status", "138 0013 8000")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counters"][0] == {
        "policy": "daily_cap",
        "used": 2,
        "limit": 10,
        "remaining": 8,
        "frees_in": None,
        "unit": "",
    }
    assert manage("reset", VICTIM).returncode == 0
    assert app_guard.status(VICTIM)[0].used == 0, "the app sees the reset"
    assert manage("status", "12").returncode == 2
    stats = manage("--json", "stats")
    assert stats.returncode == 0
    assert json.loads(stats.stdout)["attempts"] == 2


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/sms/outbox").status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    ("server", "storage"),
    [
        ("uvicorn", "memory"),
        pytest.param("uvicorn", "redis", marks=pytest.mark.redis_server),
        pytest.param("gunicorn", "redis", marks=pytest.mark.redis_server),
    ],
)
def test_the_example_project_over_loopback(server: str, storage: str, request: pytest.FixtureRequest) -> None:
    port = free_port()
    env = {**os.environ, "SMSGUARD_SECRET": "example"}
    if storage == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        env.update(REDIS_URL=redis_server.url, SMSGUARD_KEY_PREFIX=unique_prefix())
    command = {
        "uvicorn": [
            sys.executable,
            "-m",
            "uvicorn",
            "smsdemo.asgi:application",
            "--port",
            str(port),
            "--workers",
            "2" if storage == "redis" else "1",
        ],
        "gunicorn": [sys.executable, "-m", "gunicorn", "smsdemo.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2"],
    }[server]
    process = subprocess.Popen(
        command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base), f"{server} to answer", process=process)
        number = "+86 138 0013 8000"
        statuses = [httpx.post(f"{base}/sms/send", json={"phone": number}).status_code for _ in range(4)]
        assert statuses == [200, 429, 429, 429], "one a minute, across workers"
        assert httpx.post(f"{base}/sms/send", json={"phone": "12"}).status_code == 400
        wrong = httpx.get(f"{base}/sms/send")
        assert (wrong.status_code, wrong.headers["allow"]) == (405, "POST"), "not the view's 500"
        assert httpx.post(f"{base}/sms/verify", json=[1]).status_code == 400
        assert (
            httpx.post(
                f"{base}/sms/send", content=b"x" * 20_000, headers={"content-type": "application/json"}
            ).status_code
            == 413
        )
        assert httpx.post(f"{base}/v2/sms/send", json={"mobile": "+8613900139001"}).status_code == 200
        assert httpx.post(f"{base}/sms/send", json={"phone": "+8613800199999"}).status_code == 502
        assert httpx.post(f"{base}/sms/send", json={"phone": "+8613800199999"}).status_code == 502, "refunded"
    finally:
        process.terminate()
        process.wait(10)
