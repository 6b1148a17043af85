"""Each policy's semantics, on every backend, with the clock moved by hand."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from conftest import Clock

from smsguard import (
    Blacklist,
    ConfigError,
    DailyCap,
    Guard,
    IPThrottle,
    MissingSubject,
    PhoneRate,
    SameContent,
    Suspend,
    Whitelist,
)
from smsguard.days import LocalDays
from smsguard.plan import Counter, key
from smsguard.planner import address
from smsguard.policies import sent_log

VICTIM = "+8613800138000"
OTHER = "+8613900139000"


def epoch(text: str, tz: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


# -- SameContent ---------------------------------------------------------------------------


def test_same_content_once_per_30s(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([SameContent()])
    assert guard.check(VICTIM, content="code 1").allowed
    denied = guard.check(VICTIM, content="code 1")
    assert (denied.allowed, denied.policy, denied.reason) == (False, "same_content", "same_content")
    assert denied.retry_after == 30.0
    assert guard.check(VICTIM, content="code 2").allowed, "other content is another counter"
    assert guard.check(OTHER, content="code 1").allowed, "another number is another counter"
    clock.advance(29.5)
    assert guard.check(VICTIM, content="code 1").retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    assert guard.check(VICTIM, content="code 1").allowed, "the window is exactly 30 s"


def test_same_content_needs_content(make_guard: Callable[..., Guard]) -> None:
    with pytest.raises(MissingSubject, match="content="):
        make_guard([SameContent()]).check(VICTIM)
    skipping = make_guard([SameContent(skip_missing=True), DailyCap(2)])
    assert skipping.check(VICTIM).allowed
    assert skipping.check(VICTIM).allowed
    assert skipping.check(VICTIM).reason == "daily_cap", "the other policies still count"


def test_same_content_custom_window_and_limit(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([SameContent(60, limit=2)])
    assert guard.check(VICTIM, content="x").allowed
    clock.advance(10)
    assert guard.check(VICTIM, content="x").allowed
    assert guard.check(VICTIM, content="x").retry_after == 50.0


# -- DailyCap ------------------------------------------------------------------------------


def test_daily_cap_ten_per_day(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([DailyCap(10, tz="Asia/Shanghai")])
    clock.now = epoch("2026-03-02T09:00:00", "Asia/Shanghai")
    for i in range(10):
        d = guard.check(VICTIM)
        assert d.allowed
        assert d.remaining == {"daily_cap": 9 - i}
    denied = guard.check(VICTIM)
    assert (denied.allowed, denied.reason) == (False, "daily_cap")
    assert denied.retry_after == 15 * 3600, "until local midnight"
    assert guard.check(OTHER).allowed


def test_daily_cap_resets_at_shanghai_midnight(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([DailyCap(2, tz="Asia/Shanghai")])
    clock.now = epoch("2026-03-02T23:59:58", "Asia/Shanghai")
    assert guard.check(VICTIM).allowed
    assert guard.check(VICTIM).allowed
    assert guard.check(VICTIM).retry_after == 2.0
    clock.advance(1.999)
    assert not guard.check(VICTIM).allowed
    clock.advance(0.001)  # 00:00:00 local, 16:00 UTC: a UTC day would not have turned
    assert guard.check(VICTIM).allowed


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-08", 23), ("2026-11-01", 25), ("2026-03-09", 24)],
    ids=["spring-forward", "fall-back", "ordinary"],
)
def test_daily_cap_on_dst_days(make_guard: Callable[..., Guard], clock: Clock, day: str, hours: int) -> None:
    tz = "America/New_York"
    guard = make_guard([DailyCap(1, tz=tz)])
    clock.now = epoch(f"{day}T00:00:00", tz)
    assert guard.check(VICTIM).allowed
    denied = guard.check(VICTIM)
    assert denied.retry_after == hours * 3600, f"{day} is a {hours}-hour day"
    clock.advance(hours * 3600 - 1)
    assert not guard.check(VICTIM).allowed, "still the same local day one second before midnight"
    clock.advance(1)
    assert guard.check(VICTIM).allowed


def test_daily_cap_unknown_zone_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        DailyCap(tz="Mars/Olympus")
    with pytest.raises(ConfigError, match="limit must be positive"):
        DailyCap(0)


# -- PhoneRate -----------------------------------------------------------------------------


def test_phone_rate_sliding_windows(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([PhoneRate("1/minute;3/hour")])
    t0 = clock.now
    for minute in range(2):
        clock.now = t0 + 60 * minute
        assert guard.check(VICTIM).allowed
        assert guard.check(VICTIM).retry_after == 60.0, "only the minute is full"
    clock.now = t0 + 120
    assert guard.check(VICTIM).allowed
    both_full = guard.check(VICTIM)
    assert both_full.retry_after == 3600 - 120, "the counter that frees last names the wait"
    clock.now = t0 + 180
    denied = guard.check(VICTIM)
    assert denied.reason == "phone_rate"
    assert denied.retry_after == 3600 - 180, "the hour slides from the first hit"
    clock.now = t0 + 3600
    assert guard.check(VICTIM).allowed


def test_rate_string_errors_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="not a rate string"):
        PhoneRate("often")
    with pytest.raises(ConfigError, match="not a rate string"):
        IPThrottle("5 per fortnight")


# -- IPThrottle ----------------------------------------------------------------------------


def test_ip_throttle_counts_across_numbers(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([IPThrottle("3/hour")])
    for i in range(3):
        assert guard.check(f"+86138001380{i:02d}", ip="203.0.113.7").allowed
    denied = guard.check("+8613800138099", ip="203.0.113.7")
    assert (denied.reason, denied.retry_after) == ("ip_throttle", 3600.0)
    assert guard.check("+8613800138099", ip="203.0.113.8").allowed


def test_ipv6_counts_per_64(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([IPThrottle("2/hour")])
    assert guard.check(VICTIM, ip="2001:db8:1:2::1").allowed
    assert guard.check(VICTIM, ip="2001:db8:1:2:ffff::9").allowed
    assert guard.check(VICTIM, ip="2001:db8:1:2::1234").reason == "ip_throttle"
    assert guard.check(VICTIM, ip="2001:db8:1:3::1").allowed, "another /64"


def test_ipv4_mapped_counts_as_ipv4(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([IPThrottle("1/hour")])
    assert guard.check(VICTIM, ip="::ffff:198.51.100.1").allowed
    assert not guard.check(VICTIM, ip="198.51.100.1").allowed


def test_ip_throttle_missing_ip(make_guard: Callable[..., Guard]) -> None:
    with pytest.raises(MissingSubject, match="ip_throttle needs ip="):
        make_guard([IPThrottle()]).check(VICTIM)
    assert make_guard([IPThrottle(skip_missing=True)]).check(VICTIM).allowed


def test_ip_prefix_bounds() -> None:
    with pytest.raises(ConfigError, match="ipv6_prefix"):
        IPThrottle(ipv6_prefix=129)


@pytest.mark.parametrize(
    "text",
    ["203.0.113.7", "0.0.0.0", "255.255.255.255", "10.0.0.01", "010.0.0.1", "1.2.3", "1.2.3.4.5",
     "256.1.1.1", " 1.2.3.4", "1.2.3.4\n", "1.2.3.4\x00", "\uff11.2.3.4", "١.2.3.4", "0x1.2.3.4",
     "1.2.3.-4", "", "::1", "::ffff:1.2.3.4", "2001:db8::1", "fe80::1%eth0", "1.2.3.4/32", "x"],
)  # fmt: skip
def test_addresses_are_read_as_ipaddress_reads_them(text: str) -> None:
    """The planner reads a usual IPv4 address with the C library: the same address as
    ``ipaddress.ip_address``, and the same refusal of every other spelling."""
    try:
        expected: object = ipaddress.ip_address(text)
    except ValueError:
        expected = ValueError
    try:
        found: object = address(text)
    except ValueError:
        found = ValueError
    assert (found, type(found)) == (expected, type(expected))


def test_ip_throttle_networks_as_text() -> None:
    throttle, wide = IPThrottle(), IPThrottle(ipv4_prefix=24)
    for text in ("203.0.113.7", "0.0.0.0", "255.255.255.255"):
        assert throttle.network(address(text)) == text
    assert wide.network(address("203.0.113.7")) == "203.0.113.0/24"
    assert throttle.network(address("::ffff:203.0.113.7")) == "203.0.113.7"


def test_built_in_counters_are_the_counters_their_fields_say() -> None:
    """The built-ins build their counters as plain tuples (the cheap way): each is the very
    Counter its keyword arguments make, field by field."""
    now = 1772424000.25
    guard = Guard(
        [
            SameContent(30),
            DailyCap(10, tz="Asia/Shanghai"),
            PhoneRate("1/minute;5/hour"),
            IPThrottle("20/hour"),
        ],
        secret="s",
    )
    attempt = guard.planner.attempt(VICTIM, "hello", "203.0.113.7")
    phone_id, content_id = attempt.phone_id, attempt.content_id
    assert content_id is not None
    log = sent_log(phone_id)
    start, end, _ = LocalDays("Asia/Shanghai")(now)
    subject = attempt.digest("203.0.113.7")
    expected = [
        Counter(key("same_content", phone_id, content_id), 1, now + 30, window=30, log=log, match=content_id),
        Counter(key("daily_cap", phone_id), 10, end, since=start, log=log),
        Counter(key("phone_rate", phone_id, "1/60"), 1, now + 60, window=60.0, log=log),
        Counter(key("phone_rate", phone_id, "5/3600"), 5, now + 3600, window=3600.0, log=log),
        Counter(
            key("ip_throttle", subject, "20/3600"),
            20,
            now + 3600,
            window=3600.0,
            log=key("ip_throttle", subject),
        ),
    ]
    found = [c for p in guard.policies for c in p.review(attempt, now)]  # type: ignore[union-attr]
    assert found == expected
    assert all(
        type(c) is Counter and c._asdict() == e._asdict() for c, e in zip(found, expected, strict=True)
    )


# -- lists and the switch ------------------------------------------------------------------


def test_whitelist_exempts_from_every_limit(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Whitelist(["+86 138 0000 0000"]), SameContent(), DailyCap(1)])
    for _ in range(5):
        d = guard.check("13800000000", content="same")
        assert (d.allowed, d.policy, d.reason) == (True, "whitelist", "exempt")
    assert guard.check(VICTIM, content="same").allowed
    assert not guard.check(VICTIM, content="other").allowed


def test_blacklist_denies_numbers_and_ranges(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Blacklist(["13800138000"], region="CN", prefixes=["+8817"]), DailyCap(5)])
    d = guard.check(VICTIM)
    assert (d.allowed, d.policy, d.reason, d.retry_after) == (False, "blacklist", "blacklisted", None)
    assert guard.check("+881712345678").reason == "blacklisted"
    assert guard.check(OTHER).remaining == {"daily_cap": 4}, "denials took nothing"


def test_list_numbers_are_checked_at_construction() -> None:
    with pytest.raises(ConfigError, match="whitelist: '12' is not a valid number"):
        Whitelist(["12"], region="CN")
    with pytest.raises(ConfigError, match="prefix"):
        Blacklist(prefixes=["881"])


def test_first_list_verdict_wins(make_guard: Callable[..., Guard]) -> None:
    assert make_guard([Whitelist([VICTIM]), Blacklist([VICTIM])]).check(VICTIM).allowed
    assert not make_guard([Blacklist([VICTIM]), Whitelist([VICTIM])]).check(VICTIM).allowed


def test_shared_lists_change_at_runtime(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Whitelist(shared=True), Blacklist(shared=True), DailyCap(1)])
    assert guard.check(VICTIM).allowed
    assert guard.check(VICTIM).reason == "daily_cap"
    guard.add_number("whitelist", "138 0013 8000")
    assert guard.check(VICTIM).reason == "exempt"
    guard.remove_number("whitelist", VICTIM)
    guard.add_number("blacklist", OTHER)
    d = guard.check(OTHER)
    assert (d.allowed, d.policy, d.reason) == (False, "blacklist", "blacklisted")
    guard.remove_number("blacklist", OTHER)
    assert guard.check(OTHER).allowed


def test_shared_list_requires_shared_policy(make_guard: Callable[..., Guard]) -> None:
    with pytest.raises(ConfigError, match="shared=True"):
        make_guard([Whitelist()]).add_number("whitelist", VICTIM)


def test_suspend_switch(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Suspend(), DailyCap(10)])
    assert guard.check(VICTIM).allowed
    guard.suspend()
    d = guard.check(OTHER)
    assert (d.allowed, d.policy, d.reason) == (False, "suspend", "suspended")
    guard.resume()
    assert guard.check(OTHER).remaining == {"daily_cap": 9}, "the suspended attempt took nothing"


# -- policy order is the order of verdicts (semantics 11) ---------------------------------


def test_shared_blacklist_before_a_fixed_whitelist_wins(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Blacklist(shared=True), Whitelist([VICTIM]), DailyCap(1)])
    assert guard.check(VICTIM).reason == "exempt"
    guard.add_number("blacklist", VICTIM)
    d = guard.check(VICTIM)
    assert (d.allowed, d.policy, d.reason, d.kind) == (False, "blacklist", "blacklisted", "forbidden")


def test_fixed_whitelist_before_a_shared_blacklist_wins(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Whitelist([VICTIM]), Blacklist(shared=True), DailyCap(1)])
    guard.add_number("blacklist", VICTIM)
    assert [guard.check(VICTIM).reason for _ in range(3)] == ["exempt"] * 3


@pytest.mark.parametrize("shared", [False, True])
def test_switch_placed_first_stops_whitelisted_numbers(
    make_guard: Callable[..., Guard], shared: bool
) -> None:
    whitelist = Whitelist(shared=True) if shared else Whitelist([VICTIM])
    guard = make_guard([Suspend(), whitelist, DailyCap(1)])
    if shared:
        guard.add_number("whitelist", VICTIM)
    guard.suspend()
    assert guard.check(VICTIM).reason == "suspended"
    guard.resume()
    assert [guard.check(VICTIM).reason for _ in range(2)] == ["exempt"] * 2


def test_switch_placed_after_a_whitelist_spares_it(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Whitelist([VICTIM]), Suspend(), DailyCap(1)])
    guard.suspend()
    assert guard.check(VICTIM).reason == "exempt"
    assert guard.check(OTHER).reason == "suspended"


def test_fixed_verdict_after_a_flag_counts_nothing(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Suspend(), DailyCap(1), Blacklist([VICTIM]), DailyCap(5, name="later")])
    assert guard.check(VICTIM).reason == "blacklisted"
    assert guard.check(OTHER).remaining == {"daily_cap": 0, "later": 4}, (
        "the blacklisted attempt took nothing"
    )


@pytest.mark.parametrize(
    "build",
    [
        lambda: PhoneRate("0/minute"),
        lambda: IPThrottle("5/hour;0/day"),
        lambda: DailyCap(0),
        lambda: SameContent(limit=0),
        lambda: SameContent(window=0),
    ],
)
def test_limits_below_one_fail_at_construction(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigError):
        build()
