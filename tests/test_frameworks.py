"""Litestar and Quart through the ASGI middleware: the example apps, through each framework's
own test client and under uvicorn over loopback, play the same run: a code sent and checked,
a number bombed, a number that is none, another method on the guarded path, and a chunked body.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port, stop_process, wait_listening, wait_until

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FRAMEWORKS = ["litestar", "quart"]
PEER = ("203.0.113.9", 50000)

Answer = tuple[int, dict[str, str], Any]
"""Status, headers (names in lower case), JSON body."""
Post = Callable[[str, bytes, bool], Awaitable[Answer]]
"""``post(path, body, chunked)``: a JSON body, sent with a Content-Length or else in chunks."""


def body(**fields: str) -> bytes:
    return json.dumps(fields).encode()


def chunks(data: bytes) -> list[bytes]:
    """``data`` in three pieces: the number split across them."""
    third = len(data) // 3
    return [data[:third], data[third : 2 * third], data[2 * third :]]


async def play(post: Post, codes: Callable[[], list[str]]) -> None:
    """The run each framework and server must answer alike. ``codes()`` are the codes the fake
    SMS sender printed, oldest first."""
    status, _, answer = await post("/sms/send", body(phone="+86 138 0013 8000"), False)
    assert (status, answer) == (200, {"sent": True})
    code = codes()[-1]
    wrong = "000000" if code != "000000" else "111111"
    status, _, answer = await post("/sms/verify", body(phone="13800138000", code=wrong), False)
    assert (status, answer["error"]) == (400, "invalid_code")
    status, _, answer = await post("/sms/verify", body(phone="13800138000", code=code), False)
    assert (status, answer) == (200, {"verified": True})

    bombing = [await post("/sms/send", body(phone="13900139000"), False) for _ in range(6)]
    assert [status for status, _, _ in bombing] == [200] + [429] * 5
    for _, headers, answer in bombing[1:]:
        assert (answer["error"], answer["reason"]) == ("rate_limited", "phone_rate")
        assert 0 < int(headers["retry-after"]) <= 60
        assert int(headers["retry-after"]) == answer["retry_after"]

    status, _, answer = await post("/sms/send", body(phone="12"), False)
    assert (status, answer["error"]) == (400, "invalid_request")
    assert "'12' is not a valid number" in answer["detail"]

    # Chunked, no Content-Length: the guard judges the number the endpoint texts.
    sent = len(codes())
    status, _, answer = await post("/sms/send", body(phone="13700137000"), True)
    assert (status, answer) == (200, {"sent": True})
    assert len(codes()) == sent + 1
    status, _, answer = await post("/sms/send", body(phone="13700137000"), False)
    assert (status, answer["reason"]) == (429, "phone_rate"), "the chunked send was counted for its number"
    status, _, answer = await post("/sms/send", b'{"phone": "13600136000", "phone": "13600136001"}', True)
    assert (status, answer["error"]) == (400, "invalid_request"), "a field sent twice, chunked too"
    assert len(codes()) == sent + 1


def printed_codes(text: str) -> list[str]:
    return re.findall(r"Your code is (\d+)", text)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """The example app of a framework, imported afresh (a guard of its own) with the default
    settings: no SMSGUARD_* from the environment. Litestar's app configures logging (the root
    logger's handlers, on this test's captured stderr): put back as it was after the test."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in [k for k in os.environ if k.startswith("SMSGUARD_") or k == "REDIS_URL"]:
        monkeypatch.delenv(name)
    loggers = [logging.getLogger(), logging.getLogger("litestar")]
    saved = [(logger, logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield lambda framework: importlib.reload(importlib.import_module(f"{framework}_app"))
    for logger, handlers, level, propagate in saved:
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_litestar_test_client(example: Callable[[str], Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Litestar's TestClient (its AsyncTestClient's transport cannot stream a body)."""
    from litestar.testing import TestClient

    module = example("litestar")
    seen: list[str] = []

    def codes() -> list[str]:
        seen.extend(printed_codes(capsys.readouterr().out))
        return seen

    with TestClient(app=module.app) as client:

        async def post(path: str, data: bytes, chunked: bool) -> Answer:
            headers = {"content-type": "application/json"}
            reply = client.post(path, content=iter(chunks(data)) if chunked else data, headers=headers)
            assert (reply.request.headers.get("transfer-encoding") == "chunked") is chunked
            return reply.status_code, dict(reply.headers), reply.json()

        asyncio.run(play(post, codes))
        other = client.get("/sms/send")
        assert other.status_code == 405  # Litestar's own: its middleware runs on matched routes only
    assert len(module.outbox) == 3


def test_quart_test_client(example: Callable[[str], Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Quart's test client sends no Content-Length at all, and names no peer: ``scope_base``
    gives it one (without, the guard has no client address, and answers 500)."""
    module = example("quart")
    app = module.app
    seen: list[str] = []

    def codes() -> list[str]:
        seen.extend(printed_codes(capsys.readouterr().out))
        return seen

    async def run() -> None:
        async with app.test_app() as test_app:
            client = test_app.test_client()

            async def post(path: str, data: bytes, chunked: bool) -> Answer:
                headers = {"content-type": "application/json"}
                if not chunked:
                    reply = await client.post(path, data=data, headers=headers, scope_base={"client": PEER})
                    return reply.status_code, dict(reply.headers.items()), await reply.get_json()
                async with client.request(
                    path, method="POST", headers=headers, scope_base={"client": PEER}
                ) as c:
                    for piece in chunks(data):
                        await c.send(piece)
                    await c.send_complete()
                    answer = await c.receive()
                    assert c.status_code is not None
                    assert c.headers is not None
                    return c.status_code, dict(c.headers.items()), json.loads(answer)

            await play(post, codes)
            nameless = await client.post("/sms/send", json={"phone": "13500135000"})
            assert (nameless.status_code, (await nameless.get_json())["error"]) == (
                500,
                "server_misconfigured",
            )
            other = await client.put("/sms/send", scope_base={"client": PEER})
            assert (other.status_code, other.headers["allow"]) == (405, "POST")  # the middleware's

    asyncio.run(run())
    assert len(module.outbox) == 3


def uvicorn(framework: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", f"{framework}_app:app", "--app-dir", str(EXAMPLES),
            "--host", "127.0.0.1", "--port", str(port), "--no-proxy-headers",
            "--log-level", "warning"]  # fmt: skip


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The framework's example app under uvicorn on a free loopback port: its base URL and the
    file its output (the fake sender's codes) goes to."""
    framework: str = request.param
    port = free_port()
    out = tmp_path / "stdout"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGUARD_") and k != "REDIS_URL"}
    with out.open("wb") as sink, (tmp_path / "stderr").open("wb") as errors:
        process = subprocess.Popen(uvicorn(framework, port), env=env, stdout=sink, stderr=errors)
        try:
            wait_listening(port, process)
            yield f"http://127.0.0.1:{port}", out
        finally:
            stop_process(process)


@pytest.mark.parametrize("served", FRAMEWORKS, indirect=True)
def test_under_uvicorn(served: tuple[str, Path]) -> None:
    base, out = served
    wanted = 0

    def codes() -> list[str]:
        found: list[str] = []

        def arrived() -> bool:
            found[:] = printed_codes(out.read_text())
            return len(found) >= wanted

        wait_until(arrived, "the fake sender's output", timeout=30)
        return found

    async def run() -> None:
        nonlocal wanted
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def post(path: str, data: bytes, chunked: bool) -> Answer:
                nonlocal wanted

                async def stream() -> AsyncIterator[bytes]:
                    for piece in chunks(data):
                        yield piece

                reply = await client.post(
                    path, content=stream() if chunked else data, headers={"content-type": "application/json"}
                )
                assert (reply.request.headers.get("transfer-encoding") == "chunked") is chunked
                if path == "/sms/send" and reply.status_code == 200:
                    wanted += 1  # printed before the answer left: the next codes() waits for it
                return reply.status_code, dict(reply.headers), reply.json()

            await play(post, codes)
            outbox = await client.get("/sms/outbox")
            assert outbox.json()["sent"] == 3
            other = await client.put("/sms/send")
            assert other.status_code == 405

    asyncio.run(run())
