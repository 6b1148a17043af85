"""The example apps under real servers over loopback: uvicorn and gunicorn, memory and Redis."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import RedisServer, free_port, start_nginx, stop_process, wait_listening, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FORMATS = ["{}", "+86 {}", "0086{}", "+86-{}"]


def serve(command: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def flood(base: str, number: str, clients: int = 10, each: int = 10) -> list[int]:
    """``clients`` concurrent clients, ``each`` requests apiece, all for one number."""

    def client(i: int) -> list[int]:
        with httpx.Client(base_url=base, timeout=30) as http:
            return [
                http.post(
                    "/sms/send", json={"phone": FORMATS[(i + j) % len(FORMATS)].format(number)}
                ).status_code
                for j in range(each)
            ]

    with ThreadPoolExecutor(clients) as pool:
        return [status for statuses in pool.map(client, range(clients)) for status in statuses]


# Only the daily cap (10) may bind: the others are turned off or set above the flood.
ONLY_DAILY_CAP = {
    "SMSGUARD_SAME_CONTENT_WINDOW": "0",
    "SMSGUARD_PHONE_RATE": "",
    "SMSGUARD_IP_RATE": "1000/hour",
}


def uvicorn(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "starlette_app:app", "--app-dir", str(EXAMPLES),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--log-level", "warning"]  # fmt: skip


def gunicorn(port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
            "--chdir", str(EXAMPLES), "flask_app:app"]  # fmt: skip


def test_uvicorn_memory_backend() -> None:
    port = free_port()
    for base in serve(uvicorn(port, 1), port, ONLY_DAILY_CAP):
        statuses = flood(base, "13800138001")
        assert sorted(statuses) == [200] * 10 + [429] * 90
        assert httpx.get(f"{base}/sms/outbox").json()["sent"] == 10
        bad = httpx.post(f"{base}/sms/send", json={"phone": "12"})
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid_request")


@pytest.mark.redis_server
@pytest.mark.parametrize(
    ("server", "number"), [(uvicorn, "13800138002"), (gunicorn, "13800138003")], ids=["uvicorn", "gunicorn"]
)
def test_two_workers_on_redis(redis_server: RedisServer, server: Any, number: str) -> None:
    port = free_port()
    env = {**ONLY_DAILY_CAP, "REDIS_URL": redis_server.url, "SMSGUARD_SECRET": "e2e-shared-secret"}
    for base in serve(server(port, 2), port, env):
        statuses = flood(base, number)
        assert sorted(statuses) == [200] * 10 + [429] * 90, "exactly the daily cap across both workers"
        refused = httpx.post(f"{base}/sms/send", json={"phone": "13900199999"})
        assert refused.status_code == 502  # the fake provider rejects it; the hit is refunded
        for _ in range(12):
            assert httpx.post(f"{base}/sms/send", json={"phone": "13900199999"}).status_code == 502


def burst(port: int, number: str, requests: int) -> list[tuple[int, bytes]]:
    """``requests`` requests for one number arriving at once: every connection is opened first,
    then every request written, then the answers read. (An HTTP client paces its requests; a
    burst from many clients does not.)"""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < requests + 256:  # this process holds every connection at once
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, requests + 256), hard))
    body = json.dumps({"phone": number}).encode()
    request = (
        b"POST /sms/send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(requests)]
    for sock in sockets:
        sock.sendall(request)
    answers = []
    for sock in sockets:
        with sock, sock.makefile("rb") as stream:
            status = int(stream.readline().split()[1])
            while stream.readline() not in (b"\r\n", b""):
                pass
            answers.append((status, stream.read()))
    return answers


@pytest.mark.redis_server
@pytest.mark.parametrize("mode", ["local", "closed"])
def test_burst_on_a_healthy_redis_is_no_outage(redis_server: RedisServer, mode: str) -> None:
    """500 requests for one number at once against 2 uvicorn workers, 250 each: each worker's
    event loop is saturated, so waiting for a Redis connection and opening one take long. That is
    no outage: the cap holds exactly and no request meets the fail mode. (Not more workers than
    cores: the test would then measure how a busy machine shares them out, not the guard.)"""
    port = free_port()
    env = {
        **ONLY_DAILY_CAP,
        "REDIS_URL": redis_server.url,
        "SMSGUARD_SECRET": f"burst-{mode}",
        "SMSGUARD_FAIL_MODE": mode,
    }
    for _ in serve(uvicorn(port, 2), port, env):
        number = "13800138004" if mode == "local" else "13800138005"
        answers = burst(port, number, 500)
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] * 10 + [429] * (len(answers) - 10), {
            s: statuses.count(s) for s in set(statuses)
        }
        assert {json.loads(body)["reason"] for status, body in answers if status == 429} == {"daily_cap"}


# -- deploying behind a proxy (README: "Deploying behind a proxy") ----------------------------

CLIENT = "127.0.0.2"  # the client's own loopback address, not the proxy's (127.0.0.1)
IP_LIMITED = {
    "SMSGUARD_SAME_CONTENT_WINDOW": "0",
    "SMSGUARD_PHONE_RATE": "",
    "SMSGUARD_DAILY_CAP": "100",
    "SMSGUARD_IP_RATE": "20/hour",
}


def serve_unix(command: list[str], path: Path, env: dict[str, str]) -> Iterator[str]:
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:

        def accepting() -> bool:
            try:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(str(path))
                return True
            except OSError:
                return False

        wait_until(accepting, f"a listener on {path}", 60, process)
        yield "http://localhost"
    finally:
        stop_process(process)


def forged_run(base: str, *, source: str = CLIENT) -> list[int]:
    """30 requests from one client, each for a fresh number and each forging both forwarding
    headers with a fresh address: only an IP limit can stop the 21st."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=base, transport=transport, timeout=30) as http:
        return [
            http.post(
                "/sms/send",
                json={"phone": f"138001{i:05d}"},
                headers={"forwarded": f"for=198.51.100.{i}", "x-forwarded-for": f"203.0.113.{i}"},
            ).status_code
            for i in range(30)
        ]


