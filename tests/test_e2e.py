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
from servers import RedisServer, free_port, stop_process, wait_listening

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
    """2,000 requests for one number at once against 8 uvicorn workers on this machine's cores:
    each worker's event loop is saturated, so waiting for a Redis connection and opening one take
    long. That is no outage: the cap holds exactly and no request meets the fail mode."""
    port = free_port()
    env = {
        **ONLY_DAILY_CAP,
        "REDIS_URL": redis_server.url,
        "SMSGUARD_SECRET": f"burst-{mode}",
        "SMSGUARD_FAIL_MODE": mode,
    }
    for _ in serve(uvicorn(port, 8), port, env):
        number = "13800138004" if mode == "local" else "13800138005"
        answers = burst(port, number, 2000)
        statuses = sorted(status for status, _ in answers)
        assert statuses == [200] * 10 + [429] * (len(answers) - 10), {
            s: statuses.count(s) for s in set(statuses)
        }
        assert {json.loads(body)["reason"] for status, body in answers if status == 429} == {"daily_cap"}
