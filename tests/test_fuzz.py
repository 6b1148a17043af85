"""Hypothesis throws random requests at every adapter, on the send route and on the route that
checks the code: never a 500, never an escape."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import Depends, FastAPI
from flask import Flask, g, jsonify
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from smsguard import ContentRules, DailyCap, Guard, InvalidInput, IPThrottle, PhoneRate, SameContent
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.fastapi import SMSGuard
from smsguard.adapters.flask import protect

ALLOWED = {200, 400, 403, 405, 413, 429}
PEER = "203.0.113.9"

phones = st.one_of(
    st.sampled_from(["13800138000", "+86 138 0013 8000", "１３８００１３８０００", "", "+", "00", "+999"]),
    st.text(max_size=40),
    st.text(alphabet="0123456789+-() ", max_size=80),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
# Any code point, lone surrogates included: valid in JSON ("\ud800"), and once a 500 when hashed.
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)
# What a client may send as the code: digits of any length, any text (lone surrogates, full-width
# digits), and what JSON holds besides strings.
codes = st.one_of(
    st.text(alphabet="0123456789", max_size=12),
    st.sampled_from(["", " 123456", "１２３４５６", "12345\x00", "\ud800" * 6, "0" * 10_000]),
    any_text,
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=6), max_size=2),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Mostly POST, the guarded method.
methods = st.sampled_from(METHODS) | st.just("POST") | st.just("POST")
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/vnd.api+json",
        "",
        "application/json; charset=latin-1",
    ]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str], str]:
    kind = draw(st.sampled_from(["json-object", "json-any", "form", "two-faced", "bytes", "empty"]))
    if kind == "json-object":
        payload = draw(
            st.dictionaries(
                st.sampled_from(["phone", "template", "user", "x", "code"]), json_values, max_size=4
            )
        )
        if draw(st.booleans()):
            payload["phone"] = draw(phones)
        if draw(st.booleans()):
            payload["code"] = draw(codes)
        if draw(st.booleans()):
            payload["user"] = {"tel": draw(phones)} if draw(st.booleans()) else draw(json_values)
        body = json.dumps(payload, allow_nan=True).encode()
        if draw(st.booleans()):  # the same field twice, as json.dumps cannot write it
            body = body[:-1] + (b", " if payload else b"") + b'"phone": "13900139000"}'
    elif kind == "json-any":
        body = json.dumps(draw(json_values)).encode()
    elif kind == "form":
        body = draw(st.text(max_size=100)).encode("utf-8", "surrogatepass")
        if draw(st.booleans()):
            body += b"&phone=13800138000&phone=13900139000&template=%ED%A0%80"
        if draw(st.booleans()):
            body += b"&phone=13800138000&code=" + draw(
                st.sampled_from([b"123456", b"%ED%A0%80", b"1&code=2"])
            )
    elif kind == "two-faced":  # JSON to a view that reads JSON, a form to one that reads forms
        payload = {"phone": draw(phones), "pad": f"&phone={draw(phones)}&"}
        text = draw(st.sampled_from(["", " \n", "\ufeff"])) + json.dumps(payload, allow_nan=True)
        body = text.encode(draw(st.sampled_from(["utf-8", "utf-16-le", "utf-16", "utf-32-be"])))
        if draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body)))]
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        body = b""
    headers = {"content-type": draw(content_types)}
    if draw(st.booleans()):
        headers["x-forwarded-for"] = draw(st.text(alphabet="0123456789.:abcdef, ", max_size=40))
    if draw(st.booleans()):
        headers["x-template"] = draw(
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
        )
    query = draw(
        st.sampled_from(
            [
                "",
                "phone=13800138000",
                "phone=%FF%FE",
                "phone=" + "9" * 500,
                "phone=1&phone=2",
                "template=%ED%A0%80",
                "code=123456",
                "code=%FF",
                "phone=13800138000&code=1&code=2",
            ]
        )
    )
    return body, headers, query


def guard() -> Guard:
    policies = [
        ContentRules(),
        SameContent(skip_missing=True),
        DailyCap(10**6),
        PhoneRate("1000/second"),
        IPThrottle("10000/second"),
    ]
    return Guard(policies, default_region="CN", secret="fuzz")


# Two ways to name the fields: by name, and by callables that expect a certain shape of body
# (as the README's own ``lambda r: r.data["user"]["tel"]`` does) and meet every other shape.
FIELDS: list[dict[str, Any]] = [
    {"content": "template"},
    {"phone": lambda r: r.data["user"]["tel"], "content": lambda r: r.headers["X-Template"]},
]


def json_phone(body: bytes, guard: Guard) -> str | None:
    """The number a view that reads JSON whatever the type (``json.loads(body)``) would text, in
    E.164; None when it would text none, "?" for a number the guard would refuse."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("phone"), str):
        return None
    try:
        return guard.identify(data["phone"])[0]
    except InvalidInput:
        return "?"


