"""A flood's denials from the deny cache before the attempt is planned whole
(``Planner.number_plan``, ``DenyCache.early``): the very Decisions the whole plan gets, and the
guards it is off for."""

from __future__ import annotations

import pytest
from conftest import Clock
from hypothesis import given, settings
from hypothesis import strategies as st

from smsguard import DailyCap, Decision, Guard, IPThrottle, PhoneRate, SameContent, Suspend
from smsguard.policies import NUMBER

VICTIM = "+8613800138000"
TYPED = [VICTIM, "138 0013 8000", "008613800138000", "13900139000"]
CONTENTS = ["code 1", "code 2", "code 3"]
IPS = ["203.0.113.1", "203.0.113.2", "2001:db8::1"]


def four(same: float = 120) -> list[object]:
    return [
        SameContent(same),
        DailyCap(4, tz="Asia/Shanghai"),
        PhoneRate("1/minute;3/hour"),
        IPThrottle("2/hour"),
    ]


def guard(clock: Clock, cache: bool, policies: list[object] | None = None) -> Guard:
    return Guard(
        policies or four(),
        clock=clock,
        secret="s",
        default_region="CN",
        deny_cache=cache,  # type: ignore[arg-type]
    )


def planned_whole(clock: Clock) -> Guard:
    """A guard with the deny cache whose every attempt is planned whole, as before the early
    denial (whose decisions the early one must give, field for field)."""
    g = guard(clock, True)
    g.flows._early = False
    return g


def verdict(d: Decision) -> tuple[object, ...]:
    """What the backend's own answer gives alike (the cache leaves counters it does not know
    out of ``remaining``)."""
    return (d.allowed, d.policy, d.reason, d.retry_after, d.limit, d.kind)


def seen(d: Decision) -> tuple[object, ...]:
    """All a caller can read of a decision."""
    return (d.allowed, d.phone, d.policy, d.reason, d.retry_after, dict(d.remaining), d.limit, d.kind,
            d.degraded, d.country, d.phone_hash, d.shadowed, d.quotas)  # fmt: skip


def flood(g: Guard, n: int) -> list[Decision]:
    return [g.check(TYPED[i % 3], content=f"code {i}", ip=f"10.0.{i // 250}.{i % 250}") for i in range(n)]


def test_a_flood_is_denied_before_planning_with_the_decisions_planning_gives(clock: Clock) -> None:
    early, whole, backend = (guard(clock, cache, four(30)) for cache in (True, True, False))
    whole.flows._early = False
    assert early.planner.by_number is not None
    assert [seen(d) for d in flood(early, 1)] == [seen(d) for d in flood(whole, 1)]
    flood(backend, 1)
    # The admitted content's counter frees (it may name a longer wait than the number's while
    # it is full, so until then attempts are planned whole); the number's minute stays full.
    clock.advance(31)
    planned = []
    plan = early.planner.plan
    early.planner.plan = lambda *a: planned.append(a) or plan(*a)  # type: ignore[method-assign]
    ours, theirs = flood(early, 300), flood(whole, 300)
    assert [seen(d) for d in ours] == [seen(d) for d in theirs]
    assert [verdict(d) for d in ours] == [verdict(d) for d in flood(backend, 300)]
    assert not any(d.allowed for d in ours)
    assert {d.retry_after for d in ours} == {29.0}
    assert len(planned) == 1, "the first denial is planned and asks the backend; the rest are not planned"
    assert early.flows.denials is not None
    assert early.flows.denials.denied == 299


def test_a_full_counter_of_the_content_or_ip_sends_attempts_to_the_whole_plan(clock: Clock) -> None:
    early, whole = guard(clock, True), planned_whole(clock)
    for g in (early, whole):
        g.check(VICTIM, content="code 1", ip=IPS[0])
    clock.advance(61)
    # The same content waits longer (120 s) than the number's minute: named by the whole plan.
    for _ in range(3):
        assert seen(early.check(VICTIM, content="code 1", ip=IPS[1])) == seen(
            whole.check(VICTIM, content="code 1", ip=IPS[1])
        )
        clock.advance(1)
    assert early.check(VICTIM, content="code 1", ip=IPS[1]).reason == "same_content"


