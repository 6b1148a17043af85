"""The framework-free part of the adapters: parsing, client IP, responses."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from ipaddress import ip_address
from typing import Any
from urllib.parse import parse_qsl

import flask
import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from smsguard import (
    Attempt,
    Blacklist,
    ConfigError,
    DailyCap,
    Decision,
    Deny,
    Guard,
    InvalidPhone,
    LearnedCap,
    SameContent,
    Suspend,
)
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.fastapi import SMSGuard
from smsguard.adapters.fields import _form
from smsguard.adapters.flask import protect
from smsguard.adapters.http import Gate, Incoming, Problem, Reply, exchange_io
from smsguard.drive import drive
from smsguard.policies import Review

CLIENT = ip_address("203.0.113.9")


def incoming(
    body: bytes = b"",
    content_type: str = "",
    peer: str | None = "203.0.113.9",
    query: str = "",
    **headers: str,
) -> Incoming:
    all_headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if content_type:
        all_headers["content-type"] = content_type
    return Incoming("POST", "/sms/send", all_headers, query, body, peer)


def reply_json(reply: Reply) -> dict[str, object]:
    assert ("content-type", "application/json") in reply.headers
    return dict(json.loads(reply.body))


@pytest.mark.parametrize(
    ("status", "steps"),
    [
        (200, ["check", "run", "endpoint"]),
        # Not sent: the refund's flow runs in the same drive, its write sent to the backend.
        (500, ["check", "run", "endpoint", "refund", "apply"]),
    ],
)
def test_one_request_is_one_drive(status: int, steps: list[str]) -> None:
    """The exchange runs the guard's flow itself: the backend's steps reach the exchange's own
    I/O, so a request is one drive (no Guard.check driving a flow of its own)."""
    guard = Guard([DailyCap(1)], default_region="CN", secret="s", statistics=False, clock=lambda: 1.7e9)
    io = exchange_io(guard, lambda admitted: status)
    seen: list[str] = []

    def recorded(step: tuple[Any, ...]) -> Any:
        seen.append(step[0])
        return io(step)

    body = json.dumps({"phone": "13800138000"}).encode()
    assert drive(Gate().exchange(incoming(body, "application/json"), body), recorded) is None
    assert seen == steps
    assert guard.check("13800138000").allowed is (status != 200), "counted, or given back"


def test_json_form_and_query_sources() -> None:
    gate = Gate(content="template")
    body = json.dumps({"phone": "138 0013 8000", "template": "login"}).encode()
    assert gate.arguments(incoming(body, "application/json; charset=utf-8")) == {
        "phone": "138 0013 8000",
        "content": "login",
        "ip": CLIENT,
    }
    form = incoming(b"phone=%2B8613800138000&template=signup", "application/x-www-form-urlencoded")
    assert gate.arguments(form) == {"phone": "+8613800138000", "content": "signup", "ip": CLIENT}
    query = incoming(query="phone=13800138000")
    assert gate.arguments(query)["phone"] == "13800138000"  # type: ignore[index]


def test_default_content_is_the_route() -> None:
    args = Gate().arguments(incoming(b'{"phone": "13800138000"}', "application/json"))
    assert args["content"] == "POST /sms/send"  # type: ignore[index]


def test_callable_fields() -> None:
    gate = Gate(phone=lambda r: r.data["user"]["mobile"], content=lambda r: r.headers.get("x-template"))
    body = json.dumps({"user": {"mobile": "13800138000"}}).encode()
    args = gate.arguments(incoming(body, "application/json", x_template="reset"))
    assert args == {"phone": "13800138000", "content": "reset", "ip": CLIENT}


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/json", "must be an object"),
        (b'{"phone": 13800138000}', "application/json", "phone must be a string, not int"),
        (b'{"name": "x"}', "application/json", "missing phone number: send it as 'phone'"),
        (b"<xml/>", "application/xml", "unsupported content type 'application/xml'"),
        (b"phone=1", "", "unsupported content type 'none'"),
        (b"phone=\xff\xfe", "application/x-www-form-urlencoded", "not UTF-8"),
        (b"[" * 100000 + b"]" * 100000, "application/json", "not valid JSON"),
    ],
)
def test_bad_requests_are_400_with_a_reason(body: bytes, content_type: str, detail: str) -> None:
    reply = Gate().arguments(incoming(body, content_type))
    assert isinstance(reply, Reply)
    assert reply.status == 400
    assert detail in str(reply_json(reply)["detail"])


def test_invalid_phone_reply() -> None:
    reply = Gate().invalid(InvalidPhone("'12' is not a valid number for region CN: too short"))
    assert (reply.status, reply_json(reply)) == (
        400,
        {"error": "invalid_request", "detail": "'12' is not a valid number for region CN: too short"},
    )


# -- client IP -----------------------------------------------------------------------------


PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


XFF, FWD = "x-forwarded-for", "forwarded"


@pytest.mark.parametrize(
    ("peer", "headers", "header", "client"),
    [
        ("203.0.113.9", {}, XFF, "203.0.113.9"),
        # An untrusted peer's forwarding headers are ignored: they are the client's own words.
        ("203.0.113.9", {"x-forwarded-for": "198.51.100.1"}, XFF, "203.0.113.9"),
        ("203.0.113.9", {"forwarded": "for=198.51.100.1"}, FWD, "203.0.113.9"),
        # From a trusted proxy: the right-most hop that is not a trusted proxy.
        ("10.0.0.2", {"x-forwarded-for": "198.51.100.1"}, XFF, "198.51.100.1"),
        ("10.0.0.2", {"x-forwarded-for": "6.6.6.6, 198.51.100.1, 10.0.0.7"}, XFF, "198.51.100.1"),
        (
            "10.0.0.2",
            {"forwarded": 'for=6.6.6.6, for="[2001:db8::17]:4711";proto=https'},
            FWD,
            "2001:db8::17",
        ),
        # Only the header the proxy sets is read: one it passes through untouched is the client's.
        ("10.0.0.2", {"forwarded": "for=6.6.6.6", "x-forwarded-for": "198.51.100.1"}, XFF, "198.51.100.1"),
        (
            "10.0.0.2",
            {"forwarded": "for=198.51.100.1:8080", "x-forwarded-for": "6.6.6.6"},
            FWD,
            "198.51.100.1",
        ),
        (
            "10.0.0.2",
            {"x-real-ip": "198.51.100.1", "x-forwarded-for": "6.6.6.6"},
            "x-real-ip",
            "198.51.100.1",
        ),
        (
            "10.0.0.2",
            {"x-forwarded-for": "10.0.0.5, 10.0.0.6"},
            XFF,
            "10.0.0.5",
        ),  # all trusted: the left-most
        ("10.0.0.2", {"x-forwarded-for": "198.51.100.1, garbage"}, XFF, "10.0.0.2"),  # unreadable: stop there
        ("10.0.0.2", {"forwarded": "for=_hidden"}, FWD, "10.0.0.2"),
        ("10.0.0.2", {}, XFF, "10.0.0.2"),
        ("2001:db8:ffff::1", {"x-forwarded-for": "2001:db8:1::1"}, XFF, "2001:db8:1::1"),
        (None, {"x-forwarded-for": "198.51.100.1"}, XFF, None),  # a unix socket, not trusted
        ("10.0.0.2", {"x-forwarded-for": "1" * 5000 + ", 198.51.100.1"}, XFF, "198.51.100.1"),
        ("10.0.0.2", {"x-forwarded-for": "198.51.100.1, " + "9" * 5000}, XFF, "10.0.0.2"),
        ("testclient", {}, XFF, "127.0.0.1"),  # Starlette's TestClient(app): a client on this host
        ("somehost", {}, XFF, None),
    ],
)
def test_client_ip(peer: str | None, headers: dict[str, str], header: str, client: str | None) -> None:
    request = Incoming("POST", "/sms/send", headers, "", b"", peer)
    assert Gate(trusted_proxies=PROXIES, proxy_header=header).client_ip(request) == client


def test_unix_socket_peer_trusted_by_name() -> None:
    request = Incoming("POST", "/sms/send", {"x-forwarded-for": "6.6.6.6, 198.51.100.1"}, "", b"", None)
    assert Gate(trusted_proxies=["unix"]).client_ip(request) == "198.51.100.1"
    assert Gate(trusted_proxies="unix").client_ip(request) == "198.51.100.1"
    assert Gate().client_ip(request) is None


def test_bad_proxy_cidr_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="trusted_proxies"):
        Gate(trusted_proxies=["10.0.0.0/33"])


# -- responses ------------------------------------------------------------------------------


def test_rate_limited_reply() -> None:
    denied = Decision(False, "+8613800138000", "daily_cap", "daily_cap", 41233.2, {"daily_cap": 0}, 10)
    reply = Gate().refusal(denied)
    assert reply is not None
    assert reply.status == 429
    assert reply_json(reply) == {
        "error": "rate_limited",
        "policy": "daily_cap",
        "reason": "daily_cap",
        "retry_after": 41234,
    }
    headers = dict(reply.headers)
    assert headers["retry-after"] == "41234"
    assert headers["ratelimit-policy"] == '"daily_cap";q=10'
    assert headers["ratelimit"] == '"daily_cap";r=0;t=41234'


def test_anti_fraud_refusals_are_opaque_to_the_client() -> None:
    """Semantics 18: the client is not told which scope refused it, nor exactly when to come
    back; the Decision keeps both, and ``opaque=()`` shows them."""
    guard = Guard([LearnedCap("range", floor=1, ceiling=10)], default_region="GB")
    assert guard.check("+447400120001").allowed
    decision = guard.check("+447400120002")
    assert (decision.policy, decision.reason) == ("learned_range", "scope_cap")
    reply = Gate().refusal(decision)
    assert reply is not None
    assert reply.status == 429
    assert reply_json(reply) == {
        "error": "rate_limited",
        "policy": None,
        "reason": "refused",
        "retry_after": 604800,
    }
    headers = dict(reply.headers)
    assert headers["retry-after"] == "604800"  # a week: already a multiple of 15 minutes
    assert "ratelimit-policy" not in headers
    short = Decision(False, "+447400120002", "learned_country", "scope_cap", 61.5, {}, 30)
    same_kind = Decision(False, "+447400120002", "phone_rate", "phone_rate", 61.5, {}, 5)
    replies = [Gate().refusal(d) for d in (short, same_kind)]
    assert [dict(r.headers)["retry-after"] for r in replies if r is not None] == ["900", "62"]
    shown = Gate(opaque=()).refusal(decision)
    assert shown is not None
    assert reply_json(shown)["reason"] == "scope_cap"


def test_blacklisted_reply_has_no_retry() -> None:
    reply = Gate().refusal(Decision(False, "+8613800138000", "blacklist", "blacklisted"))
    assert reply is not None
    assert reply.status == 403
    assert reply_json(reply)["error"] == "forbidden"
    assert "retry-after" not in dict(reply.headers)


class Geo:
    """A user's own policy: no base class, a Deny of its own kind."""

    name = reason = "geo"

    def __init__(self, kind: str = "forbidden") -> None:
        self.verdict = Deny("geo", retry_after=3600, kind=kind)

    def review(self, attempt: Attempt, now: float) -> Review:
        return self.verdict if attempt.phone.startswith("+44") else ()


