"""The code routes of every adapter, through real Starlette, Flask, FastAPI and Django apps: the
send route issues the code (``action="issue"``), the check route checks it (``action="verify"``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import flask
import pytest
from conftest import Clock, Unplugged
from fastapi import Depends, FastAPI, HTTPException
from flask import Flask
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from smsguard import ConfigError, DailyCap, Guard, SameContent, lifecycle
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.fastapi import SMSGuard
from smsguard.adapters.flask import SMSGuard as FlaskSMSGuard
from smsguard.adapters.flask import protect
from smsguard.adapters.http import Gate, Problem, Reply, Routes, json_reply

ADAPTERS = ["starlette", "flask", "fastapi", "django", "django-protect"]
PROXY = "203.0.113.9"  # the peer of every request: a trusted proxy, whose X-Forwarded-For is read
VICTIM = "13800138000"
E164 = "+8613800138000"
INVALID_CODE = {"error": "invalid_code", "policy": None, "reason": "invalid_code", "retry_after": None}


class Anything(BaseModel):
    """FastAPI's bodies: anything, so that the guard sees what the client sent."""

    phone: Any = None
    code: Any = None


class App:
    """A real app of ``adapter`` with a send route that issues codes (``/sms/send``: its view
    keeps the number and code it was handed, and answers 502 for a number ending in 99999, as a
    provider that rejects it) and a check route (``/sms/verify``), both guarded by ``guard``
    with Gate ``options`` (the check route's ``verify_options`` on top)."""

    def __init__(self, adapter: str, guard: Guard, verify_options: Mapping[str, Any] = {}, **options: Any):
        self.adapter = adapter
        self.sent: list[tuple[str, str]] = []
        self.paths = ("/sms/send", "/sms/verify")
        options.setdefault("trusted_proxies", ["203.0.113.0/24"])
        if adapter == "starlette":
            # Starlette builds its middleware when the app starts (lifespan), as under uvicorn.
            self.http: Any = TestClient(self._starlette(guard, options, verify_options), client=(PROXY, 1))
            self.http.__enter__()
        elif adapter == "flask":
            self.http = self._flask(guard, options, verify_options).test_client()
        elif adapter == "fastapi":
            self.http = TestClient(self._fastapi(guard, options, verify_options), client=(PROXY, 1))
        else:
            self.http = self._django(guard, options, verify_options, adapter == "django-protect")

    def _view(self, admitted: Any) -> tuple[int, dict[str, Any]]:
        phone, code = admitted.decision.phone, admitted.code
        assert isinstance(code, str), "an allowed send is handed its code"
        assert code.isdigit()
        if phone.endswith("99999"):
            return 502, {"sent": False}
        self.sent.append((phone, code))
        return 200, {"sent": True}

    def _starlette(self, guard: Guard, options: dict[str, Any], verify: Mapping[str, Any]) -> Starlette:
        async def send(request: Request) -> Response:
            status, body = self._view(request.state.smsguard)
            return JSONResponse(body, status_code=status)

        async def check(request: Request) -> Response:
            return JSONResponse({"verified": request.state.smsguard.ok})

        app = Starlette(
            routes=[Route("/sms/send", send, methods=["POST"]), Route("/sms/verify", check, methods=["POST"])]
        )
        routes = {"POST /sms/send": "issue", "POST /sms/verify": {"action": "verify", **verify}}
        app.add_middleware(SMSGuardMiddleware, guard=guard, routes=routes, **options)
        return app

    def _flask(self, guard: Guard, options: dict[str, Any], verify: Mapping[str, Any]) -> Flask:
        app = Flask(__name__)

        @app.post("/sms/send")
        @protect(guard, action="issue", **options)
        def send() -> Any:
            status, body = self._view(flask.g.smsguard)
            return flask.jsonify(body), status

        @app.post("/sms/verify")
        @protect(guard, **{**options, "action": "verify", **verify})
        def check() -> Any:
            return flask.jsonify(verified=flask.g.smsguard.ok)

        return app

    def _fastapi(self, guard: Guard, options: dict[str, Any], verify: Mapping[str, Any]) -> FastAPI:
        app = FastAPI()
        sms = SMSGuard(app, guard=guard, **options)
        issue = Depends(sms.protect(Anything, action="issue"))
        checked = Depends(sms.protect(Anything, action="verify", **verify))

        @app.post("/sms/send")
        async def send(body: Anything, issued: Any = issue) -> Any:
            status, answer = self._view(issued)
            if status != 200:
                raise HTTPException(status, "the provider rejected the number")
            return answer

        @app.post("/sms/verify")
        async def check(body: Anything, result: Any = checked) -> Any:
            return {"verified": result.ok}

        return app

    def _django(
        self, guard: Guard, options: dict[str, Any], verify: Mapping[str, Any], decorated: bool
    ) -> Any:
        import django_app  # noqa: F401  (configures Django once)
        import django_urls
        from django.test import Client as DjangoClient
        from django.test import override_settings

        from smsguard.adapters.django import configured

        assert not verify, "the Django views take the default code field"
        django_urls.guard = guard
        django_urls.codes.clear()
        self.sent = django_urls.codes
        settings: dict[str, Any] = {
            "GUARD": "django_urls.guard",
            "TRUSTED_PROXIES": options.pop("trusted_proxies"),
        }
        settings.update({key.upper(): value for key, value in options.items()})
        if decorated:
            self.paths = ("/codes/v2/send", "/codes/v2/verify")
        else:
            self.paths = ("/codes/send", "/codes/verify")
            settings["ROUTES"] = {"POST /codes/send": "issue", "POST /codes/verify": "verify"}
        override = override_settings(SMSGUARD=settings)
        override.enable()
        OVERRIDDEN.append(override)
        configured.clear(setting="SMSGUARD")
        return DjangoClient()

    def post(
        self, path: str, body: bytes, headers: Mapping[str, str], ip: str | None, query: str = ""
    ) -> tuple[int, Any, Mapping[str, str]]:
        """Status, JSON body (or None) and headers of a POST to ``path`` from client ``ip``."""
        headers = dict(headers)
        if ip is not None:
            headers["x-forwarded-for"] = ip
        path = {"/sms/send": self.paths[0], "/sms/verify": self.paths[1]}[path] + query
        if self.adapter.startswith("django"):
            kind = headers.pop("content-type", "")
            extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
            response = self.http.generic("POST", path, body, content_type=kind, REMOTE_ADDR=PROXY, **extra)
            raw, answer_headers = response.content, response.headers
        elif self.adapter == "flask":
            response = self.http.post(path, data=body, headers=headers, environ_base={"REMOTE_ADDR": PROXY})
            raw, answer_headers = response.data, response.headers
        else:
            response = self.http.post(path, content=body, headers=headers)
            raw, answer_headers = response.content, response.headers
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        return response.status_code, answer, answer_headers

    def send(self, phone: str = VICTIM, *, ip: str | None = None) -> tuple[int, Any]:
        body = json.dumps({"phone": phone}).encode()
        status, answer, _ = self.post("/sms/send", body, {"content-type": "application/json"}, ip)
        return status, answer

    def verify(self, code: Any, phone: Any = VICTIM, *, ip: str | None = None) -> tuple[int, Any]:
        status, answer, _ = self.verify_full(code, phone, ip=ip)
        return status, answer

    def verify_full(
        self, code: Any, phone: Any = VICTIM, *, ip: str | None = None
    ) -> tuple[int, Any, Mapping[str, str]]:
        body = json.dumps({"phone": phone, "code": code}).encode()
        return self.post("/sms/verify", body, {"content-type": "application/json"}, ip)

    def code_of(self, phone: str = E164) -> str:
        """The last code the send view was handed for ``phone``."""
        return [code for number, code in self.sent if number == phone][-1]