def coded_guard() -> Guard:
    """``guard()`` with a live code for the number the fuzzing sends most, so that checks meet
    a wrong code and, five of them later, a dead one, as well as no code."""
    the_guard = guard()
    assert the_guard.issue_code("13800138000", ip=PEER).code is not None
    return the_guard


def starlette_app(fields: dict[str, Any]) -> Starlette:
    the_guard = coded_guard()

    async def send(request: Request) -> JSONResponse:
        body = await request.body()
        if fields is FIELDS[0]:  # the guard reads the "phone" field: the number counted is the one sent
            assert json_phone(body, the_guard) in (None, request.state.smsguard.phone)
        return JSONResponse({"bytes": len(body)})

    async def verify(request: Request) -> JSONResponse:
        assert request.state.smsguard.ok, "only a right code reaches the view"
        return JSONResponse({"verified": True})

    # The endpoints take every method, the middleware guards POST: the others get its 405.
    app = Starlette(
        routes=[
            *[Route(path, send, methods=METHODS) for path in ("/sms/send", "/v1/sms/send.json")],
            Route("/sms/verify", verify, methods=METHODS),
        ]
    )
    app.add_middleware(
        SMSGuardMiddleware,
        guard=the_guard,
        routes={"POST /sms/send": {}, "POST /v1/sms/send.json": {}, "POST /sms/verify": "verify"},
        trusted_proxies=["203.0.113.0/24"],
        max_body=1024,
        **fields,
    )
    return app


def flask_app(fields: dict[str, Any]) -> Flask:
    app = Flask(__name__)
    the_guard = coded_guard()
    options: dict[str, Any] = {"trusted_proxies": ["203.0.113.0/24"], "max_body": 1024, **fields}

    @app.post("/sms/send")
    @protect(the_guard, **options)
    def send() -> Any:
        return jsonify(ok=True)

    @app.post("/sms/verify")
    @protect(the_guard, action="verify", **options)
    def verify() -> Any:
        assert g.smsguard.ok, "only a right code reaches the view"
        return jsonify(verified=True)

    app.testing = True  # exceptions propagate to the test instead of becoming a 500
    return app


# Any exception that escapes is raised into the test. The last one is the plain TestClient(app),
# whose peer is "testclient".
STARLETTE = [TestClient(starlette_app(fields), client=(PEER, 1)) for fields in FIELDS]
STARLETTE.append(TestClient(starlette_app(FIELDS[0])))
FLASK = [flask_app(fields) for fields in FIELDS]


def check(status: int, body: bytes, method: str = "POST", *, post_only: bool = True) -> None:
    """``status`` is one a client may get, with a JSON body saying why (HEAD has no body); a
    middleware (``post_only``) refuses every method but POST, never POST."""
    assert status in ALLOWED
    if post_only:
        assert (status == 405) == (method != "POST"), "another method is refused, POST never is"
    if status != 200 and method != "HEAD":
        assert json.loads(body)["error"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request=requests(),
    fields=st.sampled_from(range(len(STARLETTE))),
    method=methods,
    path=st.sampled_from(["/sms/send", "/v1/sms/send.json", "/sms/verify"]),
)
def test_starlette_never_500(
    request: tuple[bytes, dict[str, str], str], fields: int, method: str, path: str
) -> None:
    body, headers, query = request
    response = STARLETTE[fields].request(method, f"{path}?{query}", content=body, headers=headers)
    check(response.status_code, response.content, method)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request=requests(),
    fields=st.sampled_from(range(len(FIELDS))),
    path=st.sampled_from(["/sms/send", "/sms/verify"]),
)
def test_flask_never_500(request: tuple[bytes, dict[str, str], str], fields: int, path: str) -> None:
    body, headers, query = request
    response = (
        FLASK[fields]
        .test_client()
        .post(f"{path}?{query}", data=body, headers=headers, environ_base={"REMOTE_ADDR": PEER})
    )
    check(response.status_code, response.data)


@pytest.mark.parametrize("size", [1024, 1025, 100_000])
def test_body_sizes_at_the_edge(size: int) -> None:
    body = json.dumps({"phone": "13800138000", "pad": ""}).encode()
    body = body[:-2] + b"x" * (size - len(body)) + b'"}'
    assert len(body) == size
    expected = 200 if size <= 1024 else 413
    # Fresh apps: the fuzzing above may have used up this number's quota.
    with TestClient(starlette_app(FIELDS[0]), client=(PEER, 1)) as client:
        response = client.post("/sms/send", content=body, headers={"content-type": "application/json"})
        assert response.status_code == expected
    flask = flask_app(FIELDS[0]).test_client()
    response = flask.post(
        "/sms/send", data=body, content_type="application/json", environ_base={"REMOTE_ADDR": PEER}
    )
    assert response.status_code == expected