@pytest.mark.parametrize(
    ("policies", "phone", "status", "error"),
    [
        ([Geo()], "+447946000100", 403, "forbidden"),  # not "rate_limited", though it has a retry
        ([Geo(kind="limit")], "+447946000100", 429, "rate_limited"),
        ([Geo(kind="unavailable")], "+447946000100", 503, "unavailable"),
        ([Blacklist(["+8613800138000"])], "+8613800138000", 403, "forbidden"),
        ([Suspend(), DailyCap()], "+8613800138000", 503, "unavailable"),
        ([DailyCap(1), DailyCap(1, name="again")], "+8613800138000", 429, "rate_limited"),
    ],
)
def test_status_follows_the_kind_of_the_reason(
    policies: list[Any], phone: str, status: int, error: str
) -> None:
    guard = Guard(policies, default_region="CN")
    if any(isinstance(p, Suspend) for p in policies):
        guard.suspend()
    decision = guard.check(phone)
    if decision.allowed:  # the cap needs one hit first
        decision = guard.check(phone)
    reply = Gate().refusal(decision)
    assert reply is not None
    assert (reply.status, reply_json(reply)["error"], reply_json(reply)["reason"]) == (
        status,
        error,
        decision.reason,
    )


def test_unknown_kind_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="Deny kind must be one of"):
        Deny("geo", kind="teapot")


