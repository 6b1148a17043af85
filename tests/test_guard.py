"""The Guard's contract: all or nothing, exactness under concurrency, fail modes, errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Clock, Unplugged, admitted_by_threads

from smsguard import (
    Blacklist,
    ConfigError,
    DailyCap,
    Decision,
    Denied,
    Guard,
    InvalidInput,
    InvalidPhone,
    IPThrottle,
    PhoneRate,
    Policy,
    SameContent,
    Usage,
)

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from custom_policy import RangeRate

VICTIM = "+8613800138000"
FOUR = [SameContent(), DailyCap(10, tz="Asia/Shanghai"), PhoneRate("1/minute;5/hour"), IPThrottle("20/hour")]


def test_defaults_are_the_providers_rules(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    assert [p.name for p in guard.policies] == ["same_content", "daily_cap"]
    assert guard.check(VICTIM, content="a").allowed
    assert guard.check(VICTIM, content="a").reason == "same_content"


def test_denied_attempt_consumes_nothing(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([SameContent(), DailyCap(3), IPThrottle("2/hour")])
    assert guard.check(VICTIM, content="a", ip="203.0.113.1").remaining == {
        "same_content": 0,
        "daily_cap": 2,
        "ip_throttle": 1,
    }
    # Denied by SameContent: DailyCap and IPThrottle must not move.
    for _ in range(5):
        assert guard.check(VICTIM, content="a", ip="203.0.113.1").reason == "same_content"
    d = guard.check(VICTIM, content="b", ip="203.0.113.1")
    assert d.allowed
    assert d.remaining == {"same_content": 0, "daily_cap": 1, "ip_throttle": 0}
    assert "remaining={'same_content': 0, 'daily_cap': 1, 'ip_throttle': 0}" in repr(d)
    # Denied by IPThrottle: DailyCap must not move.
    for _ in range(5):
        assert guard.check(VICTIM, content="c", ip="203.0.113.1").reason == "ip_throttle"
    assert guard.check(VICTIM, content="c", ip="203.0.113.2").remaining["daily_cap"] == 0


def test_decision_shape(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard(FOUR)
    d = guard.check("138 0013 8000", content="Your code is 4821", ip="203.0.113.7")
    assert isinstance(d, Decision)
    assert bool(d) is True
    assert (d.phone, d.policy, d.reason, d.retry_after) == (VICTIM, None, None, None)
    assert d.remaining == {"same_content": 0, "daily_cap": 9, "phone_rate": 0, "ip_throttle": 19}
    assert (d.country, d.phone_hash) == ("CN", guard.identify(VICTIM)[1])
    denied = guard.check(VICTIM, content="Your code is 4821", ip="203.0.113.7")
    assert (denied.country, denied.phone_hash) == ("CN", d.phone_hash)
    assert bool(denied) is False
    assert denied.receipt is None


def test_enforce_raises_with_the_decision(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(1)])
    assert guard.enforce(VICTIM).allowed
    with pytest.raises(Denied, match="denied by daily_cap: daily_cap") as info:
        guard.enforce(VICTIM)
    assert info.value.decision.retry_after is not None
    with pytest.raises(Denied):
        asyncio.run(guard.aenforce(VICTIM))


def test_refund_gives_the_quota_back(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([SameContent(), DailyCap(2)])
    first = guard.check(VICTIM, content="a")
    guard.refund(first)  # the SMS provider failed: this attempt sent nothing
    assert guard.check(VICTIM, content="a").remaining == {"same_content": 0, "daily_cap": 1}
    assert guard.check(VICTIM, content="b").allowed
    denied = guard.check(VICTIM, content="c")
    guard.refund(denied)  # a denial has nothing to give back
    assert denied.reason == "daily_cap"
    assert guard.check(VICTIM, content="c").reason == "daily_cap"


def test_a_receipt_is_spent_once(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([DailyCap(3)])
    first = guard.check(VICTIM)
    second = guard.check(VICTIM)  # same clock, same expiry: the hits differ only by token
    for _ in range(3):
        guard.refund(first)
    assert guard.check(VICTIM).remaining == {"daily_cap": 1}, "one hit back, however many refunds"
    asyncio.run(guard.arefund(first))
    guard.refund(second)
    guard.refund(second)
    assert guard.check(VICTIM).remaining == {"daily_cap": 1}
    assert guard.check(VICTIM).reason is None
    assert guard.check(VICTIM).reason == "daily_cap"


def test_refund_async(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(1)])

    async def scenario() -> None:
        d = await guard.acheck(VICTIM)
        await guard.arefund(d)
        assert (await guard.acheck(VICTIM)).allowed
        assert not (await guard.acheck(VICTIM)).allowed

    asyncio.run(scenario())


def test_format_variants_share_one_counter(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(3)])
    for raw in ["+86 138-0013-8000", "008613800138000", "１３８００１３８０００"]:
        assert guard.check(raw).allowed
    assert guard.check("13800138000").reason == "daily_cap"


def test_bad_input_raises_invalid_input(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard(FOUR)
    with pytest.raises(InvalidPhone, match="'12' is not a valid number for region CN"):
        guard.check("12", content="x", ip="203.0.113.1")
    with pytest.raises(InvalidInput, match=r"'999\.1\.1\.1' is not an IPv4 or IPv6 address"):
        guard.check(VICTIM, content="x", ip="999.1.1.1")
    with pytest.raises(InvalidInput, match="phone must be a string"):
        guard.check(None, content="x", ip="203.0.113.1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="content must be a string, not bytes"):
        guard.check(VICTIM, content=b"x", ip="203.0.113.1")  # type: ignore[arg-type]
    assert guard.check(VICTIM, content="x", ip="203.0.113.1").remaining["daily_cap"] == 9


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fail_mode": "sometimes"}, r"fail_mode \(SMSGUARD_FAIL_MODE\) must be one of"),
        ({"default_region": "ZZ"}, "unknown region 'ZZ'"),
        ({"policies": [DailyCap(), DailyCap(5)]}, "two policies are named 'daily_cap'"),
        ({"policies": [object()]}, "is not a policy"),
    ],
)
def test_misconfiguration_fails_at_construction(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Guard(**settings)  # type: ignore[arg-type]


def test_custom_policy_from_examples(make_guard: Callable[..., Guard]) -> None:
    policy = RangeRate("3/hour", digits=9)
    assert isinstance(policy, Policy)
    guard = make_guard([policy])
    for n in range(3):
        assert guard.check(f"+4479460001{n:02d}").allowed
    d = guard.check("+447946000199")
    assert (d.policy, d.reason, d.retry_after) == ("range_rate", "range_rate", 3600)
    assert guard.check("+447946100100").allowed, "another range"


# -- exactness under concurrency -----------------------------------------------------------


def test_threads_admit_exactly_the_cap(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(10)])
    assert len(admitted_by_threads(lambda: guard.check(VICTIM), threads=16, each=25)) == 10


def test_concurrent_acheck_admits_exactly_the_cap(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([SameContent(skip_missing=True), DailyCap(10), IPThrottle("50/hour")])

    async def flood() -> list[Decision]:
        return await asyncio.gather(*(guard.acheck(VICTIM, ip=f"198.51.100.{i % 7}") for i in range(300)))

    decisions = asyncio.run(flood())
    assert sum(d.allowed for d in decisions) == 10
    assert {d.reason for d in decisions if not d.allowed} == {"daily_cap"}


# -- fail modes ----------------------------------------------------------------------------


def outage_guard(mode: str, clock: Clock) -> tuple[Guard, Unplugged]:
    backend = Unplugged()
    guard = Guard([DailyCap(2)], backend=backend, fail_mode=mode, clock=clock, secret="s", retry_interval=5)  # type: ignore[arg-type]
    return guard, backend


def test_fail_closed_denies_with_retry_after(clock: Clock) -> None:
    guard, backend = outage_guard("closed", clock)
    backend.down = True
    d = guard.check(VICTIM)
    assert (d.allowed, d.reason, d.retry_after) == (False, "backend_unavailable", 5.0)
    calls = backend.calls
    clock.advance(1)
    assert guard.check(VICTIM).reason == "backend_unavailable"
    assert backend.calls == calls, "a down backend is not asked again before retry_interval"


def test_fail_open_allows(clock: Clock) -> None:
    guard, backend = outage_guard("open", clock)
    backend.down = True
    assert [guard.check(VICTIM).reason for _ in range(5)] == ["fail_open"] * 5


def test_fail_local_counts_in_process_and_recovers(clock: Clock) -> None:
    guard, backend = outage_guard("local", clock)
    assert guard.check(VICTIM).allowed  # counted on the real backend
    backend.down = True
    assert guard.check(VICTIM).allowed  # counted locally: local state starts empty
    assert guard.check(VICTIM).allowed
    assert guard.check(VICTIM).reason == "daily_cap", "the fallback still enforces the cap"
    backend.down = False
    clock.advance(5)
    d = guard.check(VICTIM)
    assert d.allowed
    assert d.remaining == {"daily_cap": 0}, "back on the real backend, no restart"
    assert guard.check(VICTIM).reason == "daily_cap"


def test_refund_goes_to_the_backend_that_counted(clock: Clock) -> None:
    guard, backend = outage_guard("local", clock)
    backend.down = True
    local = guard.check(VICTIM)
    backend.down = False
    guard.refund(local)
    clock.advance(5)
    assert guard.check(VICTIM).remaining == {"daily_cap": 1}
    backend.down = True
    assert guard.check(VICTIM).remaining == {"daily_cap": 1}, "the local hit was refunded"


# -- one number: status and reset ---------------------------------------------------------


def test_status_reads_every_counter_of_a_number_and_takes_nothing(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    guard = make_guard([SameContent(), DailyCap(3), PhoneRate("1/minute;5/hour"), IPThrottle("20/hour")])
    guard.check(VICTIM, content="a", ip="203.0.113.1")
    clock.advance(10)
    status = guard.status("138 0013 8000")
    assert status == [
        Usage("daily_cap", 1, 3, 2, None),
        Usage("phone_rate", 1, 1, 0, 50.0),  # full: frees when the hit 10 s ago is a minute old
        Usage("phone_rate", 1, 5, 4, None),
    ], "SameContent and IPThrottle have no subject given: passed over"
    assert guard.status(VICTIM) == status, "reading took nothing"
    with_all = asyncio.run(guard.astatus(VICTIM, content="a", ip="203.0.113.1"))
    assert [u.policy for u in with_all] == [
        "same_content",
        "daily_cap",
        "phone_rate",
        "phone_rate",
        "ip_throttle",
    ]
    assert with_all[0] == Usage("same_content", 1, 1, 0, 20.0)
    clock.advance(60)
    assert guard.check(VICTIM, content="b", ip="203.0.113.1").remaining["daily_cap"] == 1


def test_reset_forgets_a_numbers_counters_not_its_list_entries(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Blacklist(shared=True), SameContent(), DailyCap(2), IPThrottle("20/hour")])
    other = "+8613900139000"
    for content in "ab":
        guard.check(VICTIM, content=content, ip="203.0.113.1")
    guard.check(other, content="a", ip="203.0.113.1")
    assert guard.check(VICTIM, content="c", ip="203.0.113.1").reason == "daily_cap"
    guard.reset("138 0013 8000")
    assert [u.used for u in guard.status(VICTIM, content="a")] == [0, 0], "its counters are gone"
    assert guard.status(other)[0].used == 1, "another number's stay"
    assert guard.status(VICTIM, ip="203.0.113.1")[-1].used == 3, "the client's IP count stays"
    assert guard.check(VICTIM, content="a", ip="203.0.113.1").allowed
    guard.add_number("blacklist", other)
    asyncio.run(guard.areset(other))
    assert guard.check(other, content="z", ip="203.0.113.2").reason == "blacklisted", "list entries stay"


def test_a_clock_set_after_construction_is_the_one_every_operation_reads(clock: Clock) -> None:
    guard = Guard([PhoneRate("1/minute")], secret="s", default_region="CN")  # on time.time at first
    guard.clock = clock
    assert guard.clock is clock
    assert guard.check(VICTIM).allowed
    assert guard.check(VICTIM).retry_after == pytest.approx(60)
    clock.advance(60)
    assert guard.check(VICTIM).allowed, "the minute passed on the clock the guard was given"
