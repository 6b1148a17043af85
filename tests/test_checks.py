"""The start-up checks (smsguard.checks): Django's system checks through its real check framework
(call_command and the example project's manage.py check), Flask's and the ASGI middleware's log
warnings at start, the run-time word on a forwarding header nobody trusts, and smsguard check."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import django_app
import pytest
import redis
import redis.asyncio
from conftest import unique_prefix
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from flask import Flask, jsonify
from servers import RedisServer, free_port
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from smsguard import Guard, MemoryBackend, RedisBackend
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.django import configured
from smsguard.adapters.flask import SMSGuard
from smsguard.checks import findings

PROJECT = Path(__file__).parent.parent / "examples" / "django_project"
SAFE = {"SECRET": "s", "COUNTRIES": ["CN"], "DEFAULT_REGION": "CN", "ROUTES": ["POST /sms/send"]}


def ids(found: Any) -> set[str]:
    return {f.id for f in found}


@pytest.fixture
def evicting(redis_server: RedisServer) -> Iterator[str]:
    """The suite's Redis with an evicting policy for the test, then noeviction again."""
    client = redis.Redis.from_url(redis_server.url)
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        yield redis_server.url
    finally:
        client.config_set("maxmemory-policy", "noeviction")
        client.close()


# -- the findings -----------------------------------------------------------------------------


def test_a_safe_guard_has_no_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    guard = Guard.from_settings({"SMSGUARD_SECRET": "s", "SMSGUARD_COUNTRIES": "GB"})
    assert findings(guard) == []


def test_each_finding_and_when_it_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    guard = Guard(backend=MemoryBackend(), fail_mode="open")
    assert ids(findings(guard)) == {"W001", "W002", "W003", "W005"}
    assert ids(findings(guard, production=False)) == {"W001", "W005"}, "secret and fail mode: production's"
    assert "W004" in ids(findings(guard, trusted_proxies=False, proxied="USE_X_FORWARDED_HOST"))
    assert "W004" not in ids(findings(guard, trusted_proxies=True, proxied="USE_X_FORWARDED_HOST"))
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    assert "W001" not in ids(findings(guard))


def test_countries_in_shadow_are_no_country_list() -> None:
    watching = Guard.from_settings(
        {"SMSGUARD_SECRET": "s", "SMSGUARD_COUNTRIES": "GB", "SMSGUARD_SHADOW": "countries"}
    )
    assert "W005" in ids(findings(watching)), "in shadow, it still texts any country"


@pytest.mark.redis_server
def test_an_evicting_redis_is_found(evicting: str) -> None:
    guard = Guard(backend=RedisBackend.from_url(evicting, prefix=unique_prefix()), secret="s")
    found = {f.id: f for f in findings(guard)}
    assert "allkeys-lru" in found["W006"].message
    assert "W006" not in ids(findings(guard, backend=False)), "backend=False asks it nothing"


def test_a_silent_backend_is_said() -> None:
    guard = Guard(backend=RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0"), secret="s")
    assert "W007" in ids(findings(guard))
    unasked = RedisBackend(
        make_aclient=lambda: redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    )
    assert "W007" not in ids(findings(Guard(backend=unasked, secret="s"))), "async alone: not asked"


# -- Django: the check framework --------------------------------------------------------------


def django_check(**settings: Any) -> str:
    out, err = StringIO(), StringIO()
    with override_settings(**settings):
        configured.clear(setting="SMSGUARD")
        try:
            call_command("check", stdout=out, stderr=err)
        finally:
            configured.clear(setting="SMSGUARD")
    return out.getvalue() + err.getvalue()


def test_django_check_is_quiet_on_a_safe_set_up() -> None:
    said = django_check(SMSGUARD=SAFE, DEBUG=False)
    assert "smsguard" not in said
    assert "no issues" in said


def test_django_check_names_each_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    unsafe = {"DEFAULT_REGION": "CN", "FAIL_MODE": "open", "ROUTES": ["POST /sms/send"]}
    said = django_check(SMSGUARD=unsafe, DEBUG=False, USE_X_FORWARDED_HOST=True)
    for code in ("W001", "W002", "W003", "W004", "W005"):
        assert f"smsguard.{code}" in said, said
    assert "USE_X_FORWARDED_HOST says the app is behind a proxy" in said
    assert "HINT: Set SMSGUARD_TRUSTED_PROXIES" in said
    debugging = django_check(SMSGUARD=unsafe, DEBUG=True)
    assert "smsguard.W003" not in debugging, "not in production"
    assert "smsguard.W002" not in debugging
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    trusted = django_check(
        SMSGUARD={**SAFE, "TRUSTED_PROXIES": ["10.0.0.0/8"]}, SECURE_PROXY_SSL_HEADER=("X", "y")
    )
    assert "smsguard" not in trusted


def test_django_check_fails_at_warning_level_for_ci() -> None:
    with override_settings(SMSGUARD={"SECRET": "s", "ROUTES": ["POST /sms/send"]}):
        configured.clear(setting="SMSGUARD")
        with pytest.raises(SystemCheckError, match=r"smsguard\.W005"):
            call_command("check", fail_level="WARNING", stdout=StringIO(), stderr=StringIO())
    configured.clear(setting="SMSGUARD")


def test_a_bad_smsguard_is_a_django_error() -> None:
    with pytest.raises(SystemCheckError, match=r"smsguard\.E001.*SMSGUARD\['DAILY_CAP'\]='ten'"):
        django_check(SMSGUARD={**SAFE, "DAILY_CAP": "ten"})


@pytest.mark.redis_server
def test_django_check_sees_an_evicting_redis(evicting: str) -> None:
    said = django_check(SMSGUARD={**SAFE, "STORAGE_URI": evicting, "KEY_PREFIX": unique_prefix()})
    assert "smsguard.W006" in said
    assert "allkeys-lru" in said


def manage_check(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMSGUARD_") and k != "WEB_CONCURRENCY"}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_projects_manage_py_check() -> None:
    done = manage_check(SMSGUARD_FAIL_MODE="open", WEB_CONCURRENCY="4")
    assert done.returncode == 0, done.stderr  # warnings: the server still starts
    said = done.stdout + done.stderr
    for code in ("W001", "W002", "W003", "W005"):
        assert f"smsguard.{code}" in said, said
    done = manage_check(SMSGUARD_SECRET="x", SMSGUARD_COUNTRIES="CN")
    assert (done.returncode, "smsguard" in done.stdout + done.stderr) == (0, False), done.stderr
    assert "no issues" in done.stdout
    done = manage_check(SMSGUARD_DAILY_CAP="ten")
    assert done.returncode == 1
    assert "smsguard.E001" in done.stderr


# -- Flask and ASGI: log warnings at start ----------------------------------------------------


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "smsguard" and r.levelno == logging.WARNING]


def flask_app(**config: Any) -> tuple[Flask, SMSGuard]:
    app = Flask(__name__)
    app.config.update({f"SMSGUARD_{k}": v for k, v in config.items()})
    sms = SMSGuard(app)

    @app.post("/sms/send")
    @sms.protect()
    def send() -> Any:
        return jsonify(sent=True)

    return app, sms


def test_flask_logs_the_findings_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "smsguard"):
        flask_app(FAIL_MODE="open", DEFAULT_REGION="CN")
    messages = " ".join(said(caplog))
    assert 'fail_mode="open" in production' in messages
    assert "no secret" in messages
    assert "any country" in messages
    caplog.clear()
    with caplog.at_level(logging.WARNING, "smsguard"):
        flask_app(SECRET="s", COUNTRIES="CN", DEFAULT_REGION="CN")
    assert said(caplog) == []


