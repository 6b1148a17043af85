"""A guard's life in a served app: the warning a memory backend split between processes gets at
start-up, statistics written on a timer and at shutdown, and README's commands to serve the
examples. Under real gunicorn and uvicorn over loopback, with their logs read."""

from __future__ import annotations

import asyncio
import gc
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
from conftest import Clock
from servers import RedisServer, free_port, wait_until
from test_e2e import forged_run

from smsguard import Guard, MemoryBackend, stats
from smsguard.adapters.asgi import Lifespan
from smsguard.errors import ConfigError

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
    "uvicorn-litestar": lambda port, w: uvicorn("litestar", port, w),
    "uvicorn-quart": lambda port, w: uvicorn("quart", port, w),
    "uvicorn-django": lambda port, w: uvicorn("django", port, w),
}


def attempts_written(url: str, prefix: str) -> int:
    """The attempts the statistics in Redis count, every hour under ``prefix`` summed (the
    hours' hashes, not the marks a write sets beside them)."""
    with redis.Redis.from_url(url) as client:
        return sum(
            int(client.hget(k, "attempts") or 0)
            for k in client.scan_iter(match=f"{prefix}stats:*", _type="hash")
        )


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
    true = ("no country list", "no secret")  # the examples' own set-up, said at start (smsguard.checks)
    said = [line for line in served.log().splitlines() if "smsguard:" in line]
    assert not [line for line in said if not any(finding in line for finding in true)], served.log()


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


# -- 15: statistics written on a timer, and at shutdown --------------------------------------


def redis_env(redis_server: RedisServer, **settings: str) -> tuple[dict[str, str], str]:
    prefix = f"life{os.urandom(4).hex()}:"
    env = {
        "REDIS_URL": redis_server.url,
        "SMSGUARD_SECRET": "lifecycle",
        "SMSGUARD_KEY_PREFIX": prefix,
        **{f"SMSGUARD_{k.upper()}": v for k, v in settings.items()},
    }
    return env, prefix


@pytest.mark.redis_server
@pytest.mark.parametrize("server", ["gunicorn-flask", "gunicorn-flask-preload", "uvicorn-starlette"])
def test_an_idle_worker_writes_its_statistics_within_the_interval(
    tmp_path: Path, redis_server: RedisServer, server: str
) -> None:
    """Attempts, then nothing: no later decision carries the last counts, the timer does."""
    env, prefix = redis_env(redis_server, stats_interval="0.2")
    port = free_port()
    with serving(SERVERS[server](port, 2), tmp_path, env, port) as served:
        send(served, 6)
        wait_until(lambda: attempts_written(redis_server.url, prefix) == 6, "all six counted", 20)
        served.stop()
    assert attempts_written(redis_server.url, prefix) == 6, "counted once each"


@pytest.mark.redis_server
@pytest.mark.parametrize(
    "server",
    [
        "gunicorn-flask",
        "gunicorn-django",
        "uvicorn-starlette",
        "uvicorn-fastapi",
        "uvicorn-litestar",  # its on_shutdown: Litestar's middleware never sees the lifespan
        "uvicorn-quart",
        "uvicorn-django",
    ],
)
def test_a_graceful_stop_writes_every_attempt(tmp_path: Path, redis_server: RedisServer, server: str) -> None:
    """An interval of an hour: only the stop (ASGI lifespan shutdown, or exit) can write them."""
    env, prefix = redis_env(redis_server, stats_interval="3600")
    port = free_port()
    with serving(SERVERS[server](port, 2), tmp_path, env, port) as served:
        send(served, 8)
        served.stop()
    assert attempts_written(redis_server.url, prefix) == 8, served.log()


@pytest.mark.redis_server
@pytest.mark.parametrize("app", ["starlette", "fastapi"])
def test_lifespan_shutdown_writes_them_before_the_app_is_gone(redis_server: RedisServer, app: str) -> None:
    """Under Starlette's TestClient: its lifespan shutdown, not the process's exit, writes them."""
    env, prefix = redis_env(redis_server, stats_interval="3600")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(EXAMPLES)!r})
        import redis
        from starlette.testclient import TestClient
        from {app}_app import app
        url, prefix = {redis_server.url!r}, {prefix!r}
        def written():
            client = redis.Redis.from_url(url)
            keys = client.scan_iter(match=prefix + "stats:*", _type="hash")
            return sum(int(client.hget(k, "attempts") or 0) for k in keys)
        with TestClient(app, client=("203.0.113.9", 5000)) as client:
            for _ in range(5):
                client.post("/sms/send", json={{"phone": "+86 138 0013 8000"}})
            print("before shutdown", written())
        print("after shutdown", written())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # The example's fake sender prints each code it sends: the script's own lines are the others.
    before, after = [line for line in done.stdout.splitlines() if line.startswith(("before", "after"))]
    assert int(before.split()[-1]) < 5, "the interval holds them while the app runs"
    assert after == "after shutdown 5"


