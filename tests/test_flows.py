"""The guard's flows (flows.py), tested as h11 tests its state machine: each flow is stepped by
hand, fed an outcome or thrown an outage at the step it is on. No backend runs here."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Clock

from smsguard import BackendUnavailable, Blacklist, DailyCap, Guard, Job, Outcome, Suspend, Whitelist
from smsguard.plan import Receipt, SetFlag, Tallied

VICTIM = "+8613800138000"


def flows_of(clock: Clock, mode: str = "closed", policies: Any = None, statistics: bool = False) -> Any:
    guard = Guard(
        policies or [Suspend(), DailyCap(2)],
        fail_mode=mode,  # type: ignore[arg-type]
        clock=clock,
        secret="s",
        statistics=statistics,
    )
    return guard, guard.flows


def finished(flow: Any, answer: Any = None, throw: BaseException | None = None) -> Any:
    """Send ``answer`` (or throw ``throw``) into ``flow``, which must then return: its result."""
    with pytest.raises(StopIteration) as done:
        flow.throw(throw) if throw is not None else flow.send(answer)
    return done.value.value


def test_check_asks_for_one_job_and_decides_from_its_outcome(clock: Clock) -> None:
    guard, flows = flows_of(clock)
    flow = flows.check(VICTIM, None, None, None, False)
    verb, job = next(flow)
    assert (verb, type(job)) == ("run", Job)
    assert ([f.reason for f in job.flags], [c.limit for c in job.counters]) == (["suspended"], [2])
    decision = finished(flow, Outcome(-1, (1,)))
    assert (decision.allowed, decision.remaining, decision.degraded) == (True, {"daily_cap": 0}, False)
    number = guard.identify(VICTIM)
    assert (decision.country, decision.phone_hash) == ("CN", number.phone_id), "complete as built"
    assert decision.receipt == Receipt(job.token, job.counters, False)


def test_check_denies_from_a_full_counter_and_from_a_set_flag(clock: Clock) -> None:
    _, flows = flows_of(clock)
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)
    full = finished(flow, Outcome(-1, (2,), (30.0,)))
    assert (full.allowed, full.policy, full.retry_after, full.limit, full.receipt) == (
        False,
        "daily_cap",
        30.0,
        2,
        None,
    )
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)
    suspended = finished(flow, Outcome(0))
    assert (suspended.reason, suspended.kind) == ("suspended", "unavailable")


def test_a_fixed_verdict_needs_no_backend(clock: Clock) -> None:
    _, flows = flows_of(clock, policies=[Whitelist([VICTIM]), DailyCap(2)])
    flow = flows.check(VICTIM, None, None, None, False)
    with pytest.raises(StopIteration) as done:
        next(flow)
    assert (done.value.value.reason, done.value.value.country) == ("exempt", "CN")


@pytest.mark.parametrize(
    ("mode", "reason", "owed"), [("closed", "backend_unavailable", True), ("open", "fail_open", False)]
)
def test_an_outage_thrown_at_the_job_meets_the_fail_mode(
    clock: Clock, mode: str, reason: str, owed: bool
) -> None:
    """The job was sent: if the guard denied it, its hits are owed back (it may have run)."""
    _, flows = flows_of(clock, mode)
    flow = flows.check(VICTIM, None, None, None, False)
    _, job = next(flow)
    decision = finished(flow, throw=BackendUnavailable("Timeout"))
    assert (decision.reason, decision.degraded) == (reason, True)
    assert flows.outage.down_until == clock() + flows.outage.retry_interval
    assert flows.outbox.pending == ([Receipt(job.token, job.counters)] if owed else [])


def test_an_outage_thrown_at_the_owed_writes_sends_no_job(clock: Clock) -> None:
    """Writes owed go first; if they meet the outage, the job was never sent: nothing of it
    is owed back, and the owed write stays first in line."""
    _, flows = flows_of(clock)
    change = SetFlag(Suspend.KEY, False)
    flows.outbox.owe(change)
    flow = flows.check(VICTIM, None, None, None, False)
    assert next(flow) == ("apply", (change,))
    decision = finished(flow, throw=BackendUnavailable("Connection refused"))
    assert (decision.reason, decision.degraded) == ("backend_unavailable", True)
    assert flows.outbox.pending == [change]


def test_owed_writes_that_meet_a_partial_outage_wait_and_the_job_goes_on(clock: Clock) -> None:
    """Some Cluster slots down: what is owed may need only those. It stays owed and waits
    ``retry_interval``; this job, and the next ones meanwhile, go to the backend at once."""
    _, flows = flows_of(clock)
    change = SetFlag(Suspend.KEY, False)
    flows.outbox.owe(change)
    flow = flows.check(VICTIM, None, None, None, False)
    assert next(flow) == ("apply", (change,))
    assert flow.throw(BackendUnavailable("CLUSTERDOWN", partial=True))[0] == "run"
    decision = finished(flow, Outcome(-1, (0,)))
    assert (decision.allowed, decision.degraded) == (True, False)
    assert flows.outbox.pending == [change]
    flow = flows.check(VICTIM, None, None, None, False)
    assert next(flow)[0] == "run", "the owed writes wait out the retry interval"
    finished(flow, Outcome(-1, (1,)))
    clock.advance(5)
    flow = flows.check(VICTIM, None, None, None, False)
    assert next(flow) == ("apply", (change,)), "then they are tried again"


def test_the_owed_writes_go_before_the_job_and_are_let_go_once_sent(clock: Clock) -> None:
    _, flows = flows_of(clock)
    change = SetFlag(Suspend.KEY, False)
    flows.outbox.owe(change)
    flow = flows.check(VICTIM, None, None, None, False)
    assert next(flow) == ("apply", (change,))
    assert flow.send(None)[0] == "run"
    assert finished(flow, Outcome(-1, (0,))).allowed
    assert flows.outbox.pending == []


def test_in_local_mode_the_fallback_decides_and_its_receipt_says_so(clock: Clock) -> None:
    _, flows = flows_of(clock, "local")
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)
    decision = finished(flow, throw=BackendUnavailable("Timeout"))
    assert (decision.allowed, decision.degraded, decision.receipt.fallback) == (True, True, True)
    # While the backend is left alone, the next decision asks nothing of it.
    with pytest.raises(StopIteration) as done:
        next(flows.check(VICTIM, None, None, None, False))
    assert done.value.value.remaining == {"daily_cap": 0}


def test_flags_read_before_an_outage_stay_in_force(clock: Clock) -> None:
    _, flows = flows_of(clock, "open", [Suspend(), Blacklist(shared=True), DailyCap(2)])
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)
    assert finished(flow, Outcome(1)).reason == "blacklisted"  # read: the number is listed
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)
    assert finished(flow, throw=BackendUnavailable("Timeout")).reason == "blacklisted"


def test_a_refund_owes_its_receipt_until_the_backend_takes_it(clock: Clock) -> None:
    _, flows = flows_of(clock)
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)
    decision = finished(flow, Outcome(-1, (0,)))
    refund = flows.refund(decision)
    assert next(refund) == ("apply", (decision.receipt,))
    finished(refund, throw=BackendUnavailable("Timeout"))  # deferred, not raised
    assert flows.outbox.pending == [decision.receipt]
    refund = flows.refund(decision)  # again: the receipt is applied once, wherever it goes
    assert next(refund) == ("apply", (decision.receipt, decision.receipt))
    finished(refund, None)
    assert flows.outbox.pending == []


def test_a_write_that_meets_an_outage_raises_and_stays_owed(clock: Clock) -> None:
    _, flows = flows_of(clock)
    write = flows.switch(True)
    assert next(write) == ("apply", (SetFlag(Suspend.KEY, True),))
    with pytest.raises(BackendUnavailable):
        write.throw(BackendUnavailable("Timeout"))
    assert flows.outbox.pending == [SetFlag(Suspend.KEY, True)]
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)  # the owed write goes first...
    assert finished(flow, throw=BackendUnavailable("Timeout")).reason == "suspended", "...and holds here"


def test_stats_writes_what_is_buffered_then_reads_the_day(clock: Clock) -> None:
    _, flows = flows_of(clock, statistics=True)
    flow = flows.check(VICTIM, None, None, None, False)
    next(flow)
    (verb, (tallied,)) = flow.send(Outcome(-1, (0,)))  # the first decision writes its statistics
    assert (verb, type(tallied)) == ("apply", Tallied)
    assert ("attempts", 1) in tallied.counts
    finished(flow, None)
    stats = flows.stats(None)
    assert next(stats) == ("apply", ())
    verb, keys, now = stats.send(None)
    assert (verb, len(keys), now) == ("read", 24, clock())
    day = finished(stats, [{}] * 23 + [{"attempts": 3}])
    assert day.attempts == 3
