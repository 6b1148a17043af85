"""The Flask extension and decorator through a real Flask app and its test client."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock
from flask import Flask, g, jsonify, request

from smsguard import ConfigError, DailyCap, Guard, IPThrottle, SameContent
from smsguard.adapters.flask import SMSGuard, protect

ENV = {"REMOTE_ADDR": "203.0.113.9"}


def make_app(guard: Guard | None = None, config: dict[str, Any] | None = None, **options: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    sms = SMSGuard(guard=guard, **options)
    sms.init_app(app)  # the application-factory way

    @app.post("/sms/send")
    @sms.protect()
    def send() -> Any:
        body = request.get_data(as_text=True)
        if "explode" in body:
            raise RuntimeError("the SMS provider is down")
        if "reject" in body:
            return jsonify(sent=False), 502
        decision = g.smsguard
        return jsonify(
            echo=body, json=request.get_json(silent=True), phone=decision.phone, country=decision.country
        )

    @app.post("/sms/mobile")
    @sms.protect(phone="mobile")
    def send_mobile() -> Any:
        return jsonify(sent=True)

    app.extensions["test_sms"] = sms
    return app


@pytest.fixture
def guard(make_guard: Callable[..., Guard]) -> Guard:
    return make_guard([SameContent(), DailyCap(3), IPThrottle("100/hour")])


def post(app: Flask, path: str = "/sms/send", **kwargs: Any) -> Any:
    return app.test_client().post(path, environ_base=kwargs.pop("environ_base", ENV), **kwargs)


def test_allowed_reaches_the_view_with_its_body(guard: Guard) -> None:
    app = make_app(guard)
    body = json.dumps({"phone": "138 0013 8000", "note": "unchanged ✓"})
    response = post(app, data=body, content_type="application/json")
    assert response.status_code == 200
    assert response.get_json() == {
        "echo": body,
        "json": json.loads(body),
        "phone": "+8613800138000",
        "country": "CN",
    }


def test_chunked_body_without_length_is_read(guard: Guard) -> None:
    body = json.dumps({"phone": "13800138000"}).encode()
    headers = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    # What a server hands over for a chunked body: no length, a stream that ends by itself.
    server = {"wsgi.input_terminated": True}
    response = post(make_app(guard), input_stream=io.BytesIO(body), headers=headers, environ_overrides=server)
    assert response.status_code == 200
    assert response.get_json()["phone"] == "+8613800138000"


class BrokenChunks(io.BytesIO):
    """A chunked body the server fails to read: gunicorn raises its own exception (not an
    OSError) for a malformed chunk, from the first read."""

    def read(self, size: int | None = -1) -> bytes:
        raise ValueError("Invalid chunk size: 'zz'")


def test_a_body_the_server_cannot_read_is_a_400(guard: Guard) -> None:
    headers = {"Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    server = {"wsgi.input_terminated": True}
    response = post(make_app(guard), input_stream=BrokenChunks(), headers=headers, environ_overrides=server)
    assert response.status_code == 400, "the client's broken framing, not a 500"
    assert response.get_json() == {
        "error": "invalid_request",
        "detail": "the body could not be read: send it whole, in valid chunks",
    }


def test_form_query_and_per_view_field(guard: Guard) -> None:
    app = make_app(guard)
    assert post(app, data={"phone": "13800138000"}).status_code == 200
    assert post(app, "/sms/send?phone=13900139000").status_code == 200
    assert post(app, "/sms/mobile", json={"mobile": "13700137000"}).status_code == 200
    assert post(app, "/sms/mobile", json={"phone": "13700137000"}).status_code == 400


def test_denied_is_429_with_headers(guard: Guard, clock: Clock) -> None:
    app = make_app(guard)
    assert post(app, json={"phone": "13800138000"}).status_code == 200
    clock.advance(0.5)
    response = post(app, json={"phone": "008613800138000"})
    assert response.status_code == 429
    assert response.get_json() == {
        "error": "rate_limited",
        "policy": "same_content",
        "reason": "same_content",
        "retry_after": 30,
    }
    assert response.headers["Retry-After"] == "30"
    assert response.headers["RateLimit-Policy"] == '"same_content";q=1'
    assert response.headers["RateLimit"] == '"same_content";r=0;t=30'


@pytest.mark.parametrize(
    ("kwargs", "status", "detail"),
    [
        ({"json": {"phone": "12"}}, 400, "'12' is not a valid number for region CN"),
        ({"json": {}}, 400, "missing phone number"),
        ({"data": "{oops", "content_type": "application/json"}, 400, "not valid JSON"),
        ({"data": "<a/>", "content_type": "text/xml"}, 400, "unsupported content type"),
        ({"json": {"phone": 13800138000}}, 400, "phone must be a string"),
        ({"json": {"phone": "13800138000", "pad": "x" * 20000}}, 413, "over 16384 bytes"),
    ],
)
def test_bad_input(guard: Guard, kwargs: dict[str, Any], status: int, detail: str) -> None:
    response = post(make_app(guard), **kwargs)
    assert response.status_code == status
    assert detail in response.get_json()["detail"]


def test_refund_when_the_view_fails(guard: Guard) -> None:
    app = make_app(guard)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    for _ in range(5):
        assert post(app, json={"phone": "13800138000", "x": "reject"}).status_code == 502
        assert post(app, json={"phone": "13800138000", "x": "explode"}).status_code == 500
    assert post(app, json={"phone": "13800138000"}).status_code == 200
    assert guard.check("13800138000", content="other", ip="203.0.113.9").remaining["daily_cap"] == 1


def test_client_ip_from_trusted_proxy_only(make_guard: Callable[..., Guard]) -> None:
    app = make_app(make_guard([IPThrottle("1/hour")]), trusted_proxies=["10.0.0.0/8"])
    spoof = {"X-Forwarded-For": "198.51.100.77"}
    assert post(app, json={"phone": "13800138000"}, headers=spoof).status_code == 200
    spoof2 = {"X-Forwarded-For": "198.51.100.78"}
    assert post(app, json={"phone": "13900139000"}, headers=spoof2).status_code == 429, "header ignored"
    via = {"REMOTE_ADDR": "10.9.9.9"}
    assert post(app, json={"phone": "13800138000"}, headers=spoof, environ_base=via).status_code == 200
    assert post(app, json={"phone": "13900139000"}, headers=spoof, environ_base=via).status_code == 429
    assert post(app, json={"phone": "13900139000"}, headers=spoof2, environ_base=via).status_code == 200


def test_guard_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMSGUARD_SECRET", raising=False)
    config = {
        "SMSGUARD_DEFAULT_REGION": "CN",
        "SMSGUARD_DAILY_CAP": 2,
        "SMSGUARD_SAME_CONTENT_WINDOW": 0,
        "SMSGUARD_PHONE_RATE": "",
        "SMSGUARD_WHITELIST": ["+8613800000000"],
        "SMSGUARD_PHONE_FIELD": "mobile",
        "SMSGUARD_MAX_BODY": 64,
    }
    app = Flask(__name__)
    app.config.update(config)
    sms = SMSGuard(app)

    @app.post("/code")
    @sms.protect()
    def code() -> Any:
        return jsonify(ok=True)

    def send(phone: str) -> int:
        return int(app.test_client().post("/code", json={"mobile": phone}, environ_base=ENV).status_code)

    with app.app_context():
        assert [p.name for p in sms.guard.policies] == ["suspend", "whitelist", "daily_cap", "ip_throttle"]
    assert [send("13800138000") for _ in range(3)] == [200, 200, 429]
    assert [send("13800000000") for _ in range(3)] == [200, 200, 200], "whitelisted"
    with app.app_context():
        sms.guard.suspend()
    assert send("13900139000") == 503, "suspended: sending is off, no fault of the client"
    response = app.test_client().post(
        "/code", json={"mobile": "13900139000", "p": "x" * 64}, environ_base=ENV
    )
    assert response.status_code == 413


@pytest.mark.parametrize("enabled", [False, "false", "0", "off"])
def test_disabled_by_config(guard: Guard, enabled: Any) -> None:
    """Off: nothing is counted, yet the view still gets the validated number, as when on."""
    app = make_app(guard, {"SMSGUARD_ENABLED": enabled})
    responses = [post(app, json={"phone": "138 0013 8000"}) for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert {r.get_json()["phone"] for r in responses} == {"+8613800138000"}
    assert {r.get_json()["country"] for r in responses} == {"CN"}, "as the guard's own decisions"
    assert post(app, json={"phone": "12"}).status_code == 400, "still validated"


def test_settings_from_environment_strings(make_guard: Callable[..., Guard]) -> None:
    config = {
        "SMSGUARD_MAX_BODY": "100",
        "SMSGUARD_REFUND_ON": "502",
        "SMSGUARD_TRUSTED_PROXIES": "10.0.0.0/8",
        "SMSGUARD_PROXY_HEADER": "X-Real-IP",
        "SMSGUARD_PHONE_FIELD": "phone",
        "SMSGUARD_ENABLED": "true",
    }
    app = make_app(make_guard([DailyCap(2), IPThrottle("1/hour")]), config)
    behind = {"REMOTE_ADDR": "10.0.0.2"}  # a trusted proxy: its X-Real-IP names the client

    def send(phone: str, client: str, note: str = "") -> int:
        body = {"phone": phone, "note": note}
        return int(post(app, json=body, headers={"X-Real-IP": client}, environ_base=behind).status_code)

    assert post(app, json={"phone": "13800138000", "pad": "x" * 100}).status_code == 413
    assert [send("13800138000", "198.51.100.1", "reject") for _ in range(3)] == [502] * 3  # refunded
    assert send("13800138000", "198.51.100.1") == 200, "the 502s gave their hits back"
    assert send("13900139000", "198.51.100.1") == 429, "one an hour for this client"
    assert send("13900139000", "198.51.100.2") == 200, "another client, by the header"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"SMSGUARD_MAX_BODY": "lots"}, "SMSGUARD_MAX_BODY='lots' is not an integer"),
        ({"SMSGUARD_REFUND_ON": "502,bad"}, "SMSGUARD_REFUND_ON='502,bad' is not a list of integers"),
        ({"SMSGUARD_ENABLED": "perhaps"}, "SMSGUARD_ENABLED='perhaps' is not a boolean"),
        ({"SMSGUARD_TRUSTED_PROXIES": "10.0.0.0/33"}, "trusted_proxies"),
    ],
)
def test_unreadable_settings_fail_at_init(guard: Guard, config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_app(guard, config)


@pytest.mark.parametrize("overrides", [{"phone_field": "mobile"}, {"phone": None}, {"max_body": -1}])
def test_per_view_overrides_are_checked_when_decorating(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SMSGuard().protect(**overrides)


def test_protect_without_the_extension(make_guard: Callable[..., Guard]) -> None:
    app = Flask(__name__)

    @app.post("/code")
    @protect(make_guard([DailyCap(1)]), phone="to")
    async def code() -> Any:  # async views work too
        return {"ok": True}

    client = app.test_client()
    assert client.post("/code", json={"to": "13800138000"}, environ_base=ENV).status_code == 200
    assert client.post("/code", json={"to": "13800138000"}, environ_base=ENV).status_code == 429


def test_uninitialised_extension_is_a_config_error() -> None:
    app = Flask(__name__)
    sms = SMSGuard()
    with app.app_context(), pytest.raises(ConfigError, match="init_app"):
        _ = sms.guard


def test_the_any_country_warning_points_at_the_apps_code() -> None:
    """Not into smsguard: at the line that built the extension, whichever way the guard came."""
    from smsguard.checks import AnyCountry

    for made in (lambda app: SMSGuard(app), lambda app: SMSGuard(app, guard=Guard([DailyCap(3)]))):
        with pytest.warns(AnyCountry, match="any country") as said:
            made(Flask(__name__))
        assert [w.filename for w in said] == [__file__]
    with pytest.warns(AnyCountry) as said:
        Guard.from_settings({})
    assert [w.filename for w in said] == [__file__]