def test_a_fork_does_not_write_its_parents_counts_twice() -> None:
    script = textwrap.dedent(
        """
        import os
        from smsguard import Guard, Statistics
        guard = Guard(statistics=Statistics(flush_interval=3600), default_region="CN")
        guard.check("13800138000", content="a")  # written at once
        guard.check("13800138001", content="a")  # held
        pid = os.fork()
        if pid == 0:
            os._exit(10 + guard.statistics.held())
        _, status = os.waitpid(pid, 0)
        print("child held", os.waitstatus_to_exitcode(status) - 10, "parent held", guard.statistics.held())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "child held 0 parent held True", done.stderr


def test_flusher_writes_held_counts_and_stops(clock: Clock) -> None:
    statistics = stats.Statistics(flush_interval=0.01)
    guard = Guard(statistics=statistics, clock=clock, default_region="CN")
    guard.check("13800138000", content="a")  # the first is written at once
    guard.check("13800138001", content="a")  # the clock stands still: this one is held
    assert statistics.held()
    flusher = stats.Flusher(guard)
    flusher.start()
    wait_until(lambda: not statistics.held(), "the held counts written", 30)
    assert guard.stats("2026-03-02").attempts == 2
    clock.advance(60)
    guard.check("13800138002", content="a")
    assert not statistics.due(clock()), "the timer writes them: decisions leave them alone"
    flusher.stop()
    assert not flusher.running
    clock.advance(60)
    guard.check("13800138003", content="a")
    assert not statistics.held(), "stopped: the decision wrote them itself"


def test_flusher_ends_with_its_guard(clock: Clock) -> None:
    guard = Guard(statistics=stats.Statistics(flush_interval=0.01), clock=clock, default_region="CN")
    flusher = stats.Flusher(guard)
    flusher.start()
    assert flusher.running
    del guard
    gc.collect()  # a guard's listeners refer back to it
    wait_until(lambda: not flusher.running, "the thread to end", 30)


def test_a_negative_interval_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"SMSGUARD_STATS_INTERVAL\) is 0 or more seconds, not -1"):
        Guard.from_settings({"SMSGUARD_STATS_INTERVAL": "-1"})
    with pytest.raises(ConfigError, match="SMSGUARD_STATS_INTERVAL='soon' is not a number"):
        Guard.from_settings({"SMSGUARD_STATS_INTERVAL": "soon"})


# -- 16: README's commands serve the examples as a fresh clone can -------------------------


def readme_commands() -> list[str]:
    """The commands of README's "The example apps" block that start a server."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### The example apps") :]
    start = section.index("```sh\n") + len("```sh\n")
    block = section[start : section.index("```", start)].replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in block.splitlines() if "./dev serve" in line]


def test_readme_serves_every_example_with_dev() -> None:
    commands = readme_commands()
    assert {command.split("./dev serve ")[1].split()[0] for command in commands} == {
        "starlette",
        "fastapi",
        "litestar",
        "quart",
        "flask",
        "django",
    }
    section = (ROOT / "README.md").read_text().split("### The example apps")[1].split("\n## ")[0]
    assert ".venv/bin" not in section, "a fresh clone has no .venv until ./dev makes it"


@pytest.mark.parametrize(
    "app",
    [
        "starlette",
        "fastapi",
        "litestar",
        "quart",
        pytest.param("flask", marks=pytest.mark.redis_server),
        "django",
    ],
)
def test_readme_commands_do_not_believe_a_forged_forwarded_for(
    tmp_path: Path, app: str, request: pytest.FixtureRequest
) -> None:
    """Each of README's commands, run as written (``./dev serve``, on port $PORT): 30 requests
    from 127.0.0.1, each forging X-Forwarded-For and Forwarded anew, get the 20 an hour of
    IPThrottle's default; uvicorn's own defaults would believe them all."""
    [command] = [c for c in readme_commands() if f"./dev serve {app}" in c]
    if "REDIS_URL=" in command:
        url = request.getfixturevalue("redis_server").url
        command = re.sub(r"REDIS_URL=\S+", f"REDIS_URL={url}", command)
        prefix = f"life{os.urandom(4).hex()}:"
        command = f"SMSGUARD_KEY_PREFIX={prefix} {command}"
    port = free_port()
    with serving(command, tmp_path, {"PORT": str(port)}, port) as served:
        statuses = forged_run(served.base, source="127.0.0.1")
        served.stop()
    assert sorted(statuses) == [200] * 20 + [429] * 10, served.log()


def test_a_guard_that_cannot_be_built_fails_the_lifespan_startup() -> None:
    """``Lifespan`` (what Django's ASGI application is wrapped in) builds the guard at startup:
    a bad setting stops the server there, with the reason, not on the first request."""

    def broken() -> Guard:
        return Guard.from_settings({"SMSGUARD_DAILY_CAP": "ten"})

    async def never(scope: object, receive: object, send: object) -> None:
        raise AssertionError("no other scope")

    async def run() -> list[dict[str, str]]:
        incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[dict[str, str]] = []

        async def receive() -> dict[str, str]:
            return incoming.pop(0)

        async def send(message: dict[str, str]) -> None:
            sent.append(message)

        await Lifespan(never, guard=broken)({"type": "lifespan"}, receive, send)
        return sent

    assert asyncio.run(run()) == [
        {"type": "lifespan.startup.failed", "message": "smsguard: SMSGUARD_DAILY_CAP='ten' is not an integer"}
    ]