def behind_nginx(
    tmp_path: Path, server: list[str], upstream: str, env: dict[str, str], sock: Path | None
) -> list[int]:
    """``forged_run`` through a stock nginx in front of ``server``."""
    front = free_port()
    nginx = start_nginx(tmp_path, front, upstream)
    try:
        if sock is not None:
            for _ in serve_unix(server, sock, env):
                return forged_run(f"http://127.0.0.1:{front}")
        port = int(upstream.rsplit(":", 1)[1])
        for _ in serve(server, port, env):
            return forged_run(f"http://127.0.0.1:{front}")
    finally:
        stop_process(nginx)
    raise AssertionError("unreachable")


def uvicorn_on(where: str, *flags: str) -> list[str]:
    bind = ["--uds", where] if where.startswith("/") else ["--host", "127.0.0.1", "--port", where]
    return [sys.executable, "-m", "uvicorn", "starlette_app:app", "--app-dir", str(EXAMPLES), *bind,
            "--log-level", "warning", *flags]  # fmt: skip


def gunicorn_on(where: str) -> list[str]:
    bind = f"unix:{where}" if where.startswith("/") else f"127.0.0.1:{where}"
    return [sys.executable, "-m", "gunicorn", "-b", bind, "--chdir", str(EXAMPLES), "flask_app:app"]


