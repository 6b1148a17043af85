from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from servers import NGINX, REDIS_SERVER, RedisCluster, RedisServer

from smsguard import BackendUnavailable, Change, Decision, Guard, Job, MemoryBackend, Outcome
from smsguard.backends.base import Backend
from smsguard.backends.redis import RedisBackend

pytest_plugins = ["pytester"]  # test_testing.py runs sample projects that use smsguard's plugin

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
"""Headless Chromium, which renders the review page (tests marked ``chromium``)."""
PROMTOOL = shutil.which("promtool")
"""Prometheus's promtool, which checks contrib/'s alert rules (tests marked ``promtool``)."""

# Mon 2026-03-02 12:00:00 in Asia/Shanghai (04:00 UTC): far from any midnight.
T0 = 1772424000.0


class Clock:
    """The injected clock: tests move time by hand, never by sleeping."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def at(clock: Clock) -> dict[str, str]:
    """Environment for a Python subprocess whose ``time.time()`` is ``clock``'s now (see
    clockwork/sitecustomize.py): a guard there decides on the test's day, not the machine's."""
    path = [str(Path(__file__).parent / "clockwork"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(filter(None, path)), "TEST_CLOCK_NOW": repr(clock.now)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without redis-server (or nginx, chromium, promtool), the tests that need it skip on a
    user's machine, with the reason; under CI=true they run and fail, so that CI never passes
    without them."""
    if os.environ.get("CI") == "true":
        return
    missing = {
        "redis_server": REDIS_SERVER,
        "cluster": REDIS_SERVER,
        "nginx": NGINX,
        "chromium": CHROMIUM,
        "promtool": PROMTOOL,
    }
    for item in items:
        for marker, binary in missing.items():
            if binary is None and item.get_closest_marker(marker):
                name = "redis-server" if marker in ("redis_server", "cluster") else marker
                item.add_marker(
                    pytest.mark.skip(reason=f"{name} is not installed: install it to run this test")
                )


def admitted_by_threads(check: Callable[[], Decision], threads: int, each: int) -> list[Decision]:
    """The allowed decisions of ``threads`` threads calling ``check`` ``each`` times, all
    released at once."""
    admitted: list[Decision] = []
    start = threading.Barrier(threads)

    def hammer() -> None:
        start.wait()
        for _ in range(each):
            decision = check()
            if decision.allowed:
                admitted.append(decision)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return admitted


class Unplugged(MemoryBackend):
    """A shared backend whose connection the test pulls out (``down``) and puts back, or that
    runs jobs but never answers (``stalled``: a Redis that wakes after the client gave up)."""

    shared = True

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.stalled = False
        self.calls = 0

    def run(self, job: Job) -> Outcome:
        self.calls += 1
        if self.down:
            raise BackendUnavailable("connection refused")
        outcome = super().run(job)
        if self.stalled:
            raise BackendUnavailable("timeout reading from the socket")
        return outcome

    def apply(self, changes: Sequence[Change]) -> None:
        if self.down:
            raise BackendUnavailable("connection refused")
        super().apply(changes)


BACKENDS = [
    "memory",
    "fakeredis",
    pytest.param("redis", marks=pytest.mark.redis_server),
    pytest.param("cluster", marks=pytest.mark.cluster),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every semantic is proven on every backend: each param builds a fresh, empty one."""
    made: Backend = request.getfixturevalue(f"{request.param}_backend")
    yield made
    made.clear()


@pytest.fixture
def memory_backend() -> MemoryBackend:
    return MemoryBackend()


ANSWER_TIMEOUT = 5.0
"""The Redis answer ``timeout`` of the tests' Cluster backends and of those that hammer Redis
from many threads and processes, where a test is not about timeouts. A decision that times out
is not sent again (not even on a Cluster): on a loaded machine a slow answer would be an outage
of its own, met by the fail mode."""


def unique_prefix() -> str:
    """Each test its own key space, so tests never see each other's counters."""
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fakeredis_backend(fake_server: fakeredis.FakeServer) -> RedisBackend:
    return RedisBackend(
        fakeredis.FakeRedis(server=fake_server),
        aclient=fakeredis.FakeAsyncRedis(server=fake_server, max_connections=1000),
        prefix=unique_prefix(),
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the whole session, started by the suite itself."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real local Redis Cluster of 3 masters, started by the suite itself."""
    cluster = RedisCluster(Path(tmp_path_factory.mktemp("cluster"))).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_backend(redis_server: RedisServer) -> RedisBackend:
    return RedisBackend.from_url(redis_server.url, prefix=unique_prefix())


@pytest.fixture
def cluster_backend(redis_cluster: RedisCluster) -> RedisBackend:
    return RedisBackend.from_url(redis_cluster.url, prefix=unique_prefix(), timeout=ANSWER_TIMEOUT)


@pytest.fixture
def make_guard(backend: Backend, clock: Clock) -> Callable[..., Guard]:
    """Guard factory on the parametrized backend and the test clock."""

    def make(policies: Any = None, **settings: Any) -> Guard:
        settings.setdefault("secret", "test-secret")
        settings.setdefault("default_region", "CN")
        return Guard(policies, backend=backend, clock=clock, **settings)

    return make