# FastAPI: the dependency, behind a model that takes anything (so the guard sees everything), and
# one that takes strings (so FastAPI's own 422 answers the rest, and nothing is counted for it).
class Loose(BaseModel):
    phone: Any = None
    template: Any = None


class Strict(BaseModel):
    phone: str
    template: str = "login"


class LooseCode(BaseModel):
    phone: Any = None
    code: Any = None


class StrictCode(BaseModel):
    phone: str
    code: str


def fastapi_app(guarded: bool) -> Any:
    app = FastAPI()
    if not guarded:

        @app.post("/sms/send")
        async def bare(body: Loose) -> Any:
            return {"ok": True}

        @app.post("/sms/strict")
        async def bare_strict(body: Strict) -> Any:
            return {"ok": True}

        @app.post("/sms/verify")
        async def bare_verify(body: LooseCode) -> Any:
            return {"ok": True}

        @app.post("/sms/verify/strict")
        async def bare_verify_strict(body: StrictCode) -> Any:
            return {"ok": True}

        return app

    sms = SMSGuard(app, guard=coded_guard(), trusted_proxies=["203.0.113.0/24"])
    loose = Depends(sms.protect(Loose, content="template"))
    strict = Depends(sms.protect(Strict))
    loose_code = Depends(sms.protect(LooseCode, action="verify"))
    strict_code = Depends(sms.protect(StrictCode, action="verify"))

    @app.post("/sms/verify")
    async def verify(body: LooseCode, result: Any = loose_code) -> Any:
        assert result.ok, "only a right code reaches the endpoint"
        return {"ok": True}

    @app.post("/sms/verify/strict")
    async def verify_strict(body: StrictCode, result: Any = strict_code) -> Any:
        assert result.ok, "only a right code reaches the endpoint"
        return {"ok": True}

    @app.post("/sms/send")
    async def send(body: Loose, decision: Any = loose) -> Any:
        return {"ok": True}

    @app.post("/sms/strict")
    async def send_strict(body: Strict, decision: Any = strict) -> Any:
        return {"ok": True}

    return app


# The same app without the guard: FastAPI alone answers some bodies with a 500 (form-encoded
# bytes that are not UTF-8, as of 0.165); the guard must add none of its own.
FASTAPI = TestClient(fastapi_app(True), client=(PEER, 1), raise_server_exceptions=False)
BARE_FASTAPI = TestClient(fastapi_app(False), client=(PEER, 1), raise_server_exceptions=False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request=requests(),
    path=st.sampled_from(["/sms/send", "/sms/strict", "/sms/verify", "/sms/verify/strict"]),
)
def test_fastapi_never_500(request: tuple[bytes, dict[str, str], str], path: str) -> None:
    body, headers, query = request
    response = FASTAPI.post(f"{path}?{query}", content=body, headers=headers)
    if response.status_code == 500:
        assert BARE_FASTAPI.post(f"{path}?{query}", content=body, headers=headers).status_code == 500
        return
    assert response.status_code in {*ALLOWED, 422}
    if response.status_code not in (200, 422):
        # Ours say "error"; FastAPI's own 400, for a body that is not JSON, says "detail".
        reply = json.loads(response.content)
        assert reply.get("error") or reply.get("detail") == "There was an error parsing the body"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    request=requests(),
    path=st.sampled_from(["/sms/send", "/v2/sync", "/v2/async", "/codes/verify", "/codes/v2/verify"]),
    method=methods,
)
def test_django_never_500(request: tuple[bytes, dict[str, str], str], path: str, method: str) -> None:
    import django_app  # noqa: F401  (configures Django once)
    from django.test import Client

    body, headers, query = request
    extra = {"HTTP_X_FORWARDED_FOR": headers["x-forwarded-for"]} if "x-forwarded-for" in headers else {}
    if "x-template" in headers:
        extra["HTTP_X_TEMPLATE"] = headers["x-template"]
    # generic(): post() would re-encode the bytes by the content type's charset, and fail first.
    response = Client().generic(
        method, f"{path}?{query}", body, content_type=headers["content-type"], REMOTE_ADDR=PEER, **extra
    )
    # /sms/send and /codes/verify are the middleware's, for POST; @protect guards its view whatever
    # the method.
    check(response.status_code, response.content, method, post_only=path in ("/sms/send", "/codes/verify"))
