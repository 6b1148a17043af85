"""Shadow mode: a shadow policy is counted and reported, never denies, takes no enforcing quota."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Clock

from smsguard import (
    Blacklist,
    ConfigError,
    DailyCap,
    Guard,
    IPThrottle,
    MemoryBackend,
    PhoneRate,
    SameContent,
    Shadow,
    Suspend,
    Whitelist,
)

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from custom_policy import RangeRate

VICTIM = "+8613800138000"


def test_a_shadow_policy_never_denies(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([PhoneRate("1/minute", shadow=True)])
    decisions = [guard.check(VICTIM) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.shadowed for d in decisions] == [()] + [("phone_rate",)] * 4
    assert decisions[1].remaining == {}, "no limit this attempt is held to"
    day = guard.stats()
    assert (day.attempts, day.allowed, day.shadowed) == (5, 5, {"phone_rate": 4})


def test_a_full_shadow_counter_takes_no_hit_and_no_enforcing_quota(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(3), PhoneRate("1/minute;2/hour", name="trial", shadow=True)])
    decisions = [guard.check(VICTIM) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert decisions[3].reason == "daily_cap", "the enforcing cap alone decides"
    assert [d.shadowed for d in decisions] == [(), ("trial",), ("trial",), ("trial",)]
    used = {(u.policy, u.limit): u.used for u in guard.status(VICTIM)}
    # Only the first attempt fitted trial's rates: later ones found "1/minute" full and took no
    # hit of either, as if trial had been enforcing.
    assert used == {("daily_cap", 3): 3, ("trial", 1): 1, ("trial", 2): 1}


def test_a_refund_gives_back_shadow_hits_too(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(3), PhoneRate("5/hour", shadow=True)])
    guard.refund(guard.check(VICTIM))
    assert {u.policy: u.used for u in guard.status(VICTIM)} == {"daily_cap": 0, "phone_rate": 0}


def test_dry_run_shadows_every_policy(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard(
        [Suspend(), Blacklist(["+8613900139000"]), Blacklist(name="shared_bl", shared=True), DailyCap(1)],
        dry_run=True,
    )
    guard.suspend()
    guard.add_number("shared_bl", VICTIM)
    first, second = guard.check(VICTIM), guard.check(VICTIM)
    assert first.allowed
    assert second.allowed
    assert first.shadowed == ("suspend", "shared_bl")
    assert second.shadowed == ("suspend", "shared_bl", "daily_cap")
    listed = guard.check("+8613900139000")
    assert listed.allowed
    assert set(listed.shadowed) == {"suspend", "blacklist"}
    assert guard.stats().shadowed == {"suspend": 3, "shared_bl": 2, "blacklist": 1, "daily_cap": 1}


def test_an_enforcing_verdict_still_decides_beside_shadows(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Whitelist(["+8613900139000"]), SameContent(shadow=True), DailyCap(1)])
    assert guard.check("+8613900139000", content="x").reason == "exempt"
    assert guard.check(VICTIM, content="x").allowed
    denied = guard.check(VICTIM, content="x")
    assert (denied.reason, denied.shadowed) == ("daily_cap", ("same_content",))


def test_shadow_wraps_a_policy_of_your_own(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Shadow(RangeRate("1/hour", digits=4)), DailyCap(5)])
    assert guard.check("+8613800138000").allowed
    neighbour = guard.check("+8613800138001")  # same range: RangeRate would have denied
    assert neighbour.allowed
    assert neighbour.shadowed == ("range_rate",)
    with pytest.raises(ConfigError, match="not a policy"):
        Shadow(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shadows_change_no_enforcing_decision(backend: object, clock: Clock, seed: int) -> None:
    """The same traffic through the enforcing policies alone, and with shadow twins of them (a
    stricter limit on the same keys' kind): every verdict is the same."""
    rng = random.Random(seed)
    enforcing = [SameContent(), DailyCap(4), PhoneRate("2/minute"), IPThrottle("6/hour")]
    shadows = [
        SameContent(120, name="sc_trial", shadow=True),
        DailyCap(2, name="cap_trial", shadow=True),
        PhoneRate("1/minute", name="rate_trial", shadow=True),
        IPThrottle("3/hour", name="ip_trial", shadow=True),
    ]
    plain = Guard(enforcing, backend=MemoryBackend(), clock=clock, secret="s", default_region="CN")
    shadowed = Guard([*shadows[:2], *enforcing, *shadows[2:]], backend=backend, clock=clock, secret="s")  # type: ignore[arg-type]
    numbers = [f"+861380013800{i}" for i in range(4)]
    ips = [f"203.0.113.{i}" for i in range(3)]
    seen_shadowed = 0
    for _ in range(120):
        attempt = {"content": rng.choice("abc"), "ip": rng.choice(ips)}
        phone = rng.choice(numbers)
        a, b = plain.check(phone, **attempt), shadowed.check(phone, **attempt)
        assert (a.allowed, a.reason, a.retry_after) == (b.allowed, b.reason, b.retry_after)
        seen_shadowed += bool(b.shadowed)
        if rng.random() < 0.2:
            clock.advance(rng.choice([5, 31, 61, 3600]))
    assert seen_shadowed > 10, "the shadows were exercised"


def test_shadow_settings() -> None:
    guard = Guard.from_settings({"SMSGUARD_SHADOW": "phone_rate,ip_throttle", "SMSGUARD_DRY_RUN": "false"})
    assert guard.planner.shadows == {"phone_rate", "ip_throttle"}
    assert Guard.from_settings({"SMSGUARD_DRY_RUN": "true"}).planner.shadows == {
        "suspend",
        "same_content",
        "daily_cap",
        "phone_rate",
        "ip_throttle",
    }
    with pytest.raises(ConfigError, match="SHADOW names phone_rat"):
        Guard.from_settings({"SMSGUARD_SHADOW": "phone_rat"})