@pytest.mark.nginx
@pytest.mark.parametrize(
    ("server", "trusted"),
    [
        ("uvicorn --no-proxy-headers", "127.0.0.1"),  # smsguard reads X-Forwarded-For
        ("uvicorn", ""),  # uvicorn's defaults read it (right-most untrusted hop), smsguard sees the client
        ("gunicorn", "127.0.0.1"),  # gunicorn leaves REMOTE_ADDR alone: smsguard reads it
        ("uvicorn --uds", "unix"),
        ("gunicorn unix:", "unix"),
    ],
)
def test_forged_forwarding_headers_behind_nginx_do_not_help(
    tmp_path: Path, server: str, trusted: str
) -> None:
    """nginx appends the peer to X-Forwarded-For and passes a client's own Forwarded through:
    the client still gets only its 20 an hour."""
    env = {**IP_LIMITED, "SMSGUARD_TRUSTED_PROXIES": trusted}
    sock = tmp_path / "app.sock" if "unix" in server or "uds" in server else None
    where = str(sock) if sock else str(free_port())
    command = (
        gunicorn_on(where)
        if server.startswith("gunicorn")
        else uvicorn_on(where, *server.split()[1:2] if "proxy" in server else ())
    )
    upstream = f"unix:{sock}:" if sock else f"127.0.0.1:{where}"
    statuses = behind_nginx(tmp_path, command, upstream, env, sock)
    assert sorted(statuses) == [200] * 20 + [429] * 10


def test_uvicorn_defaults_believe_a_local_client(tmp_path: Path) -> None:
    """What the README warns of: uvicorn's defaults take X-Forwarded-For from any peer on
    127.0.0.1, before the middleware sees the request; --no-proxy-headers leaves it to smsguard."""
    for flags, limited in [((), False), (("--no-proxy-headers",), True)]:
        port = free_port()
        for base in serve(uvicorn_on(str(port), *flags), port, IP_LIMITED):
            statuses = forged_run(base, source="127.0.0.1")
            assert sorted(statuses) == ([200] * 20 + [429] * 10 if limited else [200] * 30), flags


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_unix_socket_without_a_trusted_proxy_blames_the_server(tmp_path: Path, server: str) -> None:
    sock = tmp_path / "app.sock"
    command = uvicorn_on(str(sock)) if server == "uvicorn" else gunicorn_on(str(sock))
    for _ in serve_unix(command, sock, IP_LIMITED):
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://localhost") as http:
            response = http.post("/sms/send", json={"phone": "13800100000"})
    assert response.status_code == 500
    assert response.json()["error"] == "server_misconfigured", "not a 400 that blames the client"


