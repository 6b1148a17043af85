"""A guard's life in a served app: the warning a memory backend split between processes gets at
start-up, statistics written on a timer and at shutdown, and README's commands to serve the
examples. Under real gunicorn and uvicorn over loopback, with their logs read."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from servers import RedisServer, free_port, wait_until

from smsguard import Guard, MemoryBackend

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DJANGO = EXAMPLES / "django_project"
WARNING = re.compile(r"smsguard: .*memory.*SMSGUARD_STORAGE_URI")


# -- servers, their logs, and what they wrote to Redis --------------------------------------


class Served:
    """A server process started for a test, its output in a file."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log_path = process, port, log
        self.base = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def warnings(self) -> list[str]:
        return [line for line in self.log().splitlines() if WARNING.search(line)]

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.base}/sms/outbox", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def pids(self, wanted: int) -> set[int]:
        """Ask until ``wanted`` different worker processes have answered (each loaded the app)."""
        seen: set[int] = set()

        def enough() -> bool:
            seen.add(httpx.get(f"{self.base}/sms/outbox", timeout=5).json()["pid"])
            return len(seen) >= wanted

        wait_until(enough, f"{wanted} workers to answer", 60, self.process)
        return seen

    def stop(self) -> None:
        """SIGTERM to the whole process group (the server and its workers get the stop a
        process manager sends); raises unless it stops by itself. (A graceful stop may end in
        the signal: uvicorn re-raises the one it stopped for.)"""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"did not stop within 30 s of SIGTERM:\n{self.log()}") from None


@contextmanager
def serving(
    command: list[str] | str, tmp_path: Path, env: dict[str, str], port: int, cwd: Path = ROOT
) -> Iterator[Served]:
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            shell=isinstance(command, str),
            start_new_session=True,  # its own process group: stopped as a whole, never left behind
        )
    served = Served(process, port, log)
    try:
        wait_until(served.answers, f"{command!r} to answer", 180, process)
        yield served
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def gunicorn(app: str, port: int, workers: int, *flags: str) -> list[str]:
    chdir = DJANGO if app == "django" else EXAMPLES
    module = "smsdemo.wsgi" if app == "django" else "flask_app:app"
    return [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
            "--chdir", str(chdir), module, *flags]  # fmt: skip


def uvicorn(app: str, port: int, workers: int) -> list[str]:
    app_dir = DJANGO if app == "django" else EXAMPLES
    module = {"django": "smsdemo.asgi:application"}.get(app, f"{app}_app:app")
    return [sys.executable, "-m", "uvicorn", module, "--app-dir", str(app_dir), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--no-proxy-headers"]  # fmt: skip


SERVERS: dict[str, Callable[[int, int], list[str]]] = {
    "gunicorn-flask": lambda port, w: gunicorn("flask", port, w),
    "gunicorn-flask-preload": lambda port, w: gunicorn("flask", port, w, "--preload"),
    "gunicorn-django": lambda port, w: gunicorn("django", port, w),
    "uvicorn-starlette": lambda port, w: uvicorn("starlette", port, w),
    "uvicorn-fastapi": lambda port, w: uvicorn("fastapi", port, w),
    "uvicorn-django": lambda port, w: uvicorn("django", port, w),
}


def attempts_written(url: str, prefix: str) -> int:
    """The attempts the statistics in Redis count, every hour under ``prefix`` summed."""
    with redis.Redis.from_url(url) as client:
        return sum(int(client.hget(k, "attempts") or 0) for k in client.scan_iter(match=f"{prefix}stats:*"))


def send(served: Served, attempts: int) -> None:
    for _ in range(attempts):
        status = httpx.post(f"{served.base}/sms/send", json={"phone": "+86 138 0013 8000"}).status_code
        assert status in (200, 429)


# -- 14: a memory backend split between processes is said so at start-up --------------------


@pytest.mark.parametrize("server", ["gunicorn-flask", "gunicorn-flask-preload", "uvicorn-starlette"])
def test_memory_backend_under_two_workers_warns_in_the_server_log(tmp_path: Path, server: str) -> None:
    port = free_port()
    with serving(SERVERS[server](port, 2), tmp_path, {}, port) as served:
        wait_until(lambda: served.warnings(), "the warning in the server's log", 60, served.process)
        served.stop()
    warnings = served.warnings()
    name = server.split("-")[0]
    assert f"{name} runs 2 worker processes" in warnings[0], warnings
    assert "redis://" in warnings[0], "it names the fix"


@pytest.mark.parametrize(
    ("server", "workers", "storage"),
    [
        ("gunicorn-flask-preload", 1, "memory"),  # built before the fork, served by one worker
        ("uvicorn-starlette", 1, "memory"),
        pytest.param("gunicorn-flask", 2, "redis", marks=pytest.mark.redis_server),
    ],
)
def test_no_false_alarm(
    tmp_path: Path, server: str, workers: int, storage: str, request: pytest.FixtureRequest
) -> None:
    env = {}
    if storage == "redis":
        env = {"REDIS_URL": request.getfixturevalue("redis_server").url, "SMSGUARD_SECRET": "lifecycle"}
    port = free_port()
    with serving(SERVERS[server](port, workers), tmp_path, env, port) as served:
        served.pids(workers)  # every worker has built its guard
        served.stop()
    assert not [line for line in served.log().splitlines() if "smsguard:" in line], served.log()


def test_a_forked_copy_of_a_memory_guard_warns(tmp_path: Path) -> None:
    """A process that forks after building its guard (a prefork server the guard does not
    know): the child says its counts are its own."""
    script = textwrap.dedent(
        """
        import os
        from smsguard import Guard
        guard = Guard()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print("parent done", flush=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "parent done" in done.stdout
    [warning] = [line for line in done.stderr.splitlines() if WARNING.search(line)]
    assert "forked from the one that built the guard" in warning


def test_web_concurrency_says_several(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """WEB_CONCURRENCY (what gunicorn and uvicorn read for their worker count, and platforms set)
    above 1 is taken as several processes; 1 is not."""
    caplog.set_level(logging.WARNING, logger="smsguard")
    monkeypatch.setenv("WEB_CONCURRENCY", "1")
    Guard()
    assert not caplog.records
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    Guard(backend=MemoryBackend())
    [record] = caplog.records
    assert "WEB_CONCURRENCY=3" in record.getMessage()
    assert WARNING.search(record.getMessage())


@pytest.mark.redis_server
def test_a_shared_backend_is_no_alarm(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    caplog.set_level(logging.WARNING, logger="smsguard")
    Guard.from_settings({"SMSGUARD_STORAGE_URI": redis_server.url, "SMSGUARD_SECRET": "s"})
    assert not [r for r in caplog.records if WARNING.search(r.getMessage())]
