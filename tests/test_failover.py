"""The fail modes (failover.py): the brakes stay on through an outage, writes made meanwhile
hold at once and reach the backend later, and hits of unanswered denials are given back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Clock, Unplugged

from smsguard import (
    BackendUnavailable,
    Blacklist,
    ConfigError,
    DailyCap,
    Guard,
    Job,
    Outcome,
    Suspend,
    Whitelist,
)

VICTIM = "+8613800138000"
OTHER = "+8613900139000"
MODES = ["open", "closed", "local"]


def guard_on(backend: Unplugged, clock: Clock, mode: str, policies: Any = None) -> Guard:
    policies = policies or [Suspend(), Blacklist(shared=True), DailyCap(2)]
    return Guard(policies, backend=backend, fail_mode=mode, clock=clock, secret="s", retry_interval=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_switch_read_before_an_outage_stays_on(clock: Clock, mode: str) -> None:
    backend = Unplugged()
    guard = guard_on(backend, clock, mode)
    other = guard_on(backend, clock, mode)  # another worker on the same backend
    other.suspend()
    assert guard.check(VICTIM).reason == "suspended"  # read from the backend
    backend.down = True
    for _ in range(3):
        d = guard.check(VICTIM)
        assert (d.allowed, d.policy, d.reason, d.kind) == (False, "suspend", "suspended", "unavailable")
        clock.advance(10)  # past retry_interval: the backend is tried again, and still down
    backend.down = False
    other.resume()
    assert guard.check(VICTIM).allowed, "back up: the backend's state wins again"


@pytest.mark.parametrize("mode", MODES)
def test_shared_blacklist_entry_read_before_an_outage_stays(clock: Clock, mode: str) -> None:
    backend = Unplugged()
    guard = guard_on(backend, clock, mode)
    guard_on(backend, clock, mode).add_number("blacklist", VICTIM)
    assert guard.check(VICTIM).reason == "blacklisted"
    assert guard.check(OTHER).allowed
    backend.down = True
    assert guard.check(VICTIM).reason == "blacklisted"
    assert (
        guard.check(OTHER).reason
        == {"open": "fail_open", "closed": "backend_unavailable", "local": None}[mode]
    )


@pytest.mark.parametrize("mode", MODES)
def test_changes_during_an_outage_hold_at_once_and_reach_the_backend(clock: Clock, mode: str) -> None:
    backend = Unplugged()
    guard = guard_on(backend, clock, mode)
    other = guard_on(backend, clock, mode)
    assert guard.check(VICTIM).allowed
    backend.down = True
    with pytest.raises(BackendUnavailable):
        guard.suspend()  # the caller learns that other workers do not see it yet...
    assert guard.check(OTHER).reason == "suspended"  # ...but here it holds at once
    with pytest.raises(BackendUnavailable):
        guard.add_number("blacklist", VICTIM)
    backend.down = False
    assert other.check(OTHER).allowed, "not yet sent: the backend never saw it"
    clock.advance(5)
    assert guard.check(OTHER).reason == "suspended"  # the first call sends what was owed
    assert other.check(OTHER).reason == "suspended", "now every worker sees it"
    guard.resume()
    assert other.check(VICTIM).reason == "blacklisted"


def test_changes_reach_the_backend_in_the_order_made(clock: Clock) -> None:
    backend = Unplugged()
    guard, other = guard_on(backend, clock, "closed"), guard_on(backend, clock, "closed")
    backend.down = True
    with pytest.raises(BackendUnavailable):
        guard.suspend()
    backend.down = False
    guard.resume()  # succeeds, and so sends the owed suspend first, then this
    assert other.check(VICTIM).allowed
    assert guard.check(VICTIM).allowed
    assert guard.outbox.pending == []


def test_suspend_without_a_switch_is_a_config_error(clock: Clock) -> None:
    guard = guard_on(Unplugged(), clock, "local", [DailyCap(2)])
    with pytest.raises(ConfigError, match="no Suspend policy"):
        guard.suspend()
    with pytest.raises(ConfigError, match="no Suspend policy"):
        asyncio.run(guard.aresume())


def test_whitelist_exemption_read_before_an_outage_stays(clock: Clock) -> None:
    backend = Unplugged()
    guard = guard_on(backend, clock, "closed", [Whitelist(shared=True), DailyCap(1)])
    guard.add_number("whitelist", VICTIM)
    backend.down = True
    assert [guard.check(VICTIM).reason for _ in range(3)] == ["exempt"] * 3
    assert guard.check(OTHER).reason == "backend_unavailable"


class Overtaken(Unplugged):
    """Fails the next job, but only after answering another one begun later: the way a burst
    looks, where one job waits for a connection while others go through."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock, self.overtake = clock, False
        self.guard: Guard | None = None

    def run(self, job: Job) -> Outcome:
        if self.overtake:
            self.overtake = False
            self.clock.advance(0.2)
            assert self.guard is not None
            assert self.guard.check(OTHER).allowed
            raise BackendUnavailable("Timeout connecting to server")
        return super().run(job)


def test_a_failure_while_others_are_answered_is_no_outage(clock: Clock) -> None:
    backend = Overtaken(clock)
    guard = backend.guard = guard_on(backend, clock, "closed", [DailyCap(5)])
    backend.overtake = True
    assert guard.check(VICTIM).reason == "backend_unavailable"
    calls = backend.calls
    assert guard.check(VICTIM).allowed, "asked again at once: it answered meanwhile"
    assert backend.calls == calls + 1
    backend.down = True
    assert guard.check(VICTIM).reason == "backend_unavailable"
    backend.down = False
    assert guard.check(VICTIM).reason == "backend_unavailable", "nothing answered since: left alone"
    assert backend.calls == calls + 2


# -- a job whose reply never came ---------------------------------------------------------


def test_unanswered_denial_gives_its_hits_back(clock: Clock) -> None:
    backend = Unplugged()
    guard = guard_on(backend, clock, "closed", [DailyCap(10)])
    witness = guard_on(backend, clock, "closed", [DailyCap(10)])
    backend.stalled = True  # the jobs run, but no reply comes: the guard answers 503
    stalled = [guard.check(VICTIM) for _ in range(3)]
    assert [d.reason for d in stalled] == ["backend_unavailable"] * 3
    backend.stalled = False
    assert witness.check(VICTIM).remaining == {"daily_cap": 8}, "the stalled job's hit is there"
    clock.advance(5)
    assert guard.check(VICTIM).remaining == {"daily_cap": 8}, "given back before the next decision"
    assert guard.outbox.pending == []


def test_unanswered_allowance_keeps_its_hits(clock: Clock) -> None:
    backend = Unplugged()
    guard = guard_on(backend, clock, "open", [DailyCap(10)])
    backend.stalled = True
    assert guard.check(VICTIM).reason == "fail_open"  # the SMS went out
    backend.stalled = False
    clock.advance(5)
    assert guard.check(VICTIM).remaining == {"daily_cap": 8}, "the hit stays: the SMS was sent"


def test_refund_during_an_outage_is_sent_later_and_once(clock: Clock) -> None:
    backend = Unplugged()
    guard = guard_on(backend, clock, "closed", [DailyCap(2)])
    first = guard.check(VICTIM)
    backend.down = True
    guard.refund(first)
    guard.refund(first)
    backend.down = False
    clock.advance(5)
    assert guard.check(VICTIM).remaining == {"daily_cap": 1}, "one hit back, not two"