def test_backend_down_reply_is_503() -> None:
    reply = Gate().refusal(Decision(False, "+8613800138000", None, "backend_unavailable", 4.2))
    assert reply is not None
    assert (reply.status, dict(reply.headers)["retry-after"]) == (503, "5")


def test_allowed_is_no_reply_and_subsecond_waits_round_up() -> None:
    assert Gate().refusal(Decision(True, "+8613800138000")) is None
    reply = Gate().refusal(Decision(False, "+8613800138000", "same_content", "same_content", 0.2, {}, 1))
    assert reply is not None
    assert dict(reply.headers)["retry-after"] == "1"


def test_repeated_denials_share_one_rendering() -> None:
    gate = Gate()

    def refusal(policy: str, wait: float, limit: int = 1) -> Reply | None:
        return gate.refusal(Decision(False, "+8613800138000", policy, policy, wait, {}, limit))

    first = refusal("same_content", 29.2)
    assert first is not None
    assert refusal("same_content", 29.9) is first  # the same whole seconds: the same reply
    assert dict(first.headers)["retry-after"] == "30"
    others = [refusal("same_content", 28.5), refusal("phone_rate", 29.2), refusal("same_content", 29.2, 2)]
    assert None not in others
    assert first not in others


def test_custom_render() -> None:
    seen: list[Decision | None] = []

    def render(problem: Problem) -> Reply:
        seen.append(problem.decision)
        return Reply(
            problem.status, [("content-type", "text/plain")], f"no: {problem.body['error']}".encode()
        )

    denied = Decision(False, "+86", "daily_cap", "daily_cap", 3.0, {}, 10)
    reply = Gate(render=render).refusal(denied)
    assert reply == Reply(429, [("content-type", "text/plain")], b"no: rate_limited")
    assert seen == [denied]  # a custom render sees the decision, every time


