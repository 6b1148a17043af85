"""The pumping defences (pumping.py) on every backend: countries and number types, caps on
unverified numbers that learn from verifications (injected clock), the spend cap and its alarm,
the providers' content rules, the challenge verdict, and one round trip with all of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from conftest import Clock

from smsguard import (
    BudgetShed,
    ChallengeCap,
    ConfigError,
    ContentRules,
    Countries,
    DailyCap,
    Event,
    Guard,
    IPThrottle,
    LearnedCap,
    SpendCap,
    UnverifiedCap,
    recommended,
)

VICTIM = "+8613800138000"
ANGUILLA = "+12642351234"  # +1, but not the US
JERSEY = "+447797712345"  # +44, but not GB
LONDON = "+447400123456"
US_PREMIUM = "+19002345678"
US_TOLL_FREE = "+18002345678"
GB_VOIP = "+445612345678"


def block(n: int, start: int = 0) -> list[str]:
    """``n`` numbers of one Latvian range (+371 2123 4xxx): what a pumping run walks through."""
    return [f"+3712123{4000 + start + i:04d}" for i in range(n)]


def test_countries_by_region_not_calling_code(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Countries(allow=["US", "GB"], deny_types=())])
    assert guard.check("+12025550123").allowed
    assert guard.check(LONDON).allowed
    for number in (ANGUILLA, JERSEY, VICTIM, "+881912345678"):
        denied = guard.check(number)
        assert (denied.reason, denied.kind) == ("country_not_allowed", "forbidden"), number
    denied_gb = make_guard([Countries(deny=["GB"], deny_types=())], secret="other")
    assert denied_gb.check(JERSEY).allowed, "Jersey is not GB"
    assert denied_gb.check(LONDON).reason == "country_not_allowed"


def test_number_types_denied_by_default(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Countries()])
    for number in (US_PREMIUM, US_TOLL_FREE, GB_VOIP):
        assert guard.check(number).reason == "number_type", number
    assert guard.check(LONDON).allowed
    assert guard.check("+12025550123").allowed, "fixed line or mobile: a person's phone"


def test_country_caps_per_calendar_day(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([Countries(caps={"LV": 3}, deny_types=(), tz="Asia/Shanghai")])
    numbers = block(5)
    assert [guard.check(n).allowed for n in numbers] == [True, True, True, False, False]
    denied = guard.check(numbers[4])
    assert (denied.reason, denied.policy) == ("country_cap", "countries")
    assert denied.retry_after == 12 * 3600, "until midnight in Shanghai"
    assert guard.check(LONDON).allowed, "another country is not capped"
    clock.advance(12 * 3600)
    assert guard.check(numbers[4]).allowed, "a new day"


def test_a_country_in_shadow_is_monitor_only(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([Countries(allow=["GB"], deny_types=(), shadow=True)])
    d = guard.check(ANGUILLA)
    assert d.allowed
    assert d.shadowed == ("countries",)


def test_unverified_cap_per_range_and_what_verifying_earns(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([UnverifiedCap("range", "2/hour", per_verified=2.0)])
    numbers = block(8)
    assert [guard.check(n).allowed for n in numbers[:3]] == [True, True, False]
    denied = guard.check(numbers[3])
    assert (denied.reason, denied.kind, denied.limit) == ("unverified_cap", "limit", 2)
    assert guard.check("+37121245000").allowed, "another range has its own floor"
    guard.verified(numbers[0])  # a real user entered the code
    assert guard.check(numbers[0]).allowed, "a verified number is not held"
    assert guard.check(numbers[0]).allowed
    # The range earned two more sends to unverified numbers this hour.
    assert [guard.check(n).allowed for n in numbers[4:7]] == [True, True, False]
    assert guard.stats().verified == 1


def test_trust_and_earnings_expire(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard([UnverifiedCap("range", "1/hour", per_verified=1.0, trust=7200)])
    numbers = block(4)
    guard.check(numbers[0])
    guard.verified(numbers[0])
    assert [guard.check(n).allowed for n in numbers[1:3]] == [True, False], "floor 1 + 1 earned, one used"
    clock.advance(3601)
    assert guard.check(numbers[0]).allowed, "still trusted"
    assert [guard.check(n).allowed for n in numbers[2:4]] == [True, False], "the earning is gone"
    assert guard.status(numbers[0]) == [], "a trusted number is not held: nothing to show"
    clock.advance(3600)  # past the trust
    assert guard.check(numbers[0]).allowed
    assert guard.status(numbers[0])[0].used == 1, "counted again, as any unverified number"
    assert not guard.check(numbers[3]).allowed


def test_unverified_cap_per_network_and_country(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([UnverifiedCap("network", "2/day"), UnverifiedCap("country", "3/day")])
    # LMT and Tele2 are two Latvian networks: numbers spread over ranges, caught by network.
    lmt = ["+37129123456", "+37129234567", "+37129345678"]
    tele2 = ["+37120000001", "+37120000002"]
    assert [guard.check(n).allowed for n in lmt] == [True, True, False]
    assert guard.check(lmt[2]).policy == "unverified_network"
    assert guard.check(tele2[0]).allowed
    denied = guard.check(tele2[1])
    assert (denied.reason, denied.policy) == ("unverified_cap", "unverified_country"), "three in Latvia"
    assert guard.check(LONDON).allowed


def test_learning_records_only_until_its_day(make_guard: Callable[..., Guard], clock: Clock) -> None:
    # The clock is Mon 2026-03-02 04:00 UTC: it learns until Wednesday.
    guard = make_guard([UnverifiedCap("range", "1/hour", learn_until="2026-03-04")])
    numbers = block(6)
    learning = [guard.check(n) for n in numbers[:3]]
    assert all(d.allowed for d in learning)
    assert [d.shadowed for d in learning] == [(), ("unverified_range",), ("unverified_range",)]
    clock.advance(2 * 86400)
    assert [guard.check(n).allowed for n in numbers[3:5]] == [True, False], "now it enforces"


def test_what_it_learnt_counts_once_it_enforces(make_guard: Callable[..., Guard], clock: Clock) -> None:
    """A policy still learning keeps its own log, so the hits it recorded in shadow count in its
    window once it enforces (a shadow policy's counters are otherwise kept apart)."""
    guard = make_guard([UnverifiedCap("range", "1/hour", learn_until=clock.now + 1800)])
    numbers = block(2)
    assert guard.check(numbers[0]).shadowed == ()
    clock.advance(1801)
    denied = guard.check(numbers[1])
    assert (denied.allowed, denied.reason) == (False, "unverified_cap"), "the learnt hit is in its hour"
    assert denied.retry_after == 3600 - 1801


def test_a_challenge_instead_of_a_denial(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([DailyCap(3), UnverifiedCap("range", "1/hour", challenge=True)])
    numbers = block(4)
    assert guard.check(numbers[0]).allowed
    challenged = guard.check(numbers[1])
    assert (challenged.allowed, challenged.kind, challenged.reason) == (False, "challenge", "unverified_cap")
    passed = guard.check(numbers[1], challenge_passed=True)
    assert passed.allowed, "judged by the remaining policies"
    assert all(guard.check(numbers[2], challenge_passed=True).allowed for _ in range(3))
    assert guard.check(numbers[2], challenge_passed=True).reason == "daily_cap", "they still hold"


def test_spend_cap_messages_money_and_one_alarm(make_guard: Callable[..., Guard], clock: Clock) -> None:
    events: list[Event] = []
    guard = make_guard(
        [SpendCap(0.20, daily_messages=10, prices={"LV": 0.06, "GB": 0.04}, alarm=0.5)],
        listeners=[events.append],
    )
    # 0.06 a code to Latvia: three fit in $0.20, the fourth would make 0.24.
    assert [guard.check(n).allowed for n in block(4)] == [True, True, True, False]
    denied = guard.check(block(1, 9)[0])
    assert (denied.reason, denied.kind, denied.policy) == ("budget", "unavailable", "spend")
    assert guard.check(LONDON).reason == "budget", "0.18 + 0.04 > 0.20"
    alarms = [e for e in events if e.kind == "budget_alarm"]
    assert [e.detail for e in alarms] == ["spend: $0.12 of $0.20 today"], "once, when it reached half"
    clock.advance(86400)
    assert guard.check(LONDON).allowed, "a new day, a new budget"


def test_the_budget_sheds_unproven_sends_in_low_conversion_countries_first(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """Issue 22, item 6: below the shedding line every send passes; past it a country's codes to
    unknown numbers today are held to 2 codes plus 1 per number verified there today, known
    numbers pass, and the hard stop comes only at the end of the budget."""
    events: list[Event] = []
    spend = SpendCap(1.00, prices={"GB": 0.04, "LV": 0.04}, alarm=0.5)
    guard = make_guard([spend, BudgetShed(spend, 0.5, floor=2, per_verified=1.0)], listeners=[events.append])
    known = block(1, 99)[0]
    assert guard.check(known).allowed
    guard.verified(known)  # Latvia: one number verified today
    london = [f"+4474001234{i:02d}" for i in range(9)]
    for number in london[:6]:
        assert guard.check(number).allowed
        guard.verified(number)  # Britain: every code entered
    # Six Latvian codes nobody enters: over Latvia's room (2 + 1), but the line is not reached.
    assert [guard.check(n).allowed for n in block(6)] == [True] * 6
    lines = [e.detail for e in events if e.kind == "budget_alarm"]
    assert lines == ["spend: $0.52 of $1.00 today"], "the alarm at the line"
    shed = guard.check(block(1, 50)[0])
    assert (shed.allowed, shed.reason, shed.policy, shed.kind) == (
        False,
        "budget",
        "budget_shed",
        "unavailable",
    )
    assert guard.check(known).allowed, "a known number is served"
    usage = guard.status(block(1, 50)[0])
    assert [(u.policy, u.unit, u.limit) for u in usage if u.policy == "budget_shed"] == [
        ("budget_shed", "$", 0.08)
    ], "Latvia's room as status shows it: 2 codes, in dollars (without its earnings)"
    # Britain: 6 codes so far against 2 + 6: two more, then it is held too.
    assert [guard.check(n).allowed for n in london[6:9]] == [True, True, False]
    # The hard stop: $0.64 spent; nine more codes to the known number make $1.00, then none.
    assert all(guard.check(known).allowed for _ in range(9))
    assert (guard.check(known).reason, guard.check(known).policy) == ("budget", "spend")
    clock.advance(86400)
    assert guard.check(block(1, 60)[0]).allowed, "a new day: nothing is shed below the line"


def test_a_shed_that_challenges_lets_a_solved_challenge_through(make_guard: Callable[..., Guard]) -> None:
    spend = SpendCap(daily_messages=10)
    guard = make_guard([spend, BudgetShed(spend, 0.3, floor=1, challenge=True)])
    assert all(guard.check(n).allowed for n in block(3))  # the line: 3 of 10 messages
    shed = guard.check(block(1, 3)[0])
    assert (shed.reason, shed.kind, shed.policy) == ("budget", "challenge", "budget_shed")
    assert guard.check(block(1, 3)[0], challenge_passed=True).allowed


def test_spend_cap_counts_messages(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard([SpendCap(daily_messages=2)])
    assert [guard.check(n).allowed for n in block(3)] == [True, True, False]


def test_content_rules(clock: Clock) -> None:
    guard = Guard([ContentRules()], clock=clock)
    assert guard.check(VICTIM, context={"params": ["483920"], "code": "483920"}).allowed
    for params in (["http://evil.example/x"], ["see t.cn/A6xYz"], ["www.example.com"], "bit.ly/abc"):
        assert guard.check(VICTIM, context={"params": params}).reason == "content_link", params
    assert guard.check(VICTIM, content="Your code is 1234. Visit evil.top/win").reason == "content_link"
    assert guard.check(VICTIM, content="Your code is 1234.").allowed
    for code in ("12", "123456789", "12ab", "１２３４"):
        assert guard.check(VICTIM, context={"code": code}).reason == "content_code", code


def test_bad_settings_say_why() -> None:
    with pytest.raises(ConfigError, match="by='phone'"):
        UnverifiedCap("phone")
    with pytest.raises(ConfigError, match="unknown number types"):
        Countries(deny_types=["premium"])
    with pytest.raises(ConfigError, match="unknown region 'XX'"):
        Countries(allow=["XX"])
    with pytest.raises(ConfigError, match="needs a daily_budget"):
        SpendCap()
    with pytest.raises(ConfigError, match="share of the budget"):
        BudgetShed(SpendCap(10.0), 1.0)
    with pytest.raises(ConfigError, match="YYYY-MM-DD"):
        UnverifiedCap(learn_until="soon")


def test_the_recommended_set_in_one_step(make_guard: Callable[..., Guard], clock: Clock) -> None:
    guard = make_guard(recommended(["CN", "GB"], daily_budget=100.0, tz="Asia/Shanghai"))
    d = guard.check(VICTIM, content="code", ip="203.0.113.1")
    assert d.allowed
    assert guard.check(ANGUILLA, content="code", ip="203.0.113.1").reason == "country_not_allowed"
    assert guard.check(VICTIM, content="code", ip="203.0.113.1").reason == "phone_rate", "frees last"

    async def verify() -> None:
        await guard.averified(VICTIM)

    asyncio.run(verify())
    assert guard.stats().verified == 1


# -- what the scopes learn (issue 22) -------------------------------------------------------------

GB_RANGE = "+44740012"  # + 4 digits: one range of GB mobile numbers


def test_learned_room_shrinks_while_unentered_and_grows_once_per_number(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """A network's room: the floor while its codes go unentered; each number verified in it
    earns room once, however often it is verified; the room is a sliding day."""
    cap = LearnedCap("country", floor=2, per_verified=1.0, ceiling=100, challenge=True)
    guard = make_guard([cap], default_region="GB")
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in range(3)] == [True, True, False]
    refused = guard.check(f"{GB_RANGE}0003")
    assert (refused.policy, refused.reason, refused.kind) == ("learned_country", "scope_cap", "challenge")
    for _ in range(3):
        guard.verified(f"{GB_RANGE}0000")  # one number: it earns once
    assert guard.check(f"{GB_RANGE}0004").allowed
    assert not guard.check(f"{GB_RANGE}0005").allowed, "three verifications of one number earn one code"
    guard.verified(f"{GB_RANGE}0001")
    guard.verified(f"{GB_RANGE}0004")
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in range(6, 9)] == [True, True, False]
    clock.advance(86401)  # a day on: the sends and the earnings of yesterday are gone alike
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in range(10, 13)] == [True, True, False]


def test_learned_range_counts_a_number_once_a_day_and_remembers_a_week(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """A range: a person asking again passes (up to per_number a day); another number in a range
    whose code went unentered is refused for a week, and served once a code there is entered."""
    cap = LearnedCap("range", floor=1, per_verified=2.0, per_number=3, ceiling=50)
    guard = make_guard([cap], default_region="GB")
    first = f"{GB_RANGE}0001"
    assert [guard.check(first).allowed for _ in range(4)] == [True, True, True, False]
    assert guard.check(first).reason == "scope_cap"
    assert not guard.check(f"{GB_RANGE}0002").allowed, "the range's one unentered code holds it"
    assert guard.check("+447400130001").allowed, "another range: its own first code"
    clock.advance(6 * 86400)
    assert not guard.check(f"{GB_RANGE}0003").allowed, "still within the week"
    guard.verified(first)
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in (4, 5, 6)] == [True, True, False]
    clock.advance(7 * 86400 + 1)
    assert guard.check(f"{GB_RANGE}0007").allowed, "a week on, the range starts again"


def test_a_country_counts_a_number_once_a_day_a_network_every_code(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """A country's room counts numbers, not codes: one number asking three times (a bombing's
    victim, a person whose code is late) is one, and its fourth code that day is refused. A
    network's counts every code (an operator pumping its own numbers over and over)."""
    network = make_guard([LearnedCap("network", floor=2, ceiling=100)], default_region="GB")
    assert [network.check(f"{GB_RANGE}0001").allowed for _ in range(3)] == [True, True, False]
    cap = LearnedCap("country", floor=2, per_number=3, ceiling=100, challenge=True)
    guard = make_guard([cap], default_region="GB")
    first = f"{GB_RANGE}0001"
    assert [guard.check(first).allowed for _ in range(4)] == [True, True, True, False]
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in (2, 3)] == [True, False]
    clock.advance(86401)
    assert guard.check(f"{GB_RANGE}0003").allowed, "a day on"


def test_a_number_solving_again_counts_once_a_day_in_the_challenge_tier(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """A bombing's victim, solved for again and again, is one number in a scope's solved sends
    (the per-number rules cap its own codes): the room real users share is not spent by it."""
    guard = make_guard([ChallengeCap("country", 2)], default_region="GB")
    victim = f"{GB_RANGE}0001"
    assert all(guard.check(victim, challenge_passed=True).allowed for _ in range(4))
    assert guard.check(f"{GB_RANGE}0002", challenge_passed=True).allowed, "one number so far"
    refused = guard.check(f"{GB_RANGE}0003", challenge_passed=True)
    assert (refused.allowed, refused.reason) == (False, "challenge_cap")
    clock.advance(86401)
    assert guard.check(f"{GB_RANGE}0003", challenge_passed=True).allowed, "a day on"


def test_recommended_a_range_earns_its_solved_sends_by_codes_entered(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """A range passes one solved challenge a day, and two more per number verified there: a
    farm that solves for number after number of a range it pumps is held at one, while a range
    whose users enter their codes keeps room."""
    guard = make_guard(recommended(["GB"]), default_region="GB")

    def ask(i: int, solved: bool = False) -> str | None:
        d = guard.check(f"{GB_RANGE}{i:04d}", content="c", ip=f"203.0.113.{i}", challenge_passed=solved)
        return "sent" if d.allowed else d.kind if d.kind == "challenge" else d.reason

    assert ask(1) == "sent"
    assert ask(2) == "challenge"
    assert ask(2, solved=True) == "sent"
    assert ask(3, solved=True) == "challenge_cap", "the range's one solved send today"
    guard.verified(f"{GB_RANGE}0002")
    assert [ask(i, solved=True) for i in (3, 4, 5)] == ["sent", "sent", "challenge_cap"]


def test_recommended_a_number_gets_five_codes_a_day_whatever_it_solves(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    guard = make_guard(recommended(["GB"]), default_region="GB")
    victim = f"{GB_RANGE}0009"
    sent = 0
    for i in range(12):
        clock.advance(3600)
        ask = {"content": f"Your code is {i}", "ip": f"203.0.113.{i}"}
        d = guard.check(victim, **ask)
        if d.kind == "challenge":
            d = guard.check(victim, challenge_passed=True, **ask)
        sent += d.allowed
    assert sent == 5, "3, then 2 more with a challenge each, and no more whatever it solves"
    assert guard.check(victim, content="x", challenge_passed=True).policy == "number_day"


def test_learned_ceiling_follows_the_week_of_verifications(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """Converted or not, a scope runs at most its bare ceiling plus ``history`` times its
    average day of verified numbers over the last week."""
    cap = LearnedCap("country", floor=100, per_verified=10.0, ceiling=3, history=7.0)
    guard = make_guard([cap], default_region="GB")
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in range(4)] == [True, True, True, False]
    assert guard.check(f"{GB_RANGE}0009").reason == "scope_cap"
    for i in range(3):
        guard.verified(f"{GB_RANGE}{i:04d}")  # 3 numbers this week: 7/7 * 3 = 3 more a day
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in range(10, 14)] == [True, True, True, False]
    clock.advance(86401)  # the next day: the week's history still lifts the ceiling
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in range(20, 27)] == [True] * 6 + [False]


def test_never_proven_ranges_share_one_budget_per_country(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """Ranges with no verification share the country's ``fresh`` budget instead of each having
    a floor; a range where a code was entered is proven and passes it."""
    cap = LearnedCap("country", floor=100, ceiling=100, fresh=3, per_verified=0.0)
    guard = make_guard([cap], default_region="GB")
    ranges = [f"+447400{r}0000" for r in range(10, 15)]
    assert [guard.check(n).allowed for n in ranges] == [True, True, True, False, False]
    guard.verified(ranges[0])
    assert guard.check(ranges[0][:-4] + "0099").allowed, "its range is proven"
    assert not guard.check("+447400199999").allowed, "the others still share the spent budget"


def test_a_passed_challenge_counts_and_past_its_ceiling_is_refused(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    cap = LearnedCap("range", floor=1, ceiling=50, challenge=True)
    guard = make_guard([cap, ChallengeCap("range", 2)], default_region="GB")
    assert guard.check(f"{GB_RANGE}0001").allowed
    assert guard.check(f"{GB_RANGE}0002").kind == "challenge"
    solved = [guard.check(f"{GB_RANGE}{i:04d}", challenge_passed=True) for i in (2, 3, 4)]
    assert [d.allowed for d in solved] == [True, True, False]
    assert (solved[2].policy, solved[2].reason, solved[2].kind) == (
        "challenges_range",
        "challenge_cap",
        "limit",
    )
    clock.advance(86401)
    assert guard.check(f"{GB_RANGE}0005", challenge_passed=True).allowed, "a day's ceiling"


def test_an_address_earns_room_for_codes_entered_from_it(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """A campus behind one address: past its rate the address is challenged, not refused, and
    each number verified from it earns one more code there, once per number."""
    campus = "198.51.100.7"
    guard = make_guard([IPThrottle("2/hour", per_verified=1.0, challenge=True)], default_region="GB")
    assert [guard.check(f"{GB_RANGE}{i:04d}", ip=campus).allowed for i in range(3)] == [True, True, False]
    assert guard.check(f"{GB_RANGE}0009", ip=campus).kind == "challenge"
    guard.verified(f"{GB_RANGE}0000", ip=campus)
    guard.verified(f"{GB_RANGE}0000", ip=campus)  # the same number: earns once
    guard.verified(f"{GB_RANGE}0001", ip="203.0.113.1")  # entered elsewhere: not this address's
    assert [guard.check(f"{GB_RANGE}{i:04d}", ip=campus).allowed for i in (3, 4)] == [True, False]


def test_a_scope_tells_its_surge_and_conversion_drop_within_the_hour(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """The first refusal by a scope's room is a ``conversion_drop``, by its ceiling a ``surge``,
    each told once an hour, naming the scope (hashed where it is a range) and never a number."""
    seen: list[Event] = []
    caps = [LearnedCap("range", floor=1, ceiling=50), LearnedCap("country", floor=50, ceiling=2)]
    guard = make_guard(caps, default_region="GB", listeners=[seen.append])
    guard.check(f"{GB_RANGE}0001")
    guard.check(f"{GB_RANGE}0002")  # the range's room
    guard.check(f"{GB_RANGE}0003")  # again: told already this hour
    guard.check("+447400130001")
    guard.check("+447400140001")  # the country's ceiling
    told = [(e.kind, e.policy, e.country) for e in seen if e.kind in ("surge", "conversion_drop")]
    assert told == [("conversion_drop", "learned_range", "GB"), ("surge", "learned_country", "GB")]
    details = [e.detail or "" for e in seen if e.kind in ("surge", "conversion_drop")]
    assert details[1] == "learned_country: country GB over its history"
    assert details[0].startswith("learned_range: range ")
    assert "7400" not in details[0], "a range is named by its hash"
    clock.advance(3601)
    guard.check(f"{GB_RANGE}0004")
    assert [e.kind for e in seen if e.kind != "decision"][-1] == "conversion_drop", "an hour on, told again"


def test_a_checked_code_earns_as_verified_does(make_guard: Callable[..., Guard], clock: Clock) -> None:
    """A right code (``check_code``) is the verification: its scope earns room, once per number
    a day (the week's history is named per number and day, in the check's own script too)."""
    cap = LearnedCap("range", floor=1, per_verified=2.0, per_number=5, ceiling=1, history=7.0)
    guard = make_guard([cap], default_region="GB")
    first = f"{GB_RANGE}0001"
    issued = guard.issue_code(first)
    assert issued.code is not None
    assert not guard.check(f"{GB_RANGE}0002").allowed, "the bare ceiling: one a day"
    assert guard.check_code(first, issued.code).ok
    assert guard.check(f"{GB_RANGE}0002").allowed, "the week's one verified number: one more a day"
    assert not guard.check(f"{GB_RANGE}0003").allowed
    clock.advance(86401)  # another day: the same number verified again counts again in the week
    issued = guard.issue_code(first)
    assert issued.code is not None
    assert guard.check_code(first, issued.code).ok
    assert [guard.check(f"{GB_RANGE}{i:04d}").allowed for i in (4, 5, 6)] == [True, True, False]


def test_a_challenge_tier_over_an_hour_frees_within_the_hour(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """With ``window=3600`` the tier is a rate: once it is spent, a solved send waits for the
    oldest solved send of the hour to age out, not for the next day."""
    guard = make_guard([ChallengeCap("country", 2, window=3600)], default_region="GB")
    assert guard.check(f"{GB_RANGE}0001", challenge_passed=True).allowed
    clock.advance(600)
    assert guard.check(f"{GB_RANGE}0002", challenge_passed=True).allowed
    refused = guard.check(f"{GB_RANGE}0003", challenge_passed=True)
    assert (refused.allowed, refused.reason) == (False, "challenge_cap")
    assert refused.retry_after == pytest.approx(3000), "the first solved send ages out"
    clock.advance(3001)
    assert guard.check(f"{GB_RANGE}0003", challenge_passed=True).allowed
    assert not guard.check(f"{GB_RANGE}0004", challenge_passed=True).allowed, "the second is live"


def test_recommended_solved_sends_of_a_country_are_a_rate_per_hour(
    make_guard: Callable[..., Guard], clock: Clock
) -> None:
    """A farm that spends a country's solved sends holds up the real users who solve there for
    less than an hour: ``recommended``'s network and country tiers count over an hour."""
    guard = make_guard(recommended(["GB"]), default_region="GB")
    refused = None
    for r in range(40):  # a solved send in range after range: past the range tier each time
        d = guard.check(f"+447400{r:02d}{r:04d}", content="c", ip=f"203.0.113.{r}", challenge_passed=True)
        if not d.allowed:
            refused = d
            break
    assert refused is not None, "the tier above the challenge holds"
    assert (refused.reason, refused.policy) in {
        ("challenge_cap", "challenges_network"),
        ("challenge_cap", "challenges_country"),
    }
    assert refused.retry_after is not None
    assert refused.retry_after <= 3600
    clock.advance(3601)
    again = guard.check("+447400999999", content="c", ip="203.0.113.99", challenge_passed=True)
    assert again.allowed, "an hour on, a solved send passes"
