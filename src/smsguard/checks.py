"""What is unsafe in a guard's set-up, said where each framework says such things: one list of
findings, shown as Django system checks (``manage.py check``), as log warnings when a Flask or
ASGI app starts, and as lines of ``smsguard check``.

Each finding has a stable id (``W001``...; Django's is ``smsguard.W001``, to silence one with
``SILENCED_SYSTEM_CHECKS``):

- ``W001`` a process-local (memory) backend where several processes serve the app
  (``smsguard.lifecycle``: the server's workers, ``WEB_CONCURRENCY``, a fork);
- ``W002`` no secret: numbers are hashed with a random key made at start, different in each
  process and after each restart (said in production only: a shared backend without one is
  refused outright);
- ``W003`` ``fail_mode="open"`` in production: while the backend is down, every attempt passes;
- ``W004`` no trusted proxy although the app is behind one: every client then has the proxy's
  address, and ``IPThrottle`` limits them all as one. Start-up can know it only from what the
  app says (Django's ``SECURE_PROXY_SSL_HEADER``, ``USE_X_FORWARDED_HOST``,
  ``USE_X_FORWARDED_PORT``); at run time every adapter logs it once, at the first request that
  carries the proxy header from a peer while no proxy is trusted;
- ``W005`` no country list: codes go to any country (``SMSGUARD_COUNTRIES``);
- ``W006`` Redis evicts keys (a ``maxmemory-policy`` other than ``noeviction``), and ``W007``
  the backend did not answer, so that was not checked.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
import weakref
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from smsguard import lifecycle
from smsguard.backends.base import Backend
from smsguard.planner import Planner
from smsguard.policies import Policy
from smsguard.pumping import Countries

log = logging.getLogger("smsguard")


class Finding(NamedTuple):
    """One thing unsafe in a set-up: its stable id (``W005``), what is wrong, and the fix."""

    id: str
    name: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.id} {self.message} {self.hint}"


class GuardLike(Protocol):
    """What the checks read of a guard (a ``smsguard.Guard``)."""

    @property
    def backend(self) -> Backend: ...
    @property
    def planner(self) -> Planner: ...
    @property
    def policies(self) -> tuple[Policy, ...]: ...
    @property
    def fail_mode(self) -> str: ...


class AnyCountry(UserWarning):
    """A guard built from settings without ``SMSGUARD_COUNTRIES``: it texts any country."""


def no_countries(guard: GuardLike) -> Finding | None:
    """W005, if no enforcing ``Countries`` policy of ``guard`` names the regions served."""
    if any(
        isinstance(p, Countries) and p.allow is not None and p.name not in guard.planner.shadows
        for p in guard.policies
    ):
        return None
    return Finding(
        "W005",
        "countries",
        "smsguard: no country list: this guard texts any country, which is what SMS pumping "
        "exploits (floods of codes to premium numbers abroad).",
        "Name the regions the app serves: SMSGUARD_COUNTRIES=GB,FR (Django: SMSGUARD['COUNTRIES']), "
        "or Countries(allow=[...]) / recommended([...]) in code.",
    )


def findings(
    guard: GuardLike,
    *,
    production: bool = True,
    trusted_proxies: bool = True,
    proxied: str | None = None,
    backend: bool = True,
) -> list[Finding]:
    """What is unsafe in ``guard``'s set-up. ``production``: the app runs for real (Django's
    ``DEBUG`` off); ``trusted_proxies``: the app trusts some proxy; ``proxied``: what says the
    app is behind a proxy (a setting's name), if anything; ``backend``: ask the backend too
    (Redis's eviction policy: a round trip)."""
    found: list[Finding] = []
    if not guard.backend.shared:
        several = lifecycle.several()
        if several is not None:
            found.append(
                Finding(
                    "W001",
                    "memory backend",
                    f"smsguard: this guard counts in process memory, but {several}: each process "
                    "counts alone, so every limit is multiplied by the number of processes.",
                    "Give it a shared backend: SMSGUARD_STORAGE_URI=redis://host:6379/0.",
                )
            )
    if production and guard.planner.digest.generated:
        found.append(
            Finding(
                "W002",
                "secret",
                "smsguard: no secret: numbers are hashed with a random key made at start, "
                "different in each process and after each restart.",
                "Set SMSGUARD_SECRET (the same in every worker), e.g. from secrets.token_hex(32).",
            )
        )
    if production and guard.fail_mode == "open":
        found.append(
            Finding(
                "W003",
                "fail mode",
                'smsguard: fail_mode="open" in production: while the backend is unreachable, '
                "every attempt is allowed, and an attacker who can slow Redis sends freely.",
                'Use "local" (count in process until it recovers) or "closed" (refuse with a 503).',
            )
        )
    if proxied and not trusted_proxies:
        found.append(
            Finding(
                "W004",
                "trusted proxies",
                f"smsguard: {proxied} says the app is behind a proxy, but no proxy is trusted: "
                "every client has the proxy's address, and IPThrottle limits them all as one.",
                "Set SMSGUARD_TRUSTED_PROXIES to the proxy's addresses (CIDRs).",
            )
        )
    countries = no_countries(guard)
    if countries is not None:
        found.append(countries)
    diagnose = getattr(guard.backend, "diagnose", None)
    if backend and diagnose is not None and getattr(guard.backend, "sync", True):
        results = {name: (ok, detail) for name, ok, detail in diagnose(time.time())}
        answers, detail = results.get("backend answers", (True, ""))
        if not answers:
            found.append(
                Finding(
                    "W007",
                    "backend",
                    f"smsguard: the backend did not answer ({detail}): its eviction policy is not checked.",
                    "Check SMSGUARD_STORAGE_URI, and that Redis is up.",
                )
            )
        evicts = results.get("maxmemory-policy")
        if evicts is not None and not evicts[0]:
            found.append(
                Finding(
                    "W006",
                    "maxmemory-policy",
                    f"smsguard: Redis evicts keys (maxmemory-policy {evicts[1]}): under memory "
                    "pressure it may drop a victim's count or the emergency switch.",
                    "CONFIG SET maxmemory-policy noeviction (and in redis.conf), or a Redis of its own.",
                )
            )
    return found


_said: weakref.WeakKeyDictionary[GuardLike, set[str]] = weakref.WeakKeyDictionary()


def announce(guard: GuardLike, found: Iterable[Finding]) -> None:
    """Log each finding as a WARNING, once per guard: what Flask and ASGI apps say at start-up.
    W005 is also a ``warnings.warn`` (``AnyCountry``), loud wherever warnings show."""
    said = _said.setdefault(guard, set())
    for finding in found:
        if finding.id in said:
            continue
        said.add(finding.id)
        log.warning("%s %s", finding.message, finding.hint)
        if finding.id == "W005":
            warnings.warn(f"{finding.message} {finding.hint}", AnyCountry, stacklevel=_outside())


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside() -> int:
    """The ``stacklevel`` that makes its caller's warning point at the first frame outside
    smsguard: the user's code (``SMSGuard(app)``, ``Guard.from_settings(...)``), however deep
    in the package the warning was raised."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def at_start(
    guard: GuardLike, *, production: bool = True, trusted_proxies: bool = True, backend: bool = True
) -> None:
    """The findings of ``guard``, logged once per guard: what an adapter calls when its app
    starts (W001 and W006 aside: the guard says the first itself when built, and in a forked
    worker, and a Redis backend the second when it first connects, which asking it does).
    ``backend=False`` leaves out those that ask the backend (a round trip): for a caller on an
    event loop, which asks them later, in a thread."""
    found = findings(guard, production=production, trusted_proxies=trusted_proxies, backend=backend)
    announce(guard, [finding for finding in found if finding.id not in ("W001", "W006")])