def test_refund_on() -> None:
    assert Gate().refund_on(502)
    assert not Gate().refund_on(200)
    assert Gate(refund_on={409}).refund_on(409)
    assert not Gate(refund_on={409}).refund_on(500)
    assert Gate(refund_on=lambda s: s != 200).refund_on(201)


@given(st.text(alphabet="ab=&%+;2B \u00e9", max_size=30))
def test_form_reads_like_parse_qsl(text: str) -> None:
    assert _form(text) == dict(parse_qsl(text, keep_blank_values=True))


# -- the exchange, through every adapter: one rule, one test ----------------------------------

ADAPTERS = ["starlette", "flask"]
EVERY_ADAPTER = ["starlette", "flask", "fastapi", "django"]
VICTIM, FRESH = "13800138000", "13900139000"
PATHS = ["/sms/send", "/v1/sms/send.json"]
"""What each app of ``Client`` serves, each guarded; the second has a dot, as a route may."""


class Fields(BaseModel):
    """The FastAPI app's body: anything, so that the guard sees what the client sent."""

    phone: Any = None
    template: Any = None
    text: Any = None


class Client:
    """A real Starlette, Flask, FastAPI or Django app guarded with ``options``, serving
    ``PATHS``, and what its endpoint saw. The Starlette and Django ones are guarded by their
    middleware (each path for POST; the endpoints themselves take GET too), the Flask and FastAPI
    ones by the view's decorator or dependency."""

    def __init__(self, adapter: str, guard: Guard, **options: Any) -> None:
        self.adapter, self.seen = adapter, []
        if adapter == "starlette":
            # Starlette builds its middleware when the app starts (lifespan), as under uvicorn.
            self.http = TestClient(self._starlette(guard, options), client=("203.0.113.9", 1)).__enter__()
        elif adapter == "flask":
            self.http = self._flask(guard, options).test_client()
        elif adapter == "fastapi":
            self.http = TestClient(self._fastapi(guard, options), client=("203.0.113.9", 1))
        else:
            self.http = self._django(guard, options)

    def _starlette(self, guard: Guard, options: dict[str, Any]) -> Starlette:
        async def send(request: Request) -> Response:
            self.seen.append(request.state.smsguard.phone)
            return JSONResponse({"phone": request.state.smsguard.phone})

        app = Starlette(routes=[Route(path, send, methods=["GET", "POST"]) for path in PATHS])
        app.add_middleware(SMSGuardMiddleware, guard=guard, routes=[f"POST {p}" for p in PATHS], **options)
        return app

    def _flask(self, guard: Guard, options: dict[str, Any]) -> Flask:
        app = Flask(__name__)

        @protect(guard, **options)
        def send() -> Any:
            self.seen.append(flask.g.smsguard.phone)
            return flask.jsonify(phone=flask.g.smsguard.phone)

        for path in PATHS:
            app.add_url_rule(path, path, send, methods=["GET", "POST"])
        return app

    def _fastapi(self, guard: Guard, options: dict[str, Any]) -> FastAPI:
        app = FastAPI()
        fields = {name: options.pop(name) for name in ("phone", "content") if name in options}
        guarded = Depends(SMSGuard(app, guard=guard, **options).protect(Fields, **fields))

        async def send(body: Fields, decision: Decision = guarded) -> Any:
            self.seen.append(decision.phone)
            return {"phone": decision.phone}

        for path in PATHS:
            app.post(path)(send)
        return app

    def _django(self, guard: Guard, options: dict[str, Any]) -> Any:
        import django_app  # noqa: F401  (configures Django once)
        import django_urls
        from django.test import Client as DjangoClient
        from django.test import override_settings

        from smsguard.adapters.django import configured

        names = {"phone": "PHONE_FIELD", "content": "CONTENT_FIELD", "max_body": "MAX_BODY"}
        django_urls.guard = guard
        django_urls.seen.clear()
        self.seen = django_urls.seen
        settings = {names[k]: v for k, v in options.items()}
        override = override_settings(
            SMSGUARD={"GUARD": "django_urls.guard", "ROUTES": [f"POST {p}" for p in PATHS], **settings}
        )
        override.enable()
        OVERRIDDEN.append(override)
        configured.clear(setting="SMSGUARD")
        return DjangoClient()

    def request(
        self, method: str, path: str = "/sms/send", body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, Any, Mapping[str, str]]:
        """Status, JSON body (or None) and headers of ``method path`` (a query included)."""
        headers = dict(headers or {})
        if self.adapter == "django":
            kind = headers.pop("content-type", "")
            extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
            response = self.http.generic(
                method, path, body, content_type=kind, REMOTE_ADDR="203.0.113.9", **extra
            )
            raw, answer_headers = response.content, response.headers
        elif self.adapter == "flask":
            response = self.http.open(
                path, method=method, data=body, headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.9"}
            )
            raw, answer_headers = response.data, response.headers
        else:
            response = self.http.request(method, path, content=body, headers=headers)
            raw, answer_headers = response.content, response.headers
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        return response.status_code, answer, answer_headers

    def post(self, query: str = "", **kwargs: Any) -> tuple[int, dict[str, Any]]:
        headers = dict(kwargs.pop("headers", None) or {})
        if "json" in kwargs:
            body = json.dumps(kwargs.pop("json")).encode()
            headers.setdefault("content-type", "application/json")
        else:
            body = kwargs.pop("content", b"")
        assert not kwargs, kwargs
        status, answer, _ = self.request("POST", f"/sms/send{query}", body, headers)
        return status, answer