def test_flask_in_debug_leaves_production_findings_out(caplog: pytest.LogCaptureFixture) -> None:
    app = Flask(__name__)
    app.debug = True
    app.config.update(SMSGUARD_FAIL_MODE="open", SMSGUARD_COUNTRIES="CN")
    with caplog.at_level(logging.WARNING, "smsguard"):
        SMSGuard(app)
    assert said(caplog) == []


def test_a_forwarding_header_with_no_trusted_proxy_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = flask_app(SECRET="s", COUNTRIES="CN", DEFAULT_REGION="CN", IP_RATE="2/hour", PHONE_RATE=0)
    client = app.test_client()
    with caplog.at_level(logging.WARNING, "smsguard"):
        for n in range(3):
            client.post(
                "/sms/send",
                json={"phone": f"1380013800{n}"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
                environ_base={"REMOTE_ADDR": "10.0.0.5"},
            )
    proxy = [m for m in said(caplog) if "carries a x-forwarded-for header" in m]
    assert len(proxy) == 1
    assert "10.0.0.5" in proxy[0]


def asgi_app(guard: Guard) -> Starlette:
    async def send(request: Any) -> JSONResponse:
        return JSONResponse({"sent": True})

    return Starlette(
        routes=[Route("/sms/send", send, methods=["POST"])],
        middleware=[Middleware(SMSGuardMiddleware, guard=guard)],
    )


@pytest.mark.redis_server
def test_asgi_logs_at_start_and_asks_redis_at_the_lifespan(
    evicting: str, caplog: pytest.LogCaptureFixture
) -> None:
    guard = Guard(
        backend=RedisBackend.from_url(evicting, prefix=unique_prefix()), secret="s", fail_mode="open"
    )
    app = asgi_app(guard)
    with caplog.at_level(logging.WARNING, "smsguard"), TestClient(app) as client:
        assert client.post("/sms/send", json={"phone": "+447400123456"}).status_code == 200
    messages = said(caplog)
    assert any("any country" in m for m in messages)
    assert any('fail_mode="open"' in m for m in messages)
    assert len([m for m in messages if "maxmemory-policy is allkeys-lru" in m]) == 1, "said once, at start"
    caplog.clear()
    with caplog.at_level(logging.WARNING, "smsguard"), TestClient(app):
        pass
    assert not [m for m in said(caplog) if "any country" in m], "once per guard"


# -- smsguard check ---------------------------------------------------------------------------


def test_smsguard_check_prints_the_warnings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGUARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "smsguard", "check"],
        env={**env, "SMSGUARD_FAIL_MODE": "open"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, "warnings do not fail the check"
    assert "warn fail mode (W003)" in done.stdout
    assert "warn countries (W005)" in done.stdout
    assert done.stderr == "", "the command lists it: no warning on stderr"
    done = subprocess.run(
        [sys.executable, "-m", "smsguard", "--json", "check"],
        env={**env, "SMSGUARD_FAIL_MODE": "open"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [row["check"] for row in json.loads(done.stdout)] == ["backend"], "the JSON: the checks alone"
    assert "warn fail mode (W003)" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "smsguard", "check"],
        env={**env, "SMSGUARD_SECRET": "s", "SMSGUARD_COUNTRIES": "GB"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "warn" not in done.stdout


assert django_app  # configured for this process
