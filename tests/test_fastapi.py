"""The FastAPI dependency: after validation, the middleware's responses, refunds, routers; through
FastAPI's test client on every backend, and once through uvicorn over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel
from servers import free_port, wait_until
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from smsguard import DailyCap, Decision, Guard, IPThrottle, SameContent
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.adapters.fastapi import SMSGuard
from smsguard.backends.base import Backend

VICTIM = "+8613800138000"
EXAMPLES = Path(__file__).parent.parent / "examples"


class SendCode(BaseModel):
    mobile: str
    template: str = "login"


def app_for(guard: Guard, **options: Any) -> tuple[FastAPI, list[str]]:
    app = FastAPI()
    sms = SMSGuard(app, guard=guard, **options)
    seen: list[str] = []
    by_mobile = Depends(sms.protect(SendCode, phone="mobile"))
    by_query = Depends(sms.protect(param="phone", source=Query()))

    @app.post("/sms/send")
    async def send(body: SendCode, decision: Decision = by_mobile) -> Any:
        seen.append(decision.phone)
        if body.template == "fail":
            raise RuntimeError("the SMS provider is down")
        if body.template == "gone":
            raise HTTPException(404, "no such template")
        return {"phone": decision.phone}

    @app.get("/sms/query")
    async def phone_in_query(decision: Decision = by_query) -> Any:
        return {"phone": decision.phone}

    router = APIRouter(dependencies=[Depends(sms.protect(SendCode, phone="mobile", content="template"))])

    @router.post("/v2/sms/send")
    async def send_v2(body: SendCode, request: Request) -> Any:
        return {"phone": request.state.smsguard.phone, "template": body.template}

    app.include_router(router)
    return app, seen


def make(backend: Backend, **options: Any) -> tuple[TestClient, Guard, list[str]]:
    guard = Guard(
        [SameContent(skip_missing=True), DailyCap(3)], backend=backend, default_region="CN", secret="s"
    )
    app, seen = app_for(guard, **options)
    return TestClient(app), guard, seen


def test_judged_after_validation_on_every_backend(backend: Backend) -> None:
    client, guard, seen = make(backend)
    r = client.post("/sms/send", json={"mobile": "138 0013 8000"})
    assert (r.status_code, r.json()) == (200, {"phone": VICTIM})
    assert client.post("/sms/send", json={"mobile": 13800138000}).status_code == 422
    assert client.post("/sms/send", json={"phone": VICTIM}).status_code == 422
    assert guard.status(VICTIM)[0].used == 1, "a body FastAPI rejects is never counted"
    assert seen == [VICTIM]


def test_the_middleware_s_responses() -> None:
    """The same refusals, byte for byte, as the ASGI middleware gives."""
    client, _, _ = make(Guard().backend)

    async def endpoint(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    starlette = Starlette(routes=[Route("/sms/send", endpoint, methods=["POST"])])
    other = Guard([SameContent(skip_missing=True), DailyCap(3)], default_region="CN", secret="s")
    starlette.add_middleware(SMSGuardMiddleware, guard=other, phone="mobile")
    middleware = TestClient(starlette)
    for body in (
        {"mobile": "12"},
        {"mobile": VICTIM},
        {"mobile": VICTIM},
        {"mobile": VICTIM},
        {"mobile": VICTIM},
    ):
        ours, theirs = client.post("/sms/send", json=body), middleware.post("/sms/send", json=body)
        assert ours.status_code == theirs.status_code
        if ours.status_code == 200:
            continue  # two endpoints, two bodies
        assert ours.json() == theirs.json()
        for header in ("retry-after", "ratelimit", "ratelimit-policy", "content-type"):
            assert ours.headers.get(header) == theirs.headers.get(header), header
    assert ours.status_code == 429
    assert ours.json()["reason"] == "same_content"
    bad = client.post("/sms/send", json={"mobile": "12"})
    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")


def test_refunds_as_the_middleware_does(backend: Backend) -> None:
    client, guard, _ = make(backend, refund_on=[502, 404])
    fail = TestClient(client.app, raise_server_exceptions=False)
    assert fail.post("/sms/send", json={"mobile": VICTIM, "template": "fail"}).status_code == 500
    assert client.post("/sms/send", json={"mobile": VICTIM, "template": "gone"}).status_code == 404
    assert guard.status(VICTIM)[0].used == 0, "an exception, and an HTTPException in refund_on, refund"
    only_5xx, guard2, _ = make(backend, refund_on=[503])
    assert only_5xx.post("/sms/send", json={"mobile": VICTIM, "template": "gone"}).status_code == 404
    assert guard2.status(VICTIM)[0].used == 1, "a 404 not in refund_on keeps its count"


def test_a_router_and_a_query_parameter(backend: Backend) -> None:
    client, _, _ = make(backend)
    r = client.post("/v2/sms/send", json={"mobile": VICTIM, "template": "signup"})
    assert r.json() == {"phone": VICTIM, "template": "signup"}
    assert client.post("/v2/sms/send", json={"mobile": VICTIM, "template": "signup"}).json()["reason"] == (
        "same_content"
    ), "the template is the content"
    assert client.get("/sms/query", params={"phone": "13800138000"}).json() == {"phone": VICTIM}
    assert client.get("/sms/query").status_code == 422


def test_the_example_app_under_uvicorn(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(EXAMPLES), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(base), "uvicorn to answer", process=server)
        statuses = [
            httpx.post(f"{base}/sms/send", json={"phone": "+86 138 0013 8000"}).status_code for _ in range(3)
        ]
        assert statuses == [200, 429, 429], "one a minute (phone_rate)"
        denied = httpx.post(f"{base}/sms/send", json={"phone": "+86 138 0013 8000"})
        assert denied.json()["reason"] == "phone_rate"
        assert int(denied.headers["retry-after"]) > 0
        assert httpx.post(f"{base}/sms/send", content=b"{").status_code == 422
        assert httpx.post(f"{base}/sms/send", json={"phone": "12"}).status_code == 400
        assert httpx.post(f"{base}/sms/send", json={"phone": "+8613800199999"}).status_code == 502
        assert httpx.post(f"{base}/sms/send", json={"phone": "+8613800199999"}).status_code == 502, "refunded"
        assert httpx.get(f"{base}/sms/outbox").json()["sent"] == 1
        wrong = httpx.post(f"{base}/sms/verify", json={"phone": "+86 138 0013 8000", "code": "x"})
        assert wrong.status_code == 400
        assert httpx.post(f"{base}/sms/verify", json={"phone": "12", "code": "1"}).status_code == 400
    finally:
        server.terminate()
        server.wait(10)


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/sms/outbox").status_code == 200
    except httpx.HTTPError:
        return False


def test_bad_options_fail_at_once() -> None:
    from smsguard import ConfigError

    with pytest.raises(ConfigError, match="unknown option"):
        SMSGuard(guard=Guard(), phone_field="x")


def test_max_body_and_a_field_given_twice(backend: Backend) -> None:
    client, guard, seen = make(backend, max_body=1024)
    big = json.dumps({"mobile": VICTIM, "template": "x" * 1_000_000})
    r = client.post("/sms/send", content=big, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (413, "payload_too_large")
    twice = f'{{"mobile": "{VICTIM}", "mobile": "13900139000"}}'
    r = client.post("/sms/send", content=twice, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_request")
    assert "more than once" in r.json()["detail"]
    r = client.post("/sms/send?mobile=13900139000", json={"mobile": VICTIM})
    assert r.status_code == 400, "in the query and in the body"
    assert seen == [], "nothing sent"
    assert guard.status(VICTIM)[0].used == 0, "nothing counted"
    assert client.post("/sms/send", json={"mobile": VICTIM}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [b'{"mobile": 13800138000}', b"{}", b"", b"[1]", b'{"mobile": "x", "template": 7}', b"null"],
)
def test_a_422_is_fastapi_s_own_each_error_once(body: bytes) -> None:
    """What a guarded endpoint answers to a body its model rejects is what the same endpoint
    answers unguarded: each error listed once."""
    guarded, _, seen = make(Guard().backend)
    bare = FastAPI()

    @bare.post("/sms/send")
    async def send(body: SendCode) -> Any:
        return {}

    headers = {"content-type": "application/json"}
    ours = guarded.post("/sms/send", content=body, headers=headers)
    theirs = TestClient(bare).post("/sms/send", content=body, headers=headers)
    assert ours.status_code == theirs.status_code == 422
    assert ours.json() == theirs.json()
    assert seen == []


def test_the_plain_test_client_is_served() -> None:
    """``TestClient(app)``'s peer, "testclient", is read as 127.0.0.1."""
    guard = Guard([IPThrottle("1/hour")], default_region="CN", secret="s")
    app, _ = app_for(guard)
    client = TestClient(app)
    assert client.post("/sms/send", json={"mobile": VICTIM}).status_code == 200
    assert client.post("/sms/send", json={"mobile": "13900139000"}).json()["reason"] == "ip_throttle"