OVERRIDDEN: list[Any] = []
"""The Django settings an App overrode, undone after each test."""


@pytest.fixture(autouse=True)
def _undo_django_settings() -> Iterator[None]:
    yield
    while OVERRIDDEN:
        OVERRIDDEN.pop().disable()
        from smsguard.adapters.django import configured

        configured.clear(setting="SMSGUARD")


@pytest.fixture
def guard(clock: Clock) -> Guard:
    return Guard([SameContent(), DailyCap(10)], default_region="CN", secret="codes", clock=clock)


def wrong(code: str) -> str:
    """A code of the same length that is not ``code``."""
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_send_then_verify(adapter: str, guard: Guard) -> None:
    app = App(adapter, guard)
    assert app.send("+86 138 0013 8000") == (200, {"sent": True})
    code = app.code_of()
    assert len(code) == 6
    assert app.verify(wrong(code), "138-0013-8000") == (400, INVALID_CODE)
    assert app.verify(code, "+86 138 0013 8000") == (200, {"verified": True}), "any spelling of the number"
    assert app.verify(code) == (400, INVALID_CODE), "a code is spent by its first right check"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_resend_within_validity_is_the_same_code_and_still_limited(
    adapter: str, guard: Guard, clock: Clock
) -> None:
    app = App(adapter, guard)
    assert app.send()[0] == 200
    first = app.code_of()
    status, answer = app.send()
    assert (status, answer["error"], answer["reason"]) == (429, "rate_limited", "same_content")
    clock.advance(31)
    assert app.send()[0] == 200
    assert app.code_of() == first, "one live code per number"
    assert app.verify(first)[0] == 200


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_no_oracle_wrong_expired_and_none_look_alike(adapter: str, guard: Guard, clock: Clock) -> None:
    """A client cannot tell a wrong code from an expired one or from a number with no code."""
    app = App(adapter, guard)
    assert app.send()[0] == 200
    code = app.code_of()
    seen = []
    seen.append(app.verify_full(wrong(code)))  # wrong
    seen.append(app.verify_full("000000", "13900139000"))  # no code at all
    clock.advance(601)
    seen.append(app.verify_full(code))  # the right code, expired
    for status, answer, headers in seen:
        assert (status, answer) == (400, INVALID_CODE)
        assert "retry-after" not in headers
    assert (
        len(
            {
                tuple(sorted((k.lower(), v) for k, v in headers.items() if k.lower() != "date"))
                for _, _, headers in seen
            }
        )
        == 1
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_brute_force_from_a_thousand_addresses_evaluates_five_guesses(adapter: str, guard: Guard) -> None:
    """1,000 guesses at one code, each from another client address (through the trusted
    proxy's X-Forwarded-For): five are judged, then the code is dead, the right one too."""
    app = App(adapter, guard)
    assert app.send()[0] == 200
    code = app.code_of()
    guesses = [f"{n:06d}" for n in range(1000) if f"{n:06d}" != code][:1000]
    answers = [app.verify(guess, ip=f"198.51.{n // 250}.{n % 250 + 1}") for n, guess in enumerate(guesses)]
    judged = [answer for status, answer in answers if status == 400]
    assert judged == [INVALID_CODE] * 5
    refused = {(status, answer["error"], answer["reason"]) for status, answer in answers if status != 400}
    assert {status for status, _, _ in refused} == {429}
    assert ("rate_limited", "check_attempts") in {(e, r) for _, e, r in refused}
    status, answer = app.verify(code, ip="192.0.2.1")
    assert status == 429, "the code is dead: the right one too"
    assert answer["reason"] in ("check_attempts", "too_many_checks"), "the number's wrong checks for the day"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_malformed_codes_are_wrong_guesses(adapter: str, guard: Guard) -> None:
    app = App(adapter, guard)
    assert app.send()[0] == 200
    for guess in ["abcdef", "", "12345", "1234567", "\ud800"]:  # five: the default attempts
        assert app.verify(guess) == (400, INVALID_CODE), guess
    assert app.verify(app.code_of())[0] == 429, "five wrong guesses spent the code"


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"phone": VICTIM}, "missing code"),
        ({"phone": VICTIM, "code": 123456}, "code must be a string"),
        ({"phone": VICTIM, "code": ["123456"]}, "code must be a string"),
        ({"phone": VICTIM, "code": None}, "missing code"),
        ({"code": "123456"}, "missing phone"),
        ({"phone": "12", "code": "123456"}, "not a valid number"),
    ],
)
def test_a_missing_or_malformed_field_is_a_400(
    adapter: str, guard: Guard, body: dict[str, Any], detail: str
) -> None:
    app = App(adapter, guard)
    status, answer, _ = app.post(
        "/sms/verify", json.dumps(body).encode(), {"content-type": "application/json"}, None
    )
    if adapter == "fastapi" and answer.get("detail") and not isinstance(answer["detail"], str):
        pytest.fail(f"FastAPI's own validation answered: {answer}")
    assert status == 400
    assert answer["error"] == "invalid_request"
    assert detail in answer["detail"]