def test_a_reset_or_a_refund_reaches_the_early_denial_at_once(clock: Clock) -> None:
    g = guard(clock, True)
    admitted = []
    for i in range(3):  # the number's hour full (3/hour), a minute apart, each from its own IP
        admitted.append(g.check(VICTIM, content=f"code {i}", ip=f"10.0.0.{i}"))
        clock.advance(200)
    assert all(d.allowed for d in admitted)
    assert g.flows.denials is not None
    assert [g.check(VICTIM, content=f"more {i}", ip=f"10.0.1.{i}").reason for i in range(3)] == [
        "phone_rate"
    ] * 3
    assert g.flows.denials.denied == 2, "the first asked the backend, the others were denied early"
    g.refund(admitted[0])
    assert g.check(VICTIM, content="after the refund", ip="10.0.2.1").allowed
    assert not g.check(VICTIM, content="full again", ip="10.0.2.2").allowed
    g.reset(VICTIM)
    assert g.check(VICTIM, content="after the reset", ip="10.0.2.3").allowed


def test_off_where_a_policy_does_not_say_what_it_counts_by(clock: Clock) -> None:
    class Rate(PhoneRate):  # a subclass may read more: it must say so again
        pass

    assert guard(clock, True, [Suspend(), *four()]).planner.by_number is None
    assert guard(clock, True, [Rate("1/minute"), IPThrottle()]).planner.by_number is None
    assert guard(clock, True, [DailyCap(3, shadow=True), PhoneRate()]).planner.by_number is None
    assert Guard(four(), secret="s", dry_run=True).planner.by_number is None  # type: ignore[arg-type]
    by = guard(clock, True).planner.by_number
    assert by is not None
    assert [p.counted_by for p, _, _ in by] == [NUMBER, NUMBER]
    # Off too for a guard without the cache (nothing to answer from).
    assert guard(clock, False).flows.denials is None


step = st.tuples(
    st.sampled_from([0, 0, 1, 30, 59, 60, 61, 119, 121, 1800, 3600, 86400]),
    st.integers(0, len(TYPED) - 1),
    st.integers(0, len(CONTENTS) - 1),
    st.integers(0, len(IPS) - 1),
    st.sampled_from(["", "", "", "refund", "reset"]),
)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=80), start=st.floats(0, 86400))
def test_every_decision_is_the_whole_plans(steps: list[tuple[int, int, int, int, str]], start: float) -> None:
    clock = Clock(1772409600.0 + start)
    early, whole, backend = guard(clock, True), planned_whole(clock), guard(clock, False)
    for dt, p, c, i, then in steps:
        clock.advance(dt)
        a = early.check(TYPED[p], content=CONTENTS[c], ip=IPS[i])
        b = whole.check(TYPED[p], content=CONTENTS[c], ip=IPS[i])
        o = backend.check(TYPED[p], content=CONTENTS[c], ip=IPS[i])
        assert seen(a) == seen(b)
        assert verdict(a) == verdict(o)
        if then == "refund" and a.allowed:
            for g, d in ((early, a), (whole, b), (backend, o)):
                g.refund(d)
        elif then == "reset":
            for g in (early, whole, backend):
                g.reset(TYPED[p])


def test_an_address_is_judged_as_the_whole_plan_judges_it(clock: Clock) -> None:
    """The early denial's check of an address as typed (``is_address``, then ``address``) takes
    what ``ipaddress`` takes and refuses the rest with the whole plan's error."""
    from smsguard.errors import InvalidInput
    from smsguard.planner import is_address

    odd = ["01.2.3.4", "1.2.3", "1.2.3.4 ", " 1.2.3.4", "256.1.1.1", "1.2.3.4\x00", "0x1.2.3.4", "1.2.3.04"]
    dotted = ["203.0.113.1", "0.0.0.0", "255.255.255.255"]
    good = [*dotted, "::1", "2001:db8::1", "::ffff:1.2.3.4", "2001:DB8::1"]
    assert all(is_address(a) for a in dotted)
    assert not any(is_address(a) for a in ["", *odd, *good[len(dotted) :]])
    g = guard(clock, True)
    assert g.check(VICTIM, content="first", ip="10.0.0.1").allowed
    clock.advance(31)  # its same content free again, the number's minute still full
    for ip in good:  # each denied (the first by the backend, the rest early), none refused
        assert g.check(VICTIM, content="code", ip=ip).reason == "phone_rate"
    assert g.flows.denials is not None
    assert g.flows.denials.denied == len(good) - 1
    for ip in odd:
        with pytest.raises(InvalidInput):
            g.check(VICTIM, content="code", ip=ip)
