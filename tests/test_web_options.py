"""What the peers' users reach for, in every adapter: exemption by client network and by a
callable, a Guard per route, rate headers on allowed responses, and Flask's errorhandler(429)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import django_app
import django_urls
import pytest
from conftest import Clock
from django.test import AsyncClient, Client, override_settings
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient as FastAPIClient
from flask import Flask, g, jsonify
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.exceptions import BadRequest, TooManyRequests

from smsguard import ConfigError, DailyCap, Decision, Guard, IPThrottle, PhoneRate
from smsguard.adapters import ratelimit
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.django import configured
from smsguard.adapters.fastapi import SMSGuard as FastAPIGuard
from smsguard.adapters.flask import Refused, SMSGuard
from smsguard.adapters.http import Gate

VICTIM = "+8613800138000"
OFFICE = ("10.1.2.3", 50000)
OUTSIDER = ("203.0.113.9", 50000)


def starlette_app(guard: Guard, routes: Any = ("POST /sms/send",), **options: Any) -> Starlette:
    async def send(request: Request) -> Response:
        admitted = request.state.smsguard
        decision = admitted if isinstance(admitted, Decision) else admitted.decision
        code = getattr(admitted, "code", None)
        return JSONResponse({"policy": decision.policy, "reason": decision.reason, "code": code})

    app = Starlette(
        routes=[Route(path, send, methods=["POST"]) for path in ("/sms/send", "/sms/strict", "/codes/send")]
    )
    app.add_middleware(SMSGuardMiddleware, guard=guard, routes=routes, **options)
    return app


def send(client: Any, path: str = "/sms/send", phone: str = VICTIM, **headers: str) -> Any:
    return client.post(path, json={"phone": phone}, headers=headers)


# -- exemption ----------------------------------------------------------------------------------


def test_an_exempt_network_is_let_through_uncounted(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(1), IPThrottle("2/hour")])
    app = starlette_app(guard, exempt_networks=["10.0.0.0/8", "2001:db8::/32"])
    with TestClient(app, client=OFFICE) as office, TestClient(app, client=OUTSIDER) as outsider:
        for _ in range(5):
            response = send(office)
            assert response.status_code == 200
            assert response.json() == {"policy": "exempt_networks", "reason": "exempt", "code": None}
        # The office's five counted nothing: the number's one a day is still there for others.
        assert send(outsider).json() == {"policy": None, "reason": None, "code": None}
        assert send(outsider).status_code == 429
        assert send(office).status_code == 200


def test_an_exempt_callable_and_one_that_fails(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(1)])

    def monitoring(request: Any) -> bool:
        if request.headers.get("x-probe") == "boom":
            raise ValueError("unexpected")
        return request.headers.get("x-probe") == "secret" and request.data.get("phone") == VICTIM

    with TestClient(starlette_app(guard, exempt=monitoring), client=OUTSIDER) as client:
        assert send(client, **{"x-probe": "secret"}).json()["policy"] == "exempt"
        assert send(client, **{"x-probe": "secret"}).json()["policy"] == "exempt"
        assert send(client, **{"x-probe": "boom"}).json()["policy"] is None  # judged, and counted
        assert send(client, **{"x-probe": "wrong"}).status_code == 429
        assert send(client, **{"x-probe": "boom"}).status_code == 429


def test_an_exempt_client_still_gets_a_code_and_a_code_check_is_never_exempt(
    make_guard: Callable[..., Guard],
) -> None:
    guard = make_guard([DailyCap(1)])
    routes = {"POST /codes/send": "issue", "POST /sms/send": "verify"}
    app = starlette_app(guard, routes=routes, exempt_networks=["10.0.0.0/8"])
    with TestClient(app, client=OFFICE) as office:
        first = send(office, "/codes/send").json()
        again = send(office, "/codes/send").json()
        assert first["policy"] == again["policy"] == "exempt_networks"
        assert first["code"] is not None
        assert first["code"] == again["code"]  # the number's live code
        wrong = "0" * len(first["code"]) if first["code"] != "0" * len(first["code"]) else "1" * 6
        refused = office.post("/sms/send", json={"phone": VICTIM, "code": wrong})
        assert refused.status_code == 400
        assert refused.json()["reason"] == "invalid_code"
        assert guard.check_code(VICTIM, first["code"]).ok


def test_exemption_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="exempt_networks"):
        Gate(exempt_networks=["10.0.0.0/33"])
    with pytest.raises(ConfigError, match="exempt must be a callable"):
        Gate(exempt="x-probe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rate_headers"):
        Gate(rate_headers="draft")


# -- a guard per route --------------------------------------------------------------------------


def test_a_route_of_the_middleware_with_its_own_guard(make_guard: Callable[..., Guard]) -> None:
    lenient, strict = make_guard([DailyCap(3)]), make_guard([DailyCap(1)], secret="strict-secret")
    app = starlette_app(lenient, routes={"POST /sms/send": {}, "POST /sms/strict": {"guard": strict}})
    with TestClient(app, client=OUTSIDER) as client:
        assert [send(client, "/sms/strict").status_code for _ in range(2)] == [200, 429]
        assert [send(client).status_code for _ in range(4)] == [200, 200, 200, 429]
    with pytest.raises(ConfigError, match="guard must be a Guard"):
        SMSGuardMiddleware(app, guard=lenient, routes={"POST /sms/send": {"guard": "strict"}})


class SendCode(BaseModel):
    phone: str


def test_fastapi_guard_per_route_and_rate_headers(make_guard: Callable[..., Guard]) -> None:
    lenient, strict = make_guard([DailyCap(3)]), make_guard([DailyCap(1)], secret="strict-secret")
    app = FastAPI()
    sms = FastAPIGuard(app, guard=lenient, rate_headers=True)
    by_lenient = Depends(sms.protect(SendCode))
    by_strict = Depends(sms.protect(SendCode, guard=strict, rate_headers="x-ratelimit"))

    @app.post("/sms/send")
    async def send_code(body: SendCode, decision: Decision = by_lenient) -> Any:
        return {"phone": decision.phone}

    @app.post("/sms/strict")
    async def send_strict(body: SendCode, decision: Decision = by_strict) -> Any:
        return {"phone": decision.phone}

    with FastAPIClient(app, client=OUTSIDER) as client:
        first = send(client)
        assert first.headers["ratelimit-policy"] == '"daily_cap";q=3'
        assert first.headers["ratelimit"].startswith('"daily_cap";r=2;t=')
        strict_first = send(client, "/sms/strict")
        assert strict_first.headers["x-ratelimit-limit"] == "1"
        assert strict_first.headers["x-ratelimit-remaining"] == "0"
        assert send(client, "/sms/strict").status_code == 429
        assert [send(client).status_code for _ in range(3)] == [200, 200, 429]


# -- rate headers -------------------------------------------------------------------------------


def test_rate_headers_say_what_the_attempt_left(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([PhoneRate("5/hour"), DailyCap(3), IPThrottle("100/hour")])
    with TestClient(starlette_app(guard, rate_headers=True), client=OUTSIDER) as client:
        first = send(client)
        policies = first.headers["ratelimit-policy"].split(", ")
        assert '"phone_rate";q=5;w=3600' in policies
        assert '"ip_throttle";q=100;w=3600' in policies
        assert '"daily_cap";q=3' in policies  # a calendar day: no fixed window
        state = dict(item.split(";", 1) for item in first.headers["ratelimit"].split(", "))
        assert state['"phone_rate"'] == "r=4;t=3600"
        assert state['"ip_throttle"'] == "r=99;t=3600"
        assert state['"daily_cap"'].startswith("r=2;t=")
        clock.advance(600)
        second = dict(item.split(";", 1) for item in send(client).headers["ratelimit"].split(", "))
        assert second['"phone_rate"'] == "r=3;t=3600"
        assert second['"daily_cap"'].startswith("r=1;t=")
    with TestClient(starlette_app(guard, rate_headers="x-ratelimit"), client=OUTSIDER) as client:
        last = send(client)
        assert last.headers["x-ratelimit-limit"] == "3"  # the tightest: the day's last one
        assert last.headers["x-ratelimit-remaining"] == "0"
        assert 0 < int(last.headers["x-ratelimit-reset"]) <= 86400
        assert "ratelimit" not in last.headers
    with TestClient(starlette_app(guard), client=OUTSIDER) as client:  # off by default
        assert "ratelimit" not in send(client, phone="+8613800138001").headers


def test_rate_headers_hide_the_anti_fraud_scopes(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(3), IPThrottle("100/hour")])
    decision = guard.check(VICTIM, ip="203.0.113.9")
    assert {q.policy for q in decision.quotas} == {"daily_cap", "ip_throttle"}
    shown = ratelimit.headers(decision, ratelimit.RATELIMIT, {"ip_throttle"})
    assert dict(shown)["ratelimit-policy"] == '"daily_cap";q=3'
    assert ratelimit.headers(decision, ratelimit.X_RATELIMIT, {"ip_throttle", "daily_cap"}) == []


# -- Flask --------------------------------------------------------------------------------------


def flask_app(guard: Guard, strict: Guard, **options: Any) -> Flask:
    app = Flask(__name__)
    sms = SMSGuard(app, guard=guard, **options)

    @app.post("/sms/send")
    @sms.protect()
    def send_code() -> Any:
        return jsonify(policy=g.smsguard.policy)

    @app.post("/sms/strict")
    @sms.protect(guard=strict)
    def send_strict() -> Any:
        return jsonify(policy=g.smsguard.policy)

    return app


def flask_send(app: Flask, path: str = "/sms/send", addr: str = OUTSIDER[0], **body: Any) -> Any:
    return app.test_client().post(path, json={"phone": VICTIM, **body}, environ_base={"REMOTE_ADDR": addr})


def test_flask_errorhandler_429_reaches_refusals(make_guard: Callable[..., Guard]) -> None:
    app = flask_app(make_guard([DailyCap(1)]), make_guard([DailyCap(1)], secret="strict-secret"))
    caught: list[Refused] = []

    @app.errorhandler(429)
    def too_many(exc: Any) -> Any:
        caught.append(exc)
        return jsonify(message="slow down", retry_after=exc.reply.status), 429, {"x-handled": "yes"}

    assert flask_send(app).status_code == 200
    denied = flask_send(app)
    assert denied.status_code == 429
    assert denied.json == {"message": "slow down", "retry_after": 429}
    assert denied.headers["x-handled"] == "yes"
    assert isinstance(caught[0], TooManyRequests)
    assert isinstance(caught[0], Refused)
    assert dict(caught[0].reply.headers)["retry-after"]
    # With no handler for it, a 400 is the Gate's own JSON, as before.
    bad = app.test_client().post("/sms/send", json={"phone": "12"}, environ_base={"REMOTE_ADDR": "1.2.3.4"})
    assert bad.status_code == 400
    assert bad.json["error"] == "invalid_request"


def test_flask_errorhandler_by_class_and_unhandled(make_guard: Callable[..., Guard]) -> None:
    app = flask_app(make_guard([DailyCap(1)]), make_guard([DailyCap(1)], secret="strict-secret"))
    seen: list[int] = []

    @app.errorhandler(Refused)
    def refused(exc: Refused) -> Any:
        seen.append(exc.reply.status)
        return exc.response  # the Gate's reply, as unhandled

    flask_send(app)
    assert flask_send(app).json["error"] == "rate_limited"
    bad = app.test_client().post("/sms/send", json={"phone": "12"}, environ_base={"REMOTE_ADDR": "1.2.3.4"})
    assert bad.json["error"] == "invalid_request"
    assert seen == [429, 400]
    assert any(issubclass(kind, BadRequest) for kind in Refused.__subclasses__())


def test_flask_refusal_returned_where_nothing_would_handle_it(make_guard: Callable[..., Guard]) -> None:
    """Unhandled, the refusal is returned as the view's response (no exception through Flask's
    handler lookup); a blueprint's handler, a handler of a base class, and trapped HTTP
    exceptions still see it raised."""
    from flask import Blueprint

    app = Flask(__name__)
    sms = SMSGuard(app, guard=make_guard([DailyCap(1)]))
    raised: list[str] = []

    def view() -> Any:
        return jsonify(sent=True)

    @app.after_request
    def after(response: Any) -> Any:
        response.headers["x-after"] = "yes"  # after_request hooks run on a returned refusal too
        return response

    app.add_url_rule("/sms/send", "send", sms.protect()(view), methods=["POST"])
    blueprint = Blueprint("codes", __name__)
    blueprint.add_url_rule("/send", "send", sms.protect()(view), methods=["POST"])

    @blueprint.errorhandler(Exception)
    def any_error(exc: Exception) -> Any:
        raised.append(type(exc).__name__)
        return jsonify(handled=True), 429

    app.register_blueprint(blueprint, url_prefix="/codes")
    assert flask_send(app).status_code == 200
    denied = flask_send(app)
    assert (denied.status_code, denied.json["error"]) == (429, "rate_limited")
    assert denied.headers["retry-after"]
    assert denied.headers["x-after"] == "yes"
    assert raised == [], "no handler: nothing raised"
    assert flask_send(app, "/codes/send").json == {"handled": True}
    assert raised == ["RefusedTooManyRequests"], "the blueprint's handler for Exception sees it"

    app.config.update(TRAP_HTTP_EXCEPTIONS=True, TESTING=True)  # trapped, and propagated to the test
    with pytest.raises(TooManyRequests):
        flask_send(app)


def test_flask_guard_per_view_exemption_and_rate_headers(make_guard: Callable[..., Guard]) -> None:
    guard, strict = make_guard([DailyCap(3)]), make_guard([DailyCap(1)], secret="strict-secret")
    app = flask_app(guard, strict, exempt_networks=["10.0.0.0/8"], rate_headers=True)
    assert [flask_send(app, "/sms/strict").status_code for _ in range(2)] == [200, 429]
    first = flask_send(app)
    assert first.headers["ratelimit"].startswith('"daily_cap";r=2;t=')
    assert flask_send(app, addr=OFFICE[0]).json == {"policy": "exempt_networks"}
    assert "ratelimit" not in flask_send(app, addr=OFFICE[0]).headers  # nothing counted
    assert [flask_send(app).status_code for _ in range(3)] == [200, 200, 429]


def test_flask_settings_exempt_networks_and_rate_headers(make_guard: Callable[..., Guard]) -> None:
    app = Flask(__name__)
    app.config.update(SMSGUARD_EXEMPT_NETWORKS="10.0.0.0/8,192.0.2.1", SMSGUARD_RATE_HEADERS="x-ratelimit")
    sms = SMSGuard(app, guard=make_guard([DailyCap(1)]))

    @app.post("/sms/send")
    @sms.protect()
    def send_code() -> Any:
        return jsonify(policy=g.smsguard.policy)

    assert flask_send(app, addr="192.0.2.1").json == {"policy": "exempt_networks"}
    counted = flask_send(app)
    assert counted.headers["x-ratelimit-remaining"] == "0"
    assert flask_send(app).status_code == 429
    assert Gate.settings({"SMSGUARD_RATE_HEADERS": "true"}) == {"rate_headers": True}


# -- Django -------------------------------------------------------------------------------------


@pytest.fixture
def fresh_django() -> Any:
    configured.clear(setting="SMSGUARD")
    yield
    configured.clear(setting="SMSGUARD")
    django_urls.strict = None


def django_post(client: Client, path: str, addr: str = OUTSIDER[0]) -> Any:
    return client.post(path, json.dumps({"phone": VICTIM}), content_type="application/json", REMOTE_ADDR=addr)


def test_django_route_and_view_guards_exemption_and_rate_headers(fresh_django: Any) -> None:
    django_urls.strict = Guard([DailyCap(1)], secret="s", default_region="CN")
    routes = {"POST /sms/send": {"guard": "django_urls.strict", "rate_headers": True}}
    settings = {**django_app.SMSGUARD, "ROUTES": routes, "EXEMPT_NETWORKS": ["10.0.0.0/8"]}
    with override_settings(SMSGUARD=settings):
        client = Client()
        first = django_post(client, "/sms/send")
        assert first.status_code == 200
        assert first.headers["ratelimit"].startswith('"daily_cap";r=0;t=')
        assert django_post(client, "/sms/send").status_code == 429  # the route's guard: one a day
        # The view's protect(guard="django_urls.strict"): the same guard, spent.
        assert django_post(client, "/v2/strict").status_code == 429
        office = django_post(client, "/v2/strict", addr="10.9.9.9")
        assert office.json() == {"phone": VICTIM, "policy": "exempt_networks"}


def test_django_view_guard_through_the_async_client(fresh_django: Any) -> None:
    django_urls.strict = Guard([DailyCap(2)], secret="s", default_region="CN")
    with override_settings(SMSGUARD={**django_app.SMSGUARD}):
        client = AsyncClient()

        async def run() -> list[Any]:
            return [
                await client.post(
                    "/v2/strict",
                    json.dumps({"phone": VICTIM}),
                    content_type="application/json",
                    REMOTE_ADDR=OUTSIDER[0],
                )
                for _ in range(3)
            ]

        responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert responses[0].headers["x-ratelimit-remaining"] == "1"
    assert responses[1].headers["x-ratelimit-remaining"] == "0"