OVERRIDDEN: list[Any] = []
"""The Django settings a ``Client`` overrode, undone after each test."""


@pytest.fixture(autouse=True)
def _undo_django_settings() -> Iterator[None]:
    yield
    while OVERRIDDEN:
        OVERRIDDEN.pop().disable()
        from smsguard.adapters.django import configured

        configured.clear(setting="SMSGUARD")


def fresh_guard() -> Guard:
    return Guard([SameContent(skip_missing=True), DailyCap(10)], default_region="CN", secret="s")


FORM = {"content-type": "application/x-www-form-urlencoded"}
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("query", "body", "headers"),
    [
        ("", f"phone={VICTIM}&phone={FRESH}", FORM),
        ("", f'{{"phone": "{VICTIM}", "phone": "{FRESH}"}}', JSON),
        (f"?phone={VICTIM}", f"phone={FRESH}", FORM),  # request.values would read the query's
        (f"?phone={VICTIM}", f'{{"phone": "{FRESH}"}}', JSON),
        (f"?phone={VICTIM}&phone={FRESH}", "", {}),
        ("", f"phone={FRESH}&template=a&template=b", FORM),
    ],
)
def test_a_field_given_twice_is_a_400(adapter: str, query: str, body: str, headers: dict[str, str]) -> None:
    client = Client(adapter, fresh_guard(), content="template")
    status, answer = client.post(query, content=body.encode(), headers=headers)
    assert (status, answer["error"]) == (400, "invalid_request")
    assert "more than once" in answer["detail"] or "both the query and the body" in answer["detail"]
    assert client.seen == []


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_lone_surrogate_in_content_is_judged_not_a_500(adapter: str) -> None:
    client = Client(adapter, fresh_guard(), content="template")
    body = b'{"phone": "13800138000", "template": "\\ud800"}'
    assert client.post(content=body, headers=JSON) == (200, {"phone": "+8613800138000"})
    assert client.post(content=body, headers=JSON)[0] == 429, "counted like any content"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_field_callable_that_fails_on_a_request_is_a_400(adapter: str) -> None:
    client = Client(adapter, fresh_guard(), phone=lambda r: r.data["user"]["tel"])
    status, answer = client.post(content=b"{}", headers=JSON)
    assert (status, answer) == (
        400,
        {"error": "invalid_request", "detail": "cannot read the phone from this request"},
    )
    assert client.post(content=b'{"user": {"tel": "13800138000"}}', headers=JSON)[0] == 200


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_callable_reads_headers_in_any_case(adapter: str) -> None:
    client = Client(adapter, fresh_guard(), phone=lambda r: r.headers.get("X-Phone"))
    assert client.post(headers={"x-phone": "13800138000"}) == (200, {"phone": "+8613800138000"})


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    "option",
    [
        {"bogus": 1},
        {"phone": None},
        {"max_body": "big"},
        {"trusted_proxies": ["nope"]},
        {"phone": ""},
        {"content": "phone"},
        {"proxy_header": "x-forwarded-for:"},
        {"proxy_header": "x forwarded for"},
    ],
)
def test_bad_options_fail_at_construction(adapter: str, option: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Client(adapter, fresh_guard(), **option)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_challenge_through_both_adapters(adapter: str) -> None:
    from smsguard import UnverifiedCap

    guard = Guard([UnverifiedCap("range", "1/hour", challenge=True), DailyCap(2)], secret="s")
    passed: list[str] = []

    def solved(request: Incoming) -> bool:  # the app's CAPTCHA check, given the request
        passed.append(request.data.get("phone", "?"))
        return request.headers.get("x-captcha") == "solved"

    client = Client(adapter, guard, challenge=solved)
    block = ["+37121234001", "+37121234002"]
    assert client.post(json={"phone": block[0]})[0] == 200
    status, body = client.post(json={"phone": block[1]})
    assert status == 429
    assert (body["error"], body["reason"]) == ("challenge_required", "refused"), "no oracle"
    assert client.seen == [block[0]], "the challenged request never reached the endpoint"
    status, _ = client.post(json={"phone": block[1]}, headers={"x-captcha": "solved"})
    assert status == 200, "passed: judged by the remaining policies"
    assert client.post(json={"phone": block[1]}, headers={"x-captcha": "solved"})[0] == 200
    status, body = client.post(json={"phone": block[1]}, headers={"x-captcha": "solved"})
    assert (status, body["reason"]) == (429, "daily_cap"), "which still hold"
    assert passed == [block[0], block[1], block[1], block[1], block[1]], "asked for every request"


# A urlencoded body that is also JSON: a form to a guard that reads by the type, an object to a
# view that reads JSON whatever the type (Starlette's request.json(), Django's
# json.loads(request.body)). Each encoding below is one Python's json reads as the same object.
# (FastAPI reads its model from a JSON body only: a form gets its 422, on main too.)
TWO_FACED = f'{{"phone": "{VICTIM}", "pad": "&phone={FRESH}&"}}'


@pytest.mark.parametrize("adapter", ["starlette", "flask", "django"])
@pytest.mark.parametrize(
    "body",
    [
        TWO_FACED.encode(),
        b" \r\n\t" + TWO_FACED.encode(),
        b"\xef\xbb\xbf" + TWO_FACED.encode(),  # a BOM
        TWO_FACED.encode("utf-16-le"),  # NULs are valid UTF-8: the form still reads phone=FRESH
        f"[{TWO_FACED}]".encode(),
        b'{"phone": "&phone=' + FRESH.encode() + b'&", oops',  # JSON to a lenient parser
    ],
)
def test_a_form_body_that_reads_as_json_is_a_400(adapter: str, body: bytes) -> None:
    client = Client(adapter, fresh_guard())
    status, answer, _ = client.request("POST", "/sms/send", body, FORM)
    assert (status, answer["error"]) == (400, "invalid_request")
    assert "JSON" in answer["detail"]
    assert client.seen == []
    status, _, _ = client.request("POST", "/sms/send", f"phone={FRESH}&pad=%7B".encode(), FORM)
    assert status == 200, "a plain form is a form"
    assert client.seen == [f"+86{FRESH}"]


@pytest.mark.parametrize("adapter", EVERY_ADAPTER)
def test_recommended_serves_a_route_with_a_dot(adapter: str) -> None:
    """The route is what SameContent counts by when no content field is named, not a text:
    ContentRules must not read ``send.json`` as a domain. A content field is still read."""
    from smsguard import recommended

    client = Client(adapter, Guard(recommended(["CN"]), default_region="CN", secret="s"))
    status, answer, _ = client.request(
        "POST", "/v1/sms/send.json", json.dumps({"phone": VICTIM}).encode(), JSON
    )
    assert (status, answer["phone"]) == (200, f"+86{VICTIM}")
    linked = Client(adapter, Guard(recommended(["CN"]), default_region="CN", secret="s"), content="text")
    body = json.dumps({"phone": FRESH, "text": "see t.cn/x"}).encode()
    status, answer, _ = linked.request("POST", "/v1/sms/send.json", body, JSON)
    assert (status, answer["error"]) == (403, "forbidden"), "a text a client sends is read"
    assert linked.seen == []


@pytest.mark.parametrize("adapter", ["starlette", "django"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_another_method_on_a_guarded_path_is_a_405(adapter: str, method: str) -> None:
    """A middleware guards a path for the methods its routes name; its endpoint might send for
    any other (these take GET too, as a Django view takes every method), so the others are
    refused. (A decorator or a dependency guards its view whatever the method.)"""
    guard = fresh_guard()
    client = Client(adapter, guard)
    status, answer, headers = client.request(method, f"/sms/send?phone={VICTIM}")
    assert client.seen == [], "never reached the endpoint unguarded"
    assert guard.status(VICTIM)[0].used == 0
    assert status == 405
    assert headers["allow"] == "POST"
    assert headers["content-type"] == "application/json"
    if method != "HEAD":
        assert answer == {"error": "method_not_allowed", "detail": "this path takes POST"}
    assert client.request("POST", f"/sms/send?phone={VICTIM}")[0] == 200