@pytest.mark.parametrize("adapter", ["starlette", "flask", "django"])
@pytest.mark.parametrize(
    ("query", "body", "kind"),
    [
        ("", f"phone={VICTIM}&code=1&code=2", "application/x-www-form-urlencoded"),
        ("", f'{{"phone": "{VICTIM}", "code": "1", "code": "2"}}', "application/json"),
        ("?code=1", f'{{"phone": "{VICTIM}", "code": "2"}}', "application/json"),
    ],
)
def test_a_code_given_twice_is_a_400(adapter: str, guard: Guard, query: str, body: str, kind: str) -> None:
    app = App(adapter, guard)
    status, answer, _ = app.post("/sms/verify", body.encode(), {"content-type": kind}, None, query)
    assert (status, answer["error"]) == (400, "invalid_request")


@pytest.mark.parametrize("adapter", ["starlette", "flask", "django"])
def test_a_form_body(adapter: str, guard: Guard) -> None:
    app = App(adapter, guard)
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert app.post("/sms/send", f"phone={VICTIM}".encode(), form, None)[0] == 200
    body = f"phone={VICTIM}&code={app.code_of()}".encode()
    assert app.post("/sms/verify", body, form, None)[:2] == (200, {"verified": True})


@pytest.mark.parametrize("adapter", ["starlette", "flask"])
def test_the_code_field_is_an_option(adapter: str, guard: Guard) -> None:
    app = App(adapter, guard, verify_options={"code": "otp"})
    assert app.send()[0] == 200
    body = json.dumps({"phone": VICTIM, "otp": app.code_of()}).encode()
    assert app.post("/sms/verify", body, {"content-type": "application/json"}, None)[:2] == (
        200,
        {"verified": True},
    )


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_send_the_provider_rejects_is_refunded(adapter: str, guard: Guard) -> None:
    app = App(adapter, guard)
    for _ in range(3):
        assert app.send("13800199999")[0] == 502, "refunded: SameContent never denies the next"


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_closed_mode_outage_is_a_503_on_both_routes(adapter: str, clock: Clock) -> None:
    backend = Unplugged()
    guard = Guard(
        [SameContent(), DailyCap(10)],
        backend=backend,
        fail_mode="closed",
        default_region="CN",
        secret="s",
        clock=clock,
    )
    app = App(adapter, guard)
    assert app.send()[0] == 200
    code = app.code_of()
    backend.down = True
    status, answer = app.send("13900139000")
    assert (status, answer["error"], answer["reason"]) == (503, "unavailable", "backend_unavailable")
    status, answer = app.verify(code)
    assert (status, answer["error"], answer["reason"]) == (503, "unavailable", "backend_unavailable")
    assert app.sent == [(E164, code)], "no code issued during the outage"
    backend.down = False  # the outage ends, then the app: nothing it held is lost (nor left to exit)
    lifecycle.stop(guard)
    day = guard.stats().totals
    assert (day["attempts"], day["denied:backend_unavailable"], day["check:backend_unavailable"]) == (2, 1, 1)


