from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from smsguard import Guard, MemoryBackend
from smsguard.backends.base import Backend

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


BACKENDS = ["memory"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every semantic is proven on every backend: each param builds a fresh, empty one."""
    made: Backend = request.getfixturevalue(f"{request.param}_backend")
    yield made
    made.clear()


@pytest.fixture
def memory_backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def make_guard(backend: Backend, clock: Clock) -> Callable[..., Guard]:
    """Guard factory on the parametrized backend and the test clock."""

    def make(policies: Any = None, **settings: Any) -> Guard:
        settings.setdefault("secret", "test-secret")
        settings.setdefault("default_region", "CN")
        return Guard(policies, backend=backend, clock=clock, **settings)

    return make
