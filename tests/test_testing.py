"""smsguard's pytest plugin (smsguard.testing, the pytest11 entry point): real pytest runs, in a
subprocess, of sample projects that use it with each framework's test client."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CORE = """
import pytest
from smsguard import Guard, IPThrottle, SameContent

def test_guard_on_a_moving_clock(smsguard_guard, smsguard_clock):
    assert smsguard_guard.check("+447400123456", content="c").allowed
    second = smsguard_guard.check("+447400123456", content="c")
    assert (second.allowed, second.reason, second.retry_after) == (False, "same_content", 30)
    smsguard_clock.advance(30)
    assert smsguard_guard.check("+447400123456", content="c").allowed

@pytest.mark.smsguard(backend="fakeredis", default_region="CN", fail_mode="closed")
def test_fakeredis_and_guard_options(smsguard_guard, smsguard_backend):
    assert smsguard_backend.shared
    assert smsguard_guard.fail_mode == "closed"
    assert smsguard_guard.check("138 0013 8000", content="c").allowed
    assert smsguard_guard.check("+8613800138000", content="c").reason == "same_content"

async def run(guard):
    return [(await guard.acheck("+447400123456", content="c")).allowed for _ in range(2)]

@pytest.mark.smsguard(backend="fakeredis")
def test_fakeredis_async(smsguard_guard):
    import asyncio
    assert asyncio.run(run(smsguard_guard)) == [True, False]

def test_the_clock_refuses_to_go_back(smsguard_clock):
    with pytest.raises(ValueError):
        smsguard_clock.advance(-1)
"""

POLICIES = """
import pytest
from smsguard import IPThrottle

@pytest.fixture
def smsguard_policies():
    return [IPThrottle("2/hour")]
"""

POLICIES_TEST = """
def test_own_policies(smsguard_guard):
    results = [smsguard_guard.check(f"+4474001234{i:02d}", ip="198.51.100.1").allowed for i in range(3)]
    assert results == [True, True, False]
"""

FLASK = """
from flask import Flask, jsonify
from smsguard.adapters.flask import SMSGuard

app = Flask(__name__)  # built once, at import, as apps are: its guard outlives each test
app.config.update(SMSGUARD_SECRET="s", SMSGUARD_COUNTRIES="GB", SMSGUARD_DAILY_CAP=1)
sms = SMSGuard(app)

@app.post("/sms/send")
@sms.protect()
def send():
    return jsonify(sent=True)

def post(n=0):
    return app.test_client().post("/sms/send", json={"phone": f"+4474001234{n:02d}"})

def test_first_sends_one_and_is_refused_the_next():
    assert post().status_code == 200
    assert post().status_code == 429

def test_second_starts_afresh():
    assert post().status_code == 200, "the reset emptied the app's guard between tests"

def test_disabled(smsguard_disabled):
    assert [post().status_code for _ in range(3)] == [200, 200, 200]
    assert app.test_client().post("/sms/send", json={"phone": "12"}).status_code == 400
    smsguard_disabled(True)
    assert post(1).status_code == 200
    assert post(1).status_code == 429

def test_on_again_after_disabled():
    assert post(2).status_code == 200
    assert post(2).status_code == 429
"""

STARLETTE = """
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from smsguard.adapters.asgi import SMSGuardMiddleware

def make(guard):
    async def send(request):
        return JSONResponse({"sent": True})
    return Starlette(routes=[Route("/sms/send", send, methods=["POST"])],
                     middleware=[Middleware(SMSGuardMiddleware, guard=guard)])

def test_starlette_with_the_fixture_guard(smsguard_guard, smsguard_clock):
    client = TestClient(make(smsguard_guard))
    assert client.post("/sms/send", json={"phone": "+447400123456"}).status_code == 200
    assert client.post("/sms/send", json={"phone": "+447400123456"}).status_code == 429
    smsguard_clock.advance(60)
    assert client.post("/sms/send", json={"phone": "+447400123456"}).status_code == 200

def test_starlette_disabled(smsguard_guard, smsguard_disabled):
    client = TestClient(make(smsguard_guard))
    statuses = [client.post("/sms/send", json={"phone": "+447400123456"}).status_code for _ in range(3)]
    assert statuses == [200] * 3
    assert smsguard_guard.status("+447400123456")[0].used == 0, "nothing counted"
"""

DJANGO_CONFTEST = """
import django
from django.conf import settings

settings.configure(
    DEBUG=True, SECRET_KEY="t", ALLOWED_HOSTS=["*"], ROOT_URLCONF="urls", DATABASES={},
    INSTALLED_APPS=["smsguard.adapters.django"],
    MIDDLEWARE=["smsguard.adapters.django.SMSGuardMiddleware"],
    SMSGUARD={"SECRET": "s", "COUNTRIES": ["GB"], "DAILY_CAP": 1},
)
django.setup()
"""

DJANGO_URLS = """
from django.http import JsonResponse
from django.urls import path

def send(request):
    return JsonResponse({"sent": True})

urlpatterns = [path("sms/send", send)]
"""

DJANGO_TEST = """
import json
from django.test import Client, override_settings
from smsguard.adapters.django import guard

def post():
    return Client().post("/sms/send", json.dumps({"phone": "+447400123456"}), content_type="application/json")

def test_django_first():
    assert [post().status_code for _ in range(2)] == [200, 429]

def test_django_second_starts_afresh():
    assert post().status_code == 200

def test_django_disabled(smsguard_disabled):
    assert [post().status_code for _ in range(3)] == [200] * 3

def test_django_with_the_fixture_guard(smsguard_guard, smsguard_clock):
    with override_settings(SMSGUARD={"GUARD": smsguard_guard}):
        assert guard() is smsguard_guard
        assert [post().status_code for _ in range(2)] == [200, 429]
        smsguard_clock.advance(60)
        assert post().status_code == 200
"""


def test_a_sample_project_uses_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_core=CORE, test_flask=FLASK)
    pytester.makepyfile(test_starlette=STARLETTE)
    pytester.mkpydir("own").joinpath("conftest.py").write_text(POLICIES)
    pytester.path.joinpath("own", "test_own.py").write_text(POLICIES_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=11)


def test_a_django_project_uses_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(DJANGO_CONFTEST)
    pytester.makepyfile(urls=DJANGO_URLS, test_django=DJANGO_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)


def test_reset_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsmsguard_reset = false\n")
    pytester.makepyfile(test_flask=FLASK.split("def test_disabled")[0])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the reset emptied the app's guard between tests*"])


def test_the_plugin_can_be_left_out(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_core=CORE)
    result = pytester.runpytest_subprocess("-p", "no:smsguard", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixture 'smsguard_guard' not found*"])


def test_the_ini_chooses_fakeredis(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nsmsguard_backend = fakeredis\n")
    pytester.makepyfile(test_ini="def test_it(smsguard_backend):\n    assert smsguard_backend.shared")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