def test_a_render_sees_the_exact_reason(guard: Guard, clock: Clock) -> None:
    """The client sees one reply for wrong, expired and none; a ``render`` sees the CodeCheck."""
    problems: list[Problem] = []

    def render(problem: Problem) -> Reply:
        problems.append(problem)
        return json_reply(problem)

    app = App("starlette", guard, render=render)
    assert app.send()[0] == 200
    code = app.code_of()
    app.verify(wrong(code))
    app.verify("000000", "13900139000")
    clock.advance(601)
    app.verify(code)
    assert [p.code_check.reason for p in problems if p.code_check is not None] == [
        "wrong_code",
        "no_code",
        "code_expired",
    ]
    assert {json.dumps(p.body) for p in problems} == {json.dumps(INVALID_CODE)}


def test_another_method_on_the_check_route_is_a_405(guard: Guard) -> None:
    app = App("starlette", guard)
    response = app.http.get("/sms/verify")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")


@pytest.mark.parametrize(
    "routes",
    [
        {"POST /sms/verify": "check_code"},
        {"POST /sms/verify": {"action": "verify", "code_field": "otp"}},
        {"POST /sms/verify": {"action": "verify", "code": 5}},
        {"POST /sms/verify": 5},
        {"verify": "verify"},
    ],
)
def test_bad_routes_fail_at_construction(routes: Any) -> None:
    with pytest.raises(ConfigError):
        Routes(routes).gates({})
    with pytest.raises(ConfigError):
        SMSGuardMiddleware(lambda *a: None, guard=Guard(), routes=routes)  # type: ignore[arg-type]


def test_bad_actions_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="action must be one of"):
        Gate(action="send")
    with pytest.raises(ConfigError, match="action must be one of"):
        FlaskSMSGuard(guard=Guard()).protect(action="verified")
    with pytest.raises(ConfigError, match="needs a model"):
        SMSGuard(guard=Guard()).protect(action="verify")


def test_gate_settings_read_the_code_field() -> None:
    assert Gate.settings({"SMSGUARD_CODE_FIELD": "otp"}) == {"code": "otp"}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_client_guessing_across_numbers_is_held_with_retry_after(adapter: str, guard: Guard) -> None:
    """One address guessing one code on each of many numbers: its wrong checks are limited
    (20 an hour by default), then a 429 ``too_many_checks`` says when to come back."""
    app = App(adapter, guard)
    answers = [app.verify_full("123456", f"139001{n:05d}", ip="198.51.100.7") for n in range(25)]
    assert [status for status, _, _ in answers] == [400] * 20 + [429] * 5
    _, answer, headers = answers[-1]
    assert (answer["error"], answer["reason"]) == ("rate_limited", "too_many_checks")
    assert int(headers["retry-after"]) == answer["retry_after"] > 0
    other = app.verify_full("123456", "13900100000", ip="198.51.100.8")
    assert other[0] == 400, "another address is not held"
