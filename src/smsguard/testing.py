"""smsguard's pytest plugin, registered as the ``pytest11`` entry point ``smsguard``: installing
smsguard brings it to every pytest run (``-p no:smsguard`` leaves it out).

Fixtures:

- ``smsguard_clock``: a ``Clock`` to move (``smsguard_clock.advance(30)``), at noon UTC on
  2026-01-05 at first; give it to a guard of the app's as ``guard.clock = smsguard_clock``.
- ``smsguard_backend``: a fresh ``MemoryBackend``, or a ``RedisBackend`` on its own fakeredis
  server with ``@pytest.mark.smsguard(backend="fakeredis")`` or ``smsguard_backend = fakeredis`` in
  the ini file (needs ``fakeredis[lua]``).
- ``smsguard_policies``: the guard's policies; None (the default set) unless a conftest overrides
  the fixture.
- ``smsguard_guard``: a ``Guard`` of those policies on that backend and that clock, with a fixed
  secret; ``@pytest.mark.smsguard(default_region="CN", fail_mode="closed", ...)`` passes other
  ``Guard`` options.
- ``smsguard_disabled``: guarding off in every adapter of the process for the test (as
  ``SMSGUARD_ENABLED=false``: the number still checked, a bad one still a 400, nothing counted
  or refused); on again after it.

And between tests (``smsguard_reset = false`` in the ini file to keep state instead): guarding
is switched back on, and every in-process backend a guard was built on is emptied, so that an
app built once at import (``SMSGuard(app)``) starts each test with no count. A guard on a shared
backend (Redis) is yours to empty (``backend.clear()``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from smsguard.adapters.http import switch
from smsguard.backends.base import Backend
from smsguard.backends.memory import MemoryBackend
from smsguard.errors import ConfigError
from smsguard.guard import Guard
from smsguard.lifecycle import local_backends
from smsguard.policies import Policy

START = 1_767_614_400.0
"""Where ``smsguard_clock`` starts: 2026-01-05 12:00 UTC, a Monday, mid-day in most zones."""
BACKENDS = ("memory", "fakeredis")


class Clock:
    """A clock to move by hand: epoch seconds, for ``Guard(clock=...)`` or ``guard.clock``."""

    def __init__(self, now: float = START) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move on by ``seconds`` (never back: a guard's clock does not go back)."""
        if seconds < 0:
            raise ValueError(f"a clock moves forward: advance({seconds!r})")
        self.now += seconds

    def set(self, when: float) -> None:
        """Move to ``when`` (epoch seconds), not before now."""
        self.advance(when - self.now)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("smsguard_backend", "the backend of smsguard_guard: memory or fakeredis", default="memory")
    parser.addini(
        "smsguard_reset",
        "empty the in-process backends of smsguard's guards between tests",
        type="bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "smsguard(backend=..., **guard_options): the backend and Guard options of smsguard_guard"
    )


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    marker = request.node.get_closest_marker("smsguard")
    return dict(marker.kwargs) if marker is not None else {}


@pytest.fixture
def smsguard_clock() -> Clock:
    """A clock to move: ``smsguard_clock.advance(seconds)``."""
    return Clock()


@pytest.fixture
def smsguard_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh backend: memory, or fakeredis (the ``smsguard`` marker's ``backend``, else the ini's)."""
    kind = _options(request).get("backend", request.config.getini("smsguard_backend"))
    if kind not in BACKENDS:
        raise ConfigError(f"smsguard backend {kind!r}: use one of {BACKENDS}")
    if kind == "memory":
        yield MemoryBackend()
        return
    try:
        import fakeredis
    except ImportError:  # pragma: no cover - the dev extra brings it
        raise ConfigError("the fakeredis backend needs fakeredis: pip install 'fakeredis[lua]'") from None
    from smsguard.backends.redis import RedisBackend

    server = fakeredis.FakeServer()
    yield RedisBackend(fakeredis.FakeRedis(server=server), aclient=fakeredis.FakeAsyncRedis(server=server))


@pytest.fixture
def smsguard_policies() -> list[Policy] | None:
    """The policies of ``smsguard_guard``: None, the default set. Override it in a conftest."""
    return None


@pytest.fixture
def smsguard_guard(
    request: pytest.FixtureRequest,
    smsguard_policies: list[Policy] | None,
    smsguard_backend: Backend,
    smsguard_clock: Clock,
) -> Guard:
    """A Guard of ``smsguard_policies`` on ``smsguard_backend``, read by ``smsguard_clock``."""
    options = {k: v for k, v in _options(request).items() if k != "backend"}
    options.setdefault("secret", "smsguard-tests")
    return Guard(smsguard_policies, backend=smsguard_backend, clock=smsguard_clock, **options)


@pytest.fixture
def smsguard_disabled() -> Iterator[Callable[[bool], None]]:
    """Guarding off in every adapter for this test; call it with True to turn it on again."""
    switch.on = False
    yield switch.turn
    switch.on = True


@pytest.fixture(autouse=True)
def _smsguard_reset(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    switch.on = True
    if request.config.getini("smsguard_reset"):
        for backend in local_backends():
            backend.clear()