def send_raw(port: int, head: bytes, chunks: list[bytes], *, chunked: bool = True) -> tuple[int, bytes]:
    """A request written by hand (chunked, or a body sent in pieces); (status, body) read back,
    status 0 if the server closed the connection without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered before taking the whole body
        with sock.makefile("rb") as stream:
            first = stream.readline()
            if not first:
                return 0, b""
            status = int(first.split()[1])
            length = 0
            while (line := stream.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            return status, stream.read(length)


def chunked_head(kind: str) -> bytes:
    return (
        b"POST /sms/send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" % kind.encode()
    )


def test_gunicorn_chunked_bodies_keep_max_body() -> None:
    """werkzeug cuts a chunked body at max_content_length without an error: the guard must not
    count the cut body, nor let the view run."""
    port = free_port()
    env = {"SMSGUARD_MAX_BODY": "4096", "SMSGUARD_SAME_CONTENT_WINDOW": "0"}
    for base in serve(gunicorn_on(str(port)), port, env):
        form = b"phone=13800138000&pad=" + b"x" * 6000
        status, body = send_raw(
            port, chunked_head("application/x-www-form-urlencoded"), [form[:3000], form[3000:]]
        )
        assert (status, json.loads(body)["error"]) == (413, "payload_too_large")
        big = json.dumps({"phone": "13800138000", "pad": "x" * 20_000}).encode()
        status, body = send_raw(
            port, chunked_head("application/json"), [big[i : i + 1000] for i in range(0, len(big), 1000)]
        )
        assert (status, json.loads(body)["error"]) == (413, "payload_too_large")
        assert httpx.get(f"{base}/sms/outbox").json()["sent"] == 0, "neither reached the view"
        small = json.dumps({"phone": "13800138000", "pad": "x" * 3000}).encode()
        status, body = send_raw(port, chunked_head("application/json"), [small[:100], small[100:]])
        assert (status, json.loads(body)) == (200, {"sent": True}), (
            "a chunked body within the limit is read whole"
        )


def test_gunicorn_malformed_chunks_are_a_400_not_a_500() -> None:
    """gunicorn raises its own exception for a malformed chunk from the guard's read of the
    body: the client gets a JSON 400, as under uvicorn (which answers 400 itself)."""
    port = free_port()
    for base in serve(gunicorn_on(str(port)), port, {}):
        head = chunked_head("application/json")
        status, body = send_raw(port, head + b'zz\r\n{"phone": "13800138000"}\r\n', [], chunked=False)
        assert status == 400
        assert json.loads(body)["error"] == "invalid_request"
        assert httpx.get(f"{base}/sms/outbox").json()["sent"] == 0


def test_uvicorn_stalled_bodies_are_let_go() -> None:
    """Clients that send headers and then stall their body get a 408 after body_timeout,
    rather than holding their connection forever."""
    port = free_port()
    env = {"SMSGUARD_BODY_TIMEOUT": "0.5"}
    head = (
        b"POST /sms/send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    for _ in serve(uvicorn_on(str(port)), port, env):
        with ThreadPoolExecutor(50) as pool:
            answers = list(
                pool.map(lambda _: send_raw(port, head, [b'{"phone": '], chunked=False), range(50))
            )
    assert {status for status, _ in answers} == {408}
    assert json.loads(answers[0][1]) == {
        "error": "request_timeout",
        "detail": "the body did not arrive within 0.5 s",
    }


@pytest.mark.nginx
def test_gunicorn_behind_nginx_is_not_held_by_stalled_bodies(tmp_path: Path) -> None:
    """Under WSGI the server holds a worker while it reads a body; nginx's request buffering
    keeps stalled bodies away from gunicorn's one sync worker, and its client_body_timeout ends
    them."""
    port, front = free_port(), free_port()
    nginx = start_nginx(tmp_path, front, f"127.0.0.1:{port}", "client_body_timeout 1s;")
    head = (
        b"POST /sms/send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n"
    )
    try:
        for base in serve(gunicorn_on(str(port)), port, {"SMSGUARD_TRUSTED_PROXIES": "127.0.0.1"}):
            with ThreadPoolExecutor(10) as pool:
                stalled = [
                    pool.submit(send_raw, front, head, [b'{"phone": '], chunked=False) for _ in range(10)
                ]
                served = httpx.post(
                    f"http://127.0.0.1:{front}/sms/send", json={"phone": "13800138000"}, timeout=5
                )
                assert served.json() == {"sent": True}, "the one worker was free"
                # nginx ends each: a 408, or (as it mostly does) a close without an answer
                assert {future.result()[0] for future in stalled} <= {408, 0}
                assert httpx.get(f"{base}/sms/outbox").json()["sent"] == 1
    finally:
        stop_process(nginx)


# -- the code routes: every example app, issue then verify, 4 workers on one Redis ------------

DJANGO_PROJECT = EXAMPLES / "django_project"
ASGI_APPS = {"starlette": "starlette_app:app", "fastapi": "fastapi_app:app"}


def example_server(app: str, server: str, port: int) -> list[str]:
    """The command that serves example ``app`` under ``server`` with 4 workers on ``port``:
    uvicorn (Flask through its WSGI interface) or gunicorn (the ASGI apps with uvicorn's worker,
    Django's WSGI application)."""
    bind = ["--host", "127.0.0.1", "--port", str(port), "--workers", "4", "--no-proxy-headers"]
    where = ["--app-dir", str(DJANGO_PROJECT if app == "django" else EXAMPLES)]
    if server == "uvicorn":
        target = {"django": "smsdemo.asgi:application", "flask": "flask_app:app"}.get(app) or ASGI_APPS[app]
        wsgi = ["--interface", "wsgi"] if app == "flask" else []
        return [sys.executable, "-m", "uvicorn", target, *where, *bind, *wsgi, "--log-level", "warning"]
    command = [sys.executable, "-m", "gunicorn", "-w", "4", "-b", f"127.0.0.1:{port}"]
    if app == "django":
        return [*command, "--chdir", str(DJANGO_PROJECT), "smsdemo.wsgi"]
    if app == "flask":
        return [*command, "--chdir", str(EXAMPLES), "flask_app:app"]
    return [*command, "-k", "uvicorn.workers.UvicornWorker", "--chdir", str(EXAMPLES), ASGI_APPS[app]]


def printed_code(out: Path, phone: str, process: subprocess.Popen[Any], after: int = 0) -> str:
    """The code the example's fake sender printed for ``phone`` (E.164), found past the first
    ``after`` such lines of the server's output."""
    masked = f"{phone[:-8]}****{phone[-4:]}"
    found: list[str] = []

    def printed() -> bool:
        lines = [line for line in out.read_text().splitlines() if f"fake SMS to {masked}:" in line]
        found[:] = [line.rsplit(" ", 1)[1] for line in lines[after:]]
        return bool(found)

    wait_until(printed, f"the code for {masked} in the server's output", 30, process)
    return found[0]


@pytest.mark.redis_server
@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
@pytest.mark.parametrize("app", ["starlette", "fastapi", "flask", "django"])
def test_every_example_app_sends_then_verifies_on_redis_with_four_workers(
    redis_server: RedisServer, tmp_path: Path, app: str, server: str
) -> None:
    """Under uvicorn and gunicorn, 4 workers on one Redis: the code the fake sender printed
    verifies once, whichever worker checks it; a wrong code, no code and a spent one get the one
    400; 50 guesses at once from 50 addresses (read from the trusted proxy's X-Forwarded-For)
    are judged five times, then the code is dead."""
    from conftest import unique_prefix

    port = free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "SMSGUARD_SECRET": "e2e-codes",
        "SMSGUARD_KEY_PREFIX": unique_prefix(),
        "SMSGUARD_TRUSTED_PROXIES": "127.0.0.1",
    }
    out = tmp_path / "server.out"
    with out.open("w") as stdout:
        process = subprocess.Popen(
            example_server(app, server, port),
            env={**os.environ, **env},
            stdout=stdout,
            stderr=subprocess.DEVNULL,
        )
    invalid = {"error": "invalid_code", "policy": None, "reason": "invalid_code", "retry_after": None}
    try:
        wait_listening(port, process)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:

            def verify(phone: str, code: Any, ip: str = "192.0.2.1") -> tuple[int, Any]:
                answer = http.post(
                    "/sms/verify", json={"phone": phone, "code": code}, headers={"x-forwarded-for": ip}
                )
                return answer.status_code, answer.json()

            sent = http.post("/sms/send", json={"phone": "+86 138 0013 8001"})
            assert (sent.status_code, sent.json()) == (200, {"sent": True})
            code = printed_code(out, "+8613800138001", process)
            wrong = f"{(int(code) + 1) % 10**6:06d}"
            assert verify("13800138001", wrong) == (400, invalid)
            assert verify("13800138002", code) == (400, invalid), "a number with no code looks the same"
            missing = http.post("/sms/verify", json={"phone": "13800138001"})
            # FastAPI's model rejects a body without the code before the dependency (its own 422).
            assert missing.status_code == (422 if app == "fastapi" else 400)
            assert verify("138 0013 8001", code) == (200, {"verified": True})
            assert verify("13800138001", code) == (400, invalid), "spent by its first right check"

            assert http.post("/sms/send", json={"phone": "13800138003"}).status_code == 200
            target = printed_code(out, "+8613800138003", process)
            guesses = [f"{n:06d}" for n in range(51) if f"{n:06d}" != target][:50]
            with ThreadPoolExecutor(10) as pool:
                answers = list(
                    pool.map(
                        lambda n: verify("13800138003", guesses[n], f"198.51.100.{n + 1}"),
                        range(len(guesses)),
                    )
                )
            assert sorted(status for status, _ in answers) == [400] * 5 + [429] * 45, "five guesses judged"
            assert [body for status, body in answers if status == 400] == [invalid] * 5
            assert verify("13800138003", target)[0] == 429, "the code is dead: the right one too"
    finally:
        stop_process(process)
