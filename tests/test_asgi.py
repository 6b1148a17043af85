"""The ASGI middleware through a real Starlette app and its test client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pydantic
import pytest
from conftest import Clock
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from smsguard import ConfigError, DailyCap, Guard, IPThrottle, SameContent
from smsguard.adapters.asgi import Headers, SMSGuardMiddleware
from smsguard.backends.redis import RedisBackend

PEER = ("203.0.113.9", 50000)
VICTIM = "13800138000"


def make_app(guard: Guard, **options: Any) -> Starlette:
    async def send(request: Request) -> Response:
        body = await request.body()
        if b"explode" in body:
            raise RuntimeError("the SMS provider is down")
        if b"reject" in body:
            return JSONResponse({"sent": False}, status_code=502)
        return JSONResponse(
            {
                "echo": body.decode(),
                "type": request.headers.get("content-type"),
                "phone": request.state.smsguard.phone,
            }
        )

    async def other(request: Request) -> Response:
        return JSONResponse({"other": (await request.body()).decode()})

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/sms/send", send, methods=["POST"]),
            Route("/other", other, methods=["POST"]),
            WebSocketRoute("/ws", ws),
        ]
    )
    app.add_middleware(SMSGuardMiddleware, guard=guard, routes=["POST /sms/send"], **options)
    return app


@pytest.fixture
def guard(make_guard: Callable[..., Guard]) -> Guard:
    return make_guard([SameContent(), DailyCap(3), IPThrottle("100/hour")])


@pytest.fixture
def client(guard: Guard) -> Iterator[TestClient]:
    with TestClient(make_app(guard), client=PEER) as test_client:
        yield test_client


def test_allowed_request_reaches_the_endpoint_with_its_body(client: TestClient) -> None:
    body = '{"phone": "138 0013 8000", "note": "unchanged ✓"}'
    response = client.post("/sms/send", content=body.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json() == {"echo": body, "type": "application/json", "phone": "+8613800138000"}


def test_form_and_query(client: TestClient) -> None:
    assert client.post("/sms/send", data={"phone": "13800138000"}).status_code == 200
    assert client.post("/sms/send?phone=13900139000").status_code == 200


def test_denied_is_429_with_headers(client: TestClient, clock: Clock) -> None:
    assert client.post("/sms/send", json={"phone": "13800138000"}).status_code == 200
    clock.advance(10.5)
    response = client.post("/sms/send", json={"phone": "+86 138 0013 8000"})
    assert response.status_code == 429
    assert response.json() == {
        "error": "rate_limited",
        "policy": "same_content",
        "reason": "same_content",
        "retry_after": 20,
    }
    assert response.headers["retry-after"] == "20"
    assert response.headers["ratelimit-policy"] == '"same_content";q=1'
    assert response.headers["ratelimit"] == '"same_content";r=0;t=20'


@pytest.mark.parametrize(
    ("kwargs", "detail"),
    [
        ({"json": {"phone": "12"}}, "'12' is not a valid number for region CN"),
        ({"json": {"mobile": "13800138000"}}, "missing phone number"),
        ({"content": b"{oops", "headers": {"content-type": "application/json"}}, "not valid JSON"),
        ({"content": b"<a/>", "headers": {"content-type": "text/xml"}}, "unsupported content type"),
        ({"json": {"phone": ["13800138000"]}}, "phone must be a string"),
    ],
)
def test_bad_input_is_400(client: TestClient, kwargs: dict[str, Any], detail: str) -> None:
    response = client.post("/sms/send", **kwargs)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert detail in response.json()["detail"]


def test_body_too_large_is_413(guard: Guard) -> None:
    with TestClient(make_app(guard, max_body=100), client=PEER) as client:
        big = json.dumps({"phone": "13800138000", "pad": "x" * 200})
        response = client.post("/sms/send", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"phone": "13800138000", "pad": "'
            yield b"x" * 200
            yield b'"}'

        streamed = client.post("/sms/send", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        small = client.post("/sms/send", json={"phone": "13800138000"})
        assert small.status_code == 200, "nothing was counted for the refused bodies"


def test_refund_when_the_endpoint_fails(guard: Guard) -> None:
    app = make_app(guard)
    with TestClient(app, client=PEER, raise_server_exceptions=False) as client:
        for _ in range(5):  # a 5xx from the endpoint gives the hit back every time
            rejected = client.post("/sms/send", json={"phone": "13800138000", "x": "reject"})
            assert rejected.status_code == 502
        for _ in range(5):  # and so does an exception
            assert client.post("/sms/send", json={"phone": "13800138000", "x": "explode"}).status_code == 500
    with TestClient(app, client=PEER) as client:
        assert client.post("/sms/send", json={"phone": "13800138000"}).status_code == 200
        assert (
            client.post("/sms/send", json={"phone": "13800138000", "t": 2}).status_code == 429
        )  # same content
    assert guard.check("13800138000", content="other", ip=PEER[0]).remaining["daily_cap"] == 1


def test_cancelled_endpoint_keeps_the_hit(make_guard: Callable[..., Guard]) -> None:
    """A server may cancel the endpoint when the client hangs up, perhaps after the SMS
    went out: that must not give the quota back, or hanging up would beat the limits."""
    guard = make_guard([DailyCap(1)])
    app = make_app(guard)

    async def call() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b'{"phone": "13800138000"}', "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            raise asyncio.CancelledError  # the server gives up on the response

        scope = {"type": "http", "method": "POST", "path": "/sms/send", "query_string": b"", "client": PEER,
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"24")]}  # fmt: skip
        with pytest.raises(asyncio.CancelledError):
            await app(scope, receive, send)

    asyncio.run(call())
    assert guard.check("13800138000", content="POST /sms/send", ip=PEER[0]).reason == "daily_cap"


def raw_call(app: Starlette, scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Call ``app`` with ``scope``, feeding it ``messages``; return what it sent."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    base = {"type": "http", "method": "POST", "path": "/sms/send", "query_string": b"", "client": PEER}
    asyncio.run(app({**base, **scope}, receive, send))  # type: ignore[arg-type]
    return sent


def test_http1_request_without_length_is_judged_on_what_arrives(guard: Guard) -> None:
    """No Content-Length and no chunks: an HTTP/1 server delivers an empty body, and the guard
    reads the number from the query string; an in-process client (Quart's test client) delivers
    a body all the same, and the guard judges that body, which the app reads, not the query."""
    app = make_app(guard)
    disconnect = {"type": "http.disconnect"}
    scope = {"http_version": "1.1", "headers": [], "query_string": b"phone=13800138000"}
    sent = raw_call(app, scope, [{"type": "http.request", "body": b"", "more_body": False}, disconnect])
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["echo"] == ""
    unframed = {"type": "http.request", "body": b'{"phone": "13900139000"}', "more_body": False}
    scope = {"http_version": "1.1", "headers": [(b"content-type", b"application/json")]}
    sent = raw_call(app, scope, [unframed, disconnect])
    assert sent[0]["status"] == 200
    answer = json.loads(sent[1]["body"])
    assert (answer["phone"], answer["echo"]) == ("+8613900139000", '{"phone": "13900139000"}')


def test_http2_request_without_length_is_read(guard: Guard) -> None:
    app = make_app(guard)
    body = {"type": "http.request", "body": b'{"phone": "13800138000"}', "more_body": False}
    scope = {"http_version": "2", "headers": [(b"content-type", b"application/json")]}
    sent = raw_call(app, scope, [body])
    assert sent[0]["status"] == 200, "HTTP/2 frames a body without Content-Length"
    assert json.loads(sent[1]["body"])["phone"] == "+8613800138000"


def test_client_ip_from_trusted_proxy_only(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([IPThrottle("1/hour")])
    app = make_app(guard, trusted_proxies=["10.0.0.0/8"])
    spoof = {"x-forwarded-for": "198.51.100.77"}
    with TestClient(app, client=("203.0.113.9", 1)) as direct:
        assert direct.post("/sms/send", json={"phone": "13800138000"}, headers=spoof).status_code == 200
        # The header is ignored from an untrusted peer: a new spoofed address does not help.
        spoof2 = {"x-forwarded-for": "198.51.100.78"}
        assert direct.post("/sms/send", json={"phone": "13900139000"}, headers=spoof2).status_code == 429
    with TestClient(app, client=("10.1.2.3", 1)) as proxied:
        assert proxied.post("/sms/send", json={"phone": "13800138000"}, headers=spoof).status_code == 200
        again = proxied.post("/sms/send", json={"phone": "13900139000"}, headers=spoof)
        assert again.status_code == 429, "198.51.100.77 has used its one"
        other = {"x-forwarded-for": "198.51.100.79"}
        assert proxied.post("/sms/send", json={"phone": "13900139000"}, headers=other).status_code == 200


def test_headers_read_lazily_from_the_asgi_list() -> None:
    raw = [
        (b"content-type", b"application/json"),
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"x-forwarded-for", b"2.2.2.2"),
    ]
    headers = Headers(raw)
    assert headers["content-type"] == "application/json"
    assert headers.get("x-forwarded-for") == "1.1.1.1, 2.2.2.2", "a repeated header reads as one list"
    assert headers.get("forwarded") is None
    assert headers.get("x-\u263a") is None, "a name no header can have is simply absent"
    assert list(headers) == ["content-type", "x-forwarded-for"]
    assert len(headers) == 2
    assert dict(headers) == {"content-type": "application/json", "x-forwarded-for": "1.1.1.1, 2.2.2.2"}


def test_repeated_forwarding_header_counts_the_right_most_hop(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([IPThrottle("1/hour")])
    app = make_app(guard, trusted_proxies=["10.0.0.0/8"])
    with TestClient(app, client=("10.1.2.3", 1)) as proxied:
        # The client wrote the first line, the proxy appended the second: the proxy's counts.
        lines = [("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "198.51.100.90")]
        assert proxied.post("/sms/send", json={"phone": "13800138000"}, headers=lines).status_code == 200
        other_spoof = [("x-forwarded-for", "198.51.100.2"), ("x-forwarded-for", "198.51.100.90")]
        denied = proxied.post("/sms/send", json={"phone": "13900139000"}, headers=other_spoof)
        assert denied.status_code == 429, "198.51.100.90 has used its one, whatever it wrote first"


def test_other_routes_and_websockets_pass_through(client: TestClient) -> None:
    assert client.post("/other", content=b"anything").json() == {"other": "anything"}
    assert client.get("/sms/send").status_code == 405, "another method is refused"
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hello"


def test_backend_down_closed_is_503(clock: Clock) -> None:
    from servers import free_port

    backend = RedisBackend.from_url(f"redis://127.0.0.1:{free_port()}/0")
    guard = Guard(
        [DailyCap(3)], backend=backend, fail_mode="closed", clock=clock, secret="s", default_region="CN"
    )
    with TestClient(make_app(guard), client=PEER) as client:
        response = client.post("/sms/send", json={"phone": "13800138000"})
        assert response.status_code == 503
        assert response.json() == {
            "error": "unavailable",
            "policy": None,
            "reason": "backend_unavailable",
            "retry_after": 5,
        }
        assert response.headers["retry-after"] == "5"


def test_fastapi_app(make_guard: Callable[..., Guard]) -> None:
    fastapi = pytest.importorskip("fastapi")  # FastAPI is Starlette underneath; run when installed
    app = fastapi.FastAPI()

    @app.post("/sms/send")
    async def send(payload: dict[str, str]) -> dict[str, str]:
        return {"to": payload["phone"]}

    app.add_middleware(SMSGuardMiddleware, guard=make_guard([DailyCap(1)]))
    with TestClient(app, client=PEER) as client:
        assert client.post("/sms/send", json={"phone": "13800138000"}).json() == {"to": "13800138000"}
        assert client.post("/sms/send", json={"phone": "13800138000"}).status_code == 429


@pytest.mark.parametrize(
    "routes",
    ["/sms/send", ["/sms/send"], ["POST"], ["POST sms/send"], ["SEND /sms/send"], [], ["POST /a /b"]],
)
def test_malformed_routes_fail_at_construction(guard: Guard, routes: Any) -> None:
    with pytest.raises(ConfigError, match=r"METHOD /path|routes is empty"):
        SMSGuardMiddleware(make_app(guard), guard=guard, routes=routes)


@pytest.mark.parametrize("routes", ["post /sms/send", "POST /sms/send", ["post /sms/send"]])
def test_lower_case_and_plain_string_routes_guard(make_guard: Callable[..., Guard], routes: Any) -> None:
    guard = make_guard([DailyCap(1)])
    app = Starlette(routes=[Route("/sms/send", lambda r: JSONResponse({}), methods=["POST"])])
    app.add_middleware(SMSGuardMiddleware, guard=guard, routes=routes)
    with TestClient(app, client=PEER) as client:
        assert [client.post("/sms/send", json={"phone": VICTIM}).status_code for _ in range(2)] == [200, 429]


def test_mounted_app_guards_its_routes_below_the_prefix(make_guard: Callable[..., Guard]) -> None:
    fastapi = pytest.importorskip("fastapi")
    api = fastapi.FastAPI()

    @api.post("/sms/send")
    async def send(request: Request) -> dict[str, str]:
        return {"to": request.state.smsguard.phone}

    api.add_middleware(SMSGuardMiddleware, guard=make_guard([DailyCap(1)]), routes=["POST /sms/send"])
    site = Starlette(routes=[Mount("/api", app=api)])
    with TestClient(site, client=PEER) as client:
        assert client.post("/api/sms/send", json={"phone": VICTIM}).json() == {"to": "+8613800138000"}
        assert client.post("/api/sms/send", json={"phone": VICTIM}).status_code == 429


class Send(pydantic.BaseModel):
    phone: str
    code_length: int


def test_fastapi_422_gives_the_quota_back(make_guard: Callable[..., Guard]) -> None:
    """FastAPI validates after the middleware has counted: its 422 sent no SMS."""
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI()

    @app.post("/sms/send")
    async def send(payload: Send) -> dict[str, int]:
        return {"digits": payload.code_length}

    app.add_middleware(SMSGuardMiddleware, guard=make_guard([DailyCap(1)]))
    with TestClient(app, client=PEER) as client:
        for _ in range(3):
            assert client.post("/sms/send", json={"phone": VICTIM, "code_length": "six"}).status_code == 422
        assert client.post("/sms/send", json={"phone": VICTIM, "code_length": 6}).json() == {"digits": 6}
        assert client.post("/sms/send", json={"phone": VICTIM, "code_length": 6}).status_code == 429


def test_starlette_s_plain_test_client_is_served(make_guard: Callable[..., Guard]) -> None:
    """``TestClient(app)`` names its peer "testclient", not an address: it is read as 127.0.0.1
    (httpx's ASGI transport's default), so a guard with IPThrottle serves it."""
    guard = make_guard([DailyCap(3), IPThrottle("2/hour")])
    with TestClient(make_app(guard)) as client:
        assert client.post("/sms/send", json={"phone": VICTIM}).status_code == 200
        assert client.post("/sms/send", json={"phone": "13900139000"}).status_code == 200
        denied = client.post("/sms/send", json={"phone": "13700137000"})
    assert (denied.status_code, denied.json()["reason"]) == (429, "ip_throttle")
    assert guard.check("13600136000", ip="127.0.0.1").reason == "ip_throttle", "counted on 127.0.0.1"


def test_a_peer_that_is_no_address_is_the_server_s_fault_and_says_so_only_in_the_log(
    make_guard: Callable[..., Guard], caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard([DailyCap(3), IPThrottle("2/hour")])
    with TestClient(make_app(guard), client=("somehost", 1)) as client, caplog.at_level("ERROR"):
        response = client.post("/sms/send", json={"phone": VICTIM})
    assert response.status_code == 500
    assert response.json() == {
        "error": "server_misconfigured",
        "detail": "the server cannot serve this request",
    }
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "ip_throttle needs ip=" in logged, logged
    assert "'somehost'" in logged, logged
    assert guard.status(VICTIM)[0].used == 0
