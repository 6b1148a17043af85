"""The route of one request through smsguard's files, and how often it crosses between them.

One allowed POST through the Starlette middleware (``SMSGuardMiddleware``), four policies, on a
Redis backend (its own redis-server on a free loopback port, or ``--url``). Two requests warm the
guard up (the script loaded, the fingerprint written), then a third, for a number not seen
before, is traced with ``sys.setprofile``: every time the innermost smsguard frame moves to
another file is a crossing (into a callee or back to a caller; frames of other packages, such as
Starlette, asyncio or redis-py, are looked through). It prints the files in the order entered
and the counts: crossings, files, and crossings back into a file already visited.

    python benchmarks/path.py            # or: --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import smsguard
from smsguard import DailyCap, Guard, IPThrottle, PhoneRate, SameContent
from smsguard.adapters.asgi import SMSGuardMiddleware
from smsguard.backends.redis import RedisBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import RedisServer

ROOT = str(Path(smsguard.__file__).resolve().parent) + "/"
NOW = 1_767_225_600.0  # a fixed clock: no statistics come due in the traced request


async def _sent(request: Request) -> PlainTextResponse:
    return PlainTextResponse("sent")


def app(url: str) -> Callable[..., Any]:
    guard = Guard(
        [SameContent(30), DailyCap(10), PhoneRate("5/hour"), IPThrottle("20/hour")],
        backend=RedisBackend.from_url(url, prefix="path:"),
        default_region="CN",
        secret="path",
        clock=lambda: NOW,
    )
    routes = [Route("/sms/send", _sent, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(SMSGuardMiddleware, guard=guard)])


async def request(asgi: Callable[..., Any], phone: str) -> int:
    """POST ``{"phone": phone}`` to /sms/send: the response's status."""
    body = json.dumps({"phone": phone}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/sms/send",
        "raw_path": b"/sms/send",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("203.0.113.7", 40000),
        "server": ("127.0.0.1", 8000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await asgi(scope, receive, send)
    return statuses[0]


class Trace:
    """The innermost smsguard file at each moment, as a list of the files entered in turn."""

    def __init__(self) -> None:
        self.stack: list[str | None] = []
        self.files: list[str] = []
        self.calls = 0  # crossings made by a call (or a generator resumed), not by a return

    def profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            name = frame.f_code.co_filename
            self.stack.append(name[len(ROOT) :] if name.startswith(ROOT) else None)
        elif event == "return" and self.stack:
            self.stack.pop()
        else:
            return
        inner = next((f for f in reversed(self.stack) if f is not None), None)
        if inner is not None and (not self.files or self.files[-1] != inner):
            self.calls += bool(self.files) and event == "call"
            self.files.append(inner)


async def traced(url: str) -> Trace:
    asgi = app(url)
    for phone in ("+8613800138001", "+8613800138002"):
        if await request(asgi, phone) != 200:
            raise SystemExit("the warm-up request was not allowed")
    route = Trace()
    sys.setprofile(route.profile)
    try:
        status = await request(asgi, "+8613800138003")
    finally:
        sys.setprofile(None)
    if status != 200:
        raise SystemExit(f"the traced request was answered {status}, not allowed")
    return route


def report(trace: Trace) -> str:
    files = trace.files
    seen: set[str] = set()
    back = 0
    for i, name in enumerate(files):
        back += i > 0 and name in seen
        seen.add(name)
    lines = [" -> ".join(files), ""]
    lines.append(
        f"{len(files) - 1} crossings ({trace.calls} by a call, the rest by a return) in {len(seen)} files, "
        f"{back} of them back into a file already visited"
    )
    lines.append("files: " + ", ".join(sorted(seen)))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis URL (default: a redis-server of its own)")
    args = parser.parse_args(argv)
    if args.url:
        print(report(asyncio.run(traced(args.url))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            print(report(asyncio.run(traced(server.url))))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
