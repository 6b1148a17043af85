"""Statistics: written with the decision, exact per reason, country and hour, on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date

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
    Statistics,
    Suspend,
    Whitelist,
)
from smsguard.stats import Day, Report

VICTIM = "+8613800138000"
TESTER = "+8613900139000"
SATELLITE = "+881912345678"  # Globalstar: no country ("001"), blacklisted by prefix
US = "+12025550123"
FR = "+33612345678"
POLICIES = [
    Suspend(),
    Whitelist([TESTER]),
    Blacklist(prefixes=["+8819"]),
    SameContent(),
    DailyCap(3, tz="Asia/Shanghai"),
    PhoneRate("2/minute"),
    IPThrottle("4/hour"),
]


def scripted_run(guard: Guard, clock: Clock) -> None:
    """Two local hours of traffic (12:00 and 13:00 in Asia/Shanghai, Mon 2026-03-02)."""
    first = guard.check(VICTIM, content="a", ip="203.0.113.1")  # allowed
    assert guard.check(VICTIM, content="a", ip="203.0.113.1").reason == "same_content"
    assert guard.check(VICTIM, content="b", ip="203.0.113.1").allowed
    assert guard.check(VICTIM, content="c", ip="203.0.113.1").reason == "phone_rate"
    assert guard.check(TESTER, content="a", ip="203.0.113.1").reason == "exempt"
    assert guard.check(SATELLITE, content="a", ip="203.0.113.1").reason == "blacklisted"
    assert guard.check(US, content="a", ip="203.0.113.1").allowed
    guard.refund(first)  # the SMS provider refused it
    clock.advance(3600)
    assert guard.check(VICTIM, content="d", ip="203.0.113.2").allowed
    assert guard.check(FR, content="a", ip="203.0.113.1").allowed
    guard.suspend()
    assert guard.check(FR, content="b", ip="203.0.113.1").reason == "suspended"


def test_counts_per_reason_country_and_hour_exactly(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard(POLICIES)
    scripted_run(guard, clock)
    day = guard.stats()
    assert day.day == date(2026, 3, 2)
    assert dict(day.hours[12]) == {
        "attempts": 7,
        "allowed": 4,
        "denied:same_content": 1,
        "denied:phone_rate": 1,
        "denied:blacklisted": 1,
        "refunded": 1,
        "country:CN": 5,
        "country:001": 1,
        "country:US": 1,
        "sent:CN": 3,
        "sent:US": 1,
    }
    assert dict(day.hours[13]) == {
        "attempts": 3,
        "allowed": 2,
        "denied:suspended": 1,
        "country:CN": 1,
        "country:FR": 2,
        "sent:CN": 1,
        "sent:FR": 1,
    }
    assert sorted(day.hours) == [12, 13]
    assert (day.attempts, day.allowed, day.refunded, day.verified) == (10, 6, 1, 0)
    assert day.denied == {"blacklisted": 1, "phone_rate": 1, "same_content": 1, "suspended": 1}
    assert list(day.countries.items()) == [("CN", 6), ("FR", 2), ("001", 1), ("US", 1)]
    assert guard.stats("2026-03-01").attempts == 0, "the day before saw nothing"


def test_async_twins_read_the_same(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard(POLICIES)

    async def run() -> tuple[Day, Report]:
        for content in "ab":
            await guard.acheck(VICTIM, content=content, ip="203.0.113.1")
        await guard.acheck(VICTIM, content="a", ip="203.0.113.1")
        return await guard.astats(date(2026, 3, 2)), await guard.areport()

    day, report = asyncio.run(run())
    assert (day.attempts, day.allowed, day.denied) == (3, 2, {"phone_rate": 1}), "frees last: the minute"
    assert report.day.totals == day.totals


def test_the_day_and_hour_are_local(make_guard: Callable[..., Guard], clock: Clock) -> None:
    # 23:30 on Sunday in Shanghai is 15:30 UTC: a UTC guard files it under Sunday 15:00.
    clock.now = 1772379000.0  # 2026-03-01T15:30Z
    shanghai = make_guard([DailyCap(3, tz="Asia/Shanghai")])
    shanghai.check(VICTIM)
    assert list(shanghai.stats("2026-03-01").hours) == [23]
    utc = Guard([DailyCap(3)], clock=clock, statistics=Statistics(days=2))
    utc.check(VICTIM)
    assert list(utc.stats("2026-03-01").hours) == [15], "UTC, the DailyCap's zone"


def test_recording_never_denies_and_kept_days_expire(clock: Clock) -> None:
    backend = MemoryBackend()
    guard = Guard([DailyCap(1)], backend=backend, clock=clock, statistics=Statistics(days=2))
    assert guard.check(VICTIM).allowed
    assert guard.check(VICTIM).reason == "daily_cap"
    assert guard.stats().attempts == 2
    clock.advance(2 * 86400 + 1800)  # two days after the hour ended, less half an hour
    guard.check("+8613800138001")
    assert guard.stats("2026-03-02").attempts == 2, "kept for 2 days after their hour"
    clock.advance(3600)
    backend.sweep(clock())
    assert guard.stats("2026-03-02").attempts == 0, "then gone"


def test_statistics_off(clock: Clock) -> None:
    guard = Guard([DailyCap(1)], clock=clock, statistics=False)
    guard.check(VICTIM)
    with pytest.raises(ConfigError, match="no statistics"):
        guard.stats()
    with pytest.raises(ConfigError, match="at least 1 day"):
        Statistics(days=0)
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        Guard(clock=clock).stats("yesterday")


def test_report_compares_days_and_flags_a_pumping_hour() -> None:
    quiet = {3: {"attempts": 10, "allowed": 9, "verified": 8, "country:CN": 10}}
    today = Day(
        date(2026, 3, 2),
        {
            3: {"attempts": 200, "allowed": 190, "verified": 20, "country:CN": 10, "country:LV": 190},
            9: {"attempts": 25, "allowed": 25, "country:CN": 25},  # busy, but nothing before to fall from
        },
    )
    report = Report(today, Day(date(2026, 3, 1), quiet), Day(date(2026, 2, 23), quiet))
    assert report.conversion == pytest.approx(20 / 215)
    assert report.anomalies == [
        "03:00 200 attempts, 20.0x the day before, success 11% (the day before 89%)",
        # No traffic at 09:00 the day before: against that whole day. 25 codes, none entered.
        "09:00 25 attempts, from none the day before, success 0% (the day before 89%)",
        "country LV: 190 attempts, from none the day before",
        "country CN: 35 attempts, 3.5x the day before",
        "the day: 225 attempts, 22.5x the same weekday a week before",
    ]
    data = report.as_dict()
    assert data["totals"]["attempts"] == 225
    assert data["previous"]["attempts"] == 10
    assert data["top_countries"] == {"LV": 190, "CN": 35}


def test_report_is_quiet_on_an_ordinary_day() -> None:
    hours = {h: {"attempts": 30, "allowed": 28, "verified": 25, "country:CN": 30} for h in range(8, 20)}
    report = Report(Day(date(2026, 3, 2), hours), Day(date(2026, 3, 1), hours), Day(date(2026, 2, 23), hours))
    assert report.anomalies == []
    assert report.conversion == pytest.approx(25 / 28)


def test_without_verifications_a_surge_is_flagged_alone() -> None:
    # Pumping through fresh numbers raises the share allowed: without verifications to read,
    # volume is the signal.
    before = Day(date(2026, 3, 1), {8: {"attempts": 30, "allowed": 25}})
    today = Day(date(2026, 3, 2), {8: {"attempts": 150, "allowed": 148}, 9: {"attempts": 15, "allowed": 15}})
    report = Report(today, before, before)
    assert (
        report.anomalies[0]
        == "08:00 150 attempts, 5.0x the day before (no verifications counted: success unknown)"
    )
    assert not any(line.startswith("09:00") for line in report.anomalies), "15 attempts: too few to say"
    assert report.conversion is None, "no verifications counted: no conversion"


def test_report_shows_conversion_per_country_and_network(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """Codes entered per code sent, per country and, where the guard knows networks, per
    network: what the daily review shows beside the day's totals."""
    from smsguard import LearnedCap

    guard = make_guard([LearnedCap("network", floor=100, ceiling=100)], default_region="GB")
    sent = ["+447400123456", "+447400123457", "+447400123458", "+33612345678"]
    for phone in sent:
        assert guard.check(phone).allowed
    guard.verified(sent[0])
    guard.verified(sent[3])
    conversions = guard.report().as_dict()["conversions"]
    assert conversions["GB"] == pytest.approx(1 / 3)
    assert conversions["FR"] == 1.0
    networks = [
        f"{(phone[:3] == '+44' and 'GB') or 'FR'} {guard.planner.identify(phone).network}" for phone in sent
    ]
    expected = {
        n: networks[::3].count(n) / networks.count(n) for n in networks
    }  # sent[0] and sent[3] entered
    assert {scope: rate for scope, rate in conversions.items() if " " in scope} == pytest.approx(expected)


def test_the_guards_own_surges_and_alarms_are_counted(make_guard: Callable[..., Guard], clock: Clock) -> None:
    """A LearnedCap's refusals (told once an hour per scope) and a SpendCap's alarm are counted
    by policy and country, and the daily review lists them among its anomalies."""
    from smsguard import LearnedCap, SpendCap

    guard = make_guard(
        [LearnedCap("country", floor=2, ceiling=100), SpendCap(daily_messages=10, alarm=0.5)],
        default_region="FR",
    )
    for n in range(5):  # 2 sent, then the country's room refuses: a conversion drop, told once
        guard.check(f"+3361234560{n}")
    for n in range(6):  # codes entered earn GB room: 6 sent, the 5th reaching the alarm
        phone = f"+4474001234{n:02d}"
        assert guard.check(phone).allowed
        guard.verified(phone)
    day = guard.stats()
    assert day.events == {"budget_alarm:spend": 1, "conversion_drop:learned_country FR": 1}
    assert guard.report().anomalies[-2:] == [
        "budget alarm of spend (1 time)",
        "conversion drop refused by learned_country FR (1 time)",
    ]
