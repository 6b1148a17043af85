"""Defences against SMS pumping: floods of codes to numbers an attacker earns from.

What tells pumped traffic from real users is that pumped codes are never entered. So the guard
learns which codes are entered (``Guard.verified``) and caps the sends to numbers nobody has
verified, per number range, network and country, with room that grows where codes are entered
(``UnverifiedCap``). Around it: where and what may be texted at all (``Countries``), what the
providers refuse to send (``ContentRules``), and an app-wide budget (``SpendCap``).
``recommended(serve=[...])`` builds the whole set.

Every policy here is decided in the decision's single backend step, all or none, like the rest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from smsguard import attempt as codes
from smsguard import events
from smsguard.attempt import Attempt
from smsguard.days import LocalDays
from smsguard.errors import ConfigError
from smsguard.phone import NO_COUNTRY, NUMBER_TYPES, check_region
from smsguard.plan import Counter, key
from smsguard.policies import (
    ATTEMPT,
    JUDGED,
    DailyCap,
    Deny,
    IPThrottle,
    PhoneRate,
    Policy,
    Review,
    SameContent,
    Suspend,
    parse_rates,
    positive,
    seconds,
)
from smsguard.settings import Settings

DENIED_TYPES: Final = frozenset(
    {"premium_rate", "shared_cost", "toll_free", "voip", "pager", "uan", "voicemail", "personal_number"}
)
"""Number types no verification code should go to: they cost more, or earn their owner money, or
reach no person's phone."""


def _regions(regions: Iterable[str]) -> frozenset[str]:
    """ISO regions, checked (``"001"``, non-geographic, is one too)."""
    return frozenset(code if code == NO_COUNTRY else str(check_region(code)) for code in regions)


class Countries:
    """Where codes may go, by the number's ISO region (``"GB"``, and ``"JE"`` for Jersey within
    +44; ``"001"`` for non-geographic numbers), never by calling code; which number types may
    get one; and how many a country may get per calendar day.

    ``allow``: the regions served (None: all); ``deny``: regions refused even so;
    ``deny_types``: number types refused (default ``DENIED_TYPES``: premium rate, shared cost,
    toll free, VoIP, pager, UAN, voicemail, personal numbers); ``caps``: a daily cap per region,
    counted in ``tz``. Reasons ``country_not_allowed``, ``number_type`` and ``country_cap``. In
    shadow (``shadow=True``) it only reports: a country "monitor only".
    """

    reason = codes.COUNTRY_CAP
    counted_by = JUDGED
    steady = True

    def __init__(
        self,
        allow: Iterable[str] | None = None,
        *,
        deny: Iterable[str] = (),
        deny_types: Iterable[str] = DENIED_TYPES,
        caps: Mapping[str, int] | None = None,
        tz: str = "UTC",
        name: str = "countries",
        shadow: bool = False,
    ) -> None:
        self.allow = None if allow is None else _regions(allow)
        self.deny = _regions(deny)
        self.deny_types = frozenset(deny_types)
        unknown = self.deny_types - set(NUMBER_TYPES.values())
        if unknown:
            raise ConfigError(
                f"{name}: unknown number types {sorted(unknown)}; known: {sorted(NUMBER_TYPES.values())}"
            )
        self.caps = {}
        for region, cap in (caps or {}).items():
            positive(f"{name} cap of {region}", cap)
            (code,) = _regions([region])
            self.caps[code] = int(cap)
        self.needs_details = bool(self.deny_types)
        self.name, self.shadow = name, shadow
        self._days = LocalDays(tz)

    def review(self, attempt: Attempt, now: float) -> Review:
        region = attempt.region or NO_COUNTRY
        if region in self.deny or (self.allow is not None and region not in self.allow):
            return Deny(codes.COUNTRY_NOT_ALLOWED)
        if attempt.number_type in self.deny_types:
            return Deny(codes.NUMBER_TYPE)
        cap = self.caps.get(region)
        if cap is None:
            return ()
        _, end, day = self._days(now)
        return (Counter(key(self.name, region, day), cap, end, amount=1),)


class UnverifiedCap:
    """Caps on codes sent to numbers not verified within ``trust`` seconds (default 30 days),
    per scope: ``by="range"`` (the number without its last ``digits`` digits, 4 by default),
    ``"network"`` (the number's operator) or ``"country"``.

    ``floor`` is a rate string (``"3/hour;6/day"``): what a scope gets with no verification at
    all. Each verification in the scope (``Guard.verified``) adds ``per_verified`` to every rate
    of it for that rate's window: a country or network whose users enter their codes earns room,
    one whose codes are never entered stays at its floor. A verified number is not held by it.

    Until ``learn_until`` (epoch seconds, a date or ``"YYYY-MM-DD"``) it only records (in
    shadow), learning what real traffic verifies. With ``challenge=True`` its refusal is of kind
    ``challenge``: a client that passed one (a CAPTCHA) goes on to the remaining policies, so a
    real user caught in a pumped range is served. Reason ``unverified_cap``.
    """

    reason = codes.UNVERIFIED_CAP
    counted_by = ATTEMPT
    BY: Final = ("range", "network", "country")

    def __init__(
        self,
        by: str = "range",
        floor: str = "3/hour;6/day",
        *,
        digits: int = 4,
        per_verified: float = 2.0,
        trust: float = 30 * 86400,
        challenge: bool = False,
        learn_until: float | date | str | None = None,
        name: str | None = None,
        shadow: bool = False,
    ) -> None:
        if by not in self.BY:
            raise ConfigError(f"UnverifiedCap by={by!r}: use one of {self.BY}")
        if not 1 <= digits <= 8:
            raise ConfigError(f"UnverifiedCap digits must be within 1..8, not {digits!r}")
        if per_verified < 0:
            raise ConfigError(f"UnverifiedCap per_verified must not be negative, not {per_verified!r}")
        seconds("trust", trust)
        self.by, self.digits, self.per_verified, self.trust = by, digits, per_verified, trust
        self.name = name or f"unverified_{by}"
        self.kind = codes.CHALLENGE if challenge else codes.LIMIT
        self.shadow = shadow
        self.learn_until = _epoch(learn_until)
        self.needs_details = by == "network"
        self.rates = tuple((item.amount, float(item.get_expiry())) for item in parse_rates(floor))
        self.floor = floor

    def scope(self, attempt: Attempt) -> str:
        """The subject this attempt counts under (hashed where it says anything of the number)."""
        if self.by == "range":
            return attempt.digest(attempt.phone[: -self.digits])
        if self.by == "network":
            return attempt.digest(attempt.network or attempt.phone[:4])
        return attempt.region or NO_COUNTRY

    def review(self, attempt: Attempt, now: float) -> Review:
        scope = self.scope(attempt)
        known = key(self.name, scope, "verified", attempt.phone_id)
        log = key(self.name, scope)  # the scope's hit times, for all its rates
        return tuple(
            Counter(
                key(self.name, scope, f"{amount}/{window:g}"),
                amount,
                now + window,
                unless=known,
                earn=key(self.name, scope, "earned", f"{window:g}"),
                per_earned=self.per_verified,
                window=window,
                log=log,
            )
            for amount, window in self.rates
        )

    def on_verified(self, attempt: Attempt, now: float) -> Sequence[Counter]:
        """What a verification of ``attempt``'s number records: the number known for ``trust``
        seconds, and one earned hit per window in its scope."""
        scope = self.scope(attempt)
        found = [Counter(key(self.name, scope, "verified", attempt.phone_id), 1, now + self.trust)]
        found += (
            Counter(key(self.name, scope, "earned", f"{window:g}"), 1, now + window)
            for _, window in self.rates
        )
        return found


HOUR: Final = 3600.0
DAY: Final = 86400.0
WEEK: Final = 7 * DAY
DAILY_NUMBER: Final = 10
"""The providers' codes a day per number: a number's own count in a scope, which the per-number
rules refuse first."""


def _day(now: float) -> str:
    """The UTC day index of ``now``: a verification earns once per number per day."""
    return str(int(now // DAY))


class LearnedCap:
    """Room for codes in one scope (``by="range"``, ``"network"`` or ``"country"``) that follows
    the scope's own history of codes sent and codes entered (verifications, ``Guard.verified``).

    Every code sent in the scope counts, known numbers' too (in a range or a country, each number
    once a day: its own further codes, up to ``per_number`` a day, pass, for a person asking
    again is one person, and so is a bombing's victim; a network counts every code, for a
    complicit operator pumps its own numbers over and over), and every verification in it earns
    room, once per number per day (a number verified ten times earns once). Over a sliding
    ``window`` (a day; a week for a range) the scope may send ``floor + per_verified *
    (numbers verified)`` codes: room shrinks to ``floor`` while codes go unentered and grows as
    they are entered. A ceiling bounds it whatever the conversion, relative to the scope's own
    history: at most ``ceiling + history * (numbers verified a day, over the last week)`` codes a
    day, so no scope runs far above its normal. Nothing is learned ahead of enforcing: the floor
    and the bare ceiling hold from the first code on (DESIGN.md semantics 19); what is learned
    only widens them, by conversions that were made.

    ``by="range"`` (the number without its last ``digits`` digits) holds a week's memory: a
    range whose codes go unentered stays shut for a week.
    ``by="country"`` with ``fresh`` adds one budget shared by the ranges with no verification in
    the last ``trust`` seconds: at most ``fresh + per_verified * (numbers verified in the
    country that day)`` codes a day go to never-proven ranges, instead of each range having a
    floor of its own.

    With ``challenge=True`` a refusal is of kind ``challenge`` (a CAPTCHA lifts it; see
    ``ChallengeCap`` for the tier above it). Reason ``scope_cap``.
    """

    reason = codes.SCOPE_CAP
    counted_by = ATTEMPT
    BY: Final = ("range", "network", "country")

    def __init__(
        self,
        by: str = "range",
        *,
        floor: int = 1,
        per_verified: float = 1.5,
        ceiling: int = 10,
        history: float = 7.0,
        window: float | None = None,
        digits: int = 4,
        per_number: int = 3,
        fresh: int | None = None,
        trust: float = 30 * DAY,
        challenge: bool = False,
        name: str | None = None,
        shadow: bool = False,
    ) -> None:
        if by not in self.BY:
            raise ConfigError(f"LearnedCap by={by!r}: use one of {self.BY}")
        if not 1 <= digits <= 8:
            raise ConfigError(f"LearnedCap digits must be within 1..8, not {digits!r}")
        for what, value in (("per_verified", per_verified), ("history", history)):
            if value < 0:
                raise ConfigError(f"LearnedCap {what} must not be negative, not {value!r}")
        for what, number in (("floor", floor), ("ceiling", ceiling), ("per_number", per_number)):
            positive(what, number)
        if fresh is not None:
            positive("fresh", fresh)
            if by != "country":
                raise ConfigError(
                    "LearnedCap fresh= is the shared budget of a country: use it with by='country'"
                )
        seconds("trust", trust)
        self.by, self.digits, self.per_verified, self.history = by, digits, per_verified, history
        self.floor, self.ceiling, self.per_number, self.fresh, self.trust = (
            floor,
            ceiling,
            per_number,
            fresh,
            trust,
        )
        self.window = window if window is not None else (WEEK if by == "range" else DAY)
        seconds("window", self.window)
        self.name = name or f"learned_{by}"
        self.kind = codes.CHALLENGE if challenge else codes.LIMIT
        self.shadow = shadow
        self.needs_details = by == "network"

    def scope(self, attempt: Attempt) -> str:
        """The subject this attempt counts under (hashed where it says anything of the number)."""
        if self.by == "range":
            return attempt.digest(attempt.phone[: -self.digits])
        if self.by == "network":
            return attempt.digest(attempt.network or attempt.phone[:4])
        return attempt.region or NO_COUNTRY

    def review(self, attempt: Attempt, now: float) -> Review:
        scope, name, window = self.scope(attempt), self.name, self.window
        log = key(name, scope)
        earned = key(name, scope, "earned", f"{window:g}")
        weeks = key(name, scope, "earned", f"{WEEK:g}")
        unless = None
        found: list[Counter] = []
        if self.by != "network":
            # The number's own codes today: its first counts in the range or country, the rest
            # pass (a person asking again is one person, and so is a bombing's victim). A network
            # counts codes: an operator earns per code, and pumps its own numbers over and over.
            unless = key(name, scope, "number", attempt.phone_id)
            found.append(Counter(unless, self.per_number, now + DAY, window=DAY))
        found.append(
            Counter(
                key(name, scope, "room"),
                self.floor,
                now + window,
                unless=unless,
                earn=earned,
                per_earned=self.per_verified,
                window=window,
                log=log,
            )
        )
        found.append(
            Counter(
                key(name, scope, "ceiling"),
                self.ceiling,
                now + DAY,
                unless=unless,
                earn=weeks,
                per_earned=self.history / 7,
                window=DAY,
                log=log,
            )
        )
        if self.fresh is not None:
            found.append(
                Counter(
                    key(name, scope, "fresh"),
                    self.fresh,
                    now + DAY,
                    unless=key(name, scope, "proven", attempt.digest(attempt.phone[: -self.digits])),
                    earn=key(name, scope, "earned", f"{DAY:g}"),
                    per_earned=self.per_verified,
                    window=DAY,
                )
            )
        return found

    def told(self, counter: Counter) -> tuple[str, str] | None:
        """The event a refusal by ``counter`` (one of this policy's) calls for: (``"surge"`` or
        ``"conversion_drop"``, the scope it names: ``"network 1f2e..."``), or None (a number's
        own codes)."""
        head, _, tail = counter.key.rpartition(":")
        scope = head[head.index("{") + 1 : head.rindex("}")]
        if tail == "ceiling":
            return events.SURGE, f"{self.name}: {self.by} {scope} over its history"
        if tail == "room":
            return events.CONVERSION_DROP, f"{self.name}: {self.by} {scope} codes unentered"
        if tail == "fresh":
            return events.CONVERSION_DROP, f"{self.name}: {self.by} {scope} never-proven ranges spent"
        return None

    def on_verified(self, attempt: Attempt, now: float) -> Sequence[Counter]:
        """What a verification of ``attempt``'s number records in its scope: room earned for the
        window (once per number), the week's history (once per number per day), and for a
        country the number's range proven for ``trust`` seconds."""
        scope, name, window = self.scope(attempt), self.name, self.window
        number, today = attempt.phone_id, f"{attempt.phone_id}:{_day(now)}"
        found = [Counter(key(name, scope, "earned", f"{WEEK:g}"), 1, now + WEEK, member=today)]
        if window != WEEK:
            found.append(Counter(key(name, scope, "earned", f"{window:g}"), 1, now + window, member=number))
        if self.fresh is not None:
            if window != DAY:
                found.append(Counter(key(name, scope, "earned", f"{DAY:g}"), 1, now + DAY, member=number))
            proven = key(name, scope, "proven", attempt.digest(attempt.phone[: -self.digits]))
            found.append(Counter(proven, 1, now + self.trust, member="proven"))
        return found


class ChallengeCap:
    """The tier above the challenge: codes sent because the client passed a challenge (a
    CAPTCHA) are counted per scope, and past a ceiling even a solved challenge is refused.

    Per ``by`` scope (``"range"``, ``"network"``, ``"country"``) and sliding ``window`` (a day
    by default): at most ``limit + per_verified * (numbers verified in the scope that day)``
    solved sends (a CAPTCHA farm sells solves by the thousand; real users solve few, and a scope
    whose users enter their codes earns more). A shorter window makes the tier a rate: a farm
    that spends it holds a real user who solved up for minutes (its Retry-After), not for the
    rest of the day. A number counts once a day in a scope, however often it is solved for (a bombing's
    victim: its own codes are the per-number rules' business). Attempts without a passed
    challenge are not its business. Reason ``challenge_cap``
    (kind ``limit``: a refusal no CAPTCHA lifts).
    """

    reason = codes.CHALLENGE_CAP
    counted_by = ATTEMPT

    def __init__(
        self,
        by: str = "country",
        limit: int = 20,
        *,
        per_verified: float = 0.05,
        window: float = DAY,
        digits: int = 4,
        name: str | None = None,
        shadow: bool = False,
    ) -> None:
        if by not in LearnedCap.BY:
            raise ConfigError(f"ChallengeCap by={by!r}: use one of {LearnedCap.BY}")
        positive("limit", limit)
        if per_verified < 0:
            raise ConfigError(f"ChallengeCap per_verified must not be negative, not {per_verified!r}")
        seconds("window", window)
        self.by, self.limit, self.per_verified, self.digits = by, limit, per_verified, digits
        self.window = window
        self.name = name or f"challenges_{by}"
        self.shadow = shadow
        self.needs_details = by == "network"
        self._scope = LearnedCap(by, digits=digits)

    def review(self, attempt: Attempt, now: float) -> Review:
        if not attempt.challenge_passed:
            return ()
        scope = self._scope.scope(attempt)
        # A number's solved sends count once a day in the scope: a bombing's victim, solved for
        # again and again, is one number (its own codes are the per-number rules' business).
        number = key(self.name, scope, "number", attempt.phone_id)
        return (
            Counter(number, DAILY_NUMBER, now + DAY, window=DAY),
            Counter(
                key(self.name, scope),
                self.limit,
                now + self.window,
                unless=number,
                earn=key(self.name, scope, "earned"),
                per_earned=self.per_verified,
                window=self.window,
            ),
        )

    def on_verified(self, attempt: Attempt, now: float) -> Sequence[Counter]:
        """A verification earns the scope more solved sends, once per number a day."""
        scope = self._scope.scope(attempt)
        return (Counter(key(self.name, scope, "earned"), 1, now + DAY, member=attempt.phone_id),)


DEFAULT_PRICES: Final[Mapping[str, float]] = {
    "US": 0.0083,
    "CA": 0.0083,
    "CN": 0.045,
    "IN": 0.08,
    "GB": 0.04,
    "DE": 0.09,
    "FR": 0.075,
    "BR": 0.05,
    "ID": 0.41,
    "LV": 0.06,
    "AZ": 0.30,
    "UZ": 0.25,
    "KG": 0.30,
    "TJ": 0.35,
    NO_COUNTRY: 0.45,
}
"""USD per SMS: indicative list prices from public price pages in 2026, for a budget's shape, not
for billing. Give your provider's with ``prices=``; others cost ``default_price``."""
UNITS: Final = 10_000
"""Money is counted in ten-thousandths of a dollar (a hundredth of a cent)."""


class SpendCap:
    """An app-wide budget per calendar day (in ``tz``): at most ``daily_messages`` codes and at
    most ``daily_budget`` dollars, each code priced by its country (``prices``, else
    ``default_price``). Past either, every attempt is refused with reason ``budget`` (kind
    unavailable: a 503). When a day's spend first reaches ``alarm`` of the budget (or of the
    messages), the guard emits a ``budget_alarm`` event, once.

    ``BudgetShed`` after it sheds unproven sends in low-conversion countries before the hard
    stop.

    A refund does not give spend back: the count is of codes the guard let through.
    """

    reason = codes.BUDGET
    kind = codes.UNAVAILABLE
    counted_by = ATTEMPT

    def __init__(
        self,
        daily_budget: float | None = None,
        *,
        daily_messages: int | None = None,
        prices: Mapping[str, float] | None = None,
        default_price: float = 0.05,
        alarm: float = 0.8,
        tz: str = "UTC",
        name: str = "spend",
        shadow: bool = False,
    ) -> None:
        if daily_budget is None and daily_messages is None:
            raise ConfigError("SpendCap needs a daily_budget (dollars), daily_messages, or both")
        if daily_budget is not None:
            positive("daily_budget", daily_budget)
        if daily_messages is not None:
            positive("daily_messages", daily_messages)
        if not 0 < alarm <= 1:
            raise ConfigError(f"alarm is a share of the budget, within (0, 1], not {alarm!r}")
        positive("default_price", default_price)
        self.daily_budget, self.daily_messages, self.alarm = daily_budget, daily_messages, alarm
        table = dict(DEFAULT_PRICES if prices is None else prices)
        self.prices = {region: max(round(price * UNITS), 1) for region, price in table.items()}
        self.default_price = max(round(default_price * UNITS), 1)
        self.name, self.shadow = name, shadow
        self._days = LocalDays(tz)

    def price(self, region: str | None) -> int:
        """What a code to ``region`` costs, in ``UNITS`` of a dollar."""
        return self.prices.get(region or NO_COUNTRY, self.default_price)

    def review(self, attempt: Attempt, now: float) -> Review:
        _, end, day = self._days(now)
        found = []
        price = self.price(attempt.region)
        if self.daily_messages is not None:
            found.append(Counter(key(self.name, "all", "messages", day), self.daily_messages, end, amount=1))
        if self.daily_budget is not None:
            budget = round(self.daily_budget * UNITS)
            found.append(Counter(key(self.name, "all", "money", day), budget, end, amount=price))
        return found

    def spent(self, now: float) -> tuple[str, int]:
        """The key and limit of the day's money counter (else of its messages) at ``now``: what
        a ``BudgetShed`` reads."""
        _, _, day = self._days(now)
        if self.daily_budget is not None:
            return key(self.name, "all", "money", day), round(self.daily_budget * UNITS)
        assert self.daily_messages is not None
        return key(self.name, "all", "messages", day), self.daily_messages

    def unit(self, counter: Counter) -> tuple[str, int]:
        """What ``counter`` counts, as ``status`` shows it: (``"$"``, ``UNITS`` to a dollar) for
        the budget, (``""``, 1) for messages."""
        return ("$", UNITS) if ":money:" in counter.key else ("", 1)

    def crossed(self, counter: Counter, before: int) -> str | None:
        """What to say if adding ``counter.amount`` to ``before`` first reached the alarm."""
        threshold = self.alarm * counter.limit
        if not before < threshold <= before + counter.amount:
            return None
        spent = before + counter.amount
        if ":money:" in counter.key:
            return f"{self.name}: ${spent / UNITS:,.2f} of ${counter.limit / UNITS:,.2f} today"
        return f"{self.name}: {spent:,} of {counter.limit:,} messages today"


class BudgetShed:
    """The budget sheds before it stops: from ``share`` of the day's spend of ``spend`` (a
    ``SpendCap`` before it in the guard's policies) on, a code to a number not verified in the
    last ``trust`` seconds is refused in a country whose codes to such numbers that day cost more
    than ``floor`` codes plus ``per_verified`` codes per number verified there that day
    (``Guard.verified``): the countries whose codes go unentered are shed first, while known
    numbers and countries whose users enter their codes are served up to the hard stop. Below
    the line it only counts. With ``challenge=True`` its refusal is of kind ``challenge`` (a
    CAPTCHA lifts it; the ``ChallengeCap``s and the hard stop still hold), else a 503. Reason
    ``budget``."""

    reason = codes.BUDGET
    counted_by = ATTEMPT

    def __init__(
        self,
        spend: SpendCap,
        share: float = 0.5,
        *,
        floor: int = 10,
        per_verified: float = 1.5,
        trust: float = 30 * DAY,
        challenge: bool = False,
        name: str = "budget_shed",
        shadow: bool = False,
    ) -> None:
        if not 0 < share < 1:
            raise ConfigError(f"BudgetShed share is a share of the budget, within (0, 1), not {share!r}")
        if per_verified < 0:
            raise ConfigError(f"BudgetShed per_verified must not be negative, not {per_verified!r}")
        positive("floor", floor)
        positive("trust", trust)
        self.spend, self.share, self.floor, self.per_verified, self.trust = (
            spend,
            share,
            floor,
            per_verified,
            trust,
        )
        self.kind = codes.CHALLENGE if challenge else codes.UNAVAILABLE
        self.name, self.shadow = name, shadow
        self._days = spend._days

    def review(self, attempt: Attempt, now: float) -> Review:
        _, end, day = self._days(now)
        region = attempt.region or NO_COUNTRY
        price = self.spend.price(attempt.region) if self.spend.daily_budget is not None else 1
        line, limit = self.spend.spent(now)
        # The country's codes to unknown numbers today, checked once the day's spend reaches the
        # line. Every key under one hash tag: the spend's.
        return (
            Counter(
                key(self.spend.name, "all", "shed", region, day),
                self.floor * price,
                end,
                amount=price,
                unless=key(self.spend.name, "all", "known", attempt.phone_id),
                earn=key(self.spend.name, "all", "verified", region, day),
                per_earned=self.per_verified * price,
                gate=line,
                gate_at=math.ceil(self.share * limit),
            ),
        )

    def unit(self, counter: Counter) -> tuple[str, int]:
        """What ``counter`` counts, as ``status`` shows it: dollars under a money budget."""
        return ("$", UNITS) if self.spend.daily_budget is not None else ("", 1)

    def on_verified(self, attempt: Attempt, now: float) -> Sequence[Counter]:
        """The number known for ``trust`` seconds, and verified today in its country (once)."""
        _, end, day = self._days(now)
        region = attempt.region or NO_COUNTRY
        return (
            Counter(key(self.spend.name, "all", "known", attempt.phone_id), 1, now + self.trust, member="k"),
            Counter(key(self.spend.name, "all", "verified", region, day), 1, end, member=attempt.phone_id),
        )


_LINK: Final = re.compile(
    r"(?i)(?:[a-z][a-z0-9+.-]*://|www\.)\S+"  # a URL, or www.
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}(?:/\S*)?\b"  # a bare domain: t.cn/x, bit.ly/abc
)


ROUTE: Final = "route"
"""The key in an attempt's ``context`` where an adapter names the route (``"POST /sms/send"``)
it gives as the content when the app names no content field: a label that SameContent counts
by, not a text. ``ContentRules`` reads no content equal to it."""


class ContentRules:
    """What the SMS providers refuse to send, refused before it costs anything: a template
    parameter (``context={"params": [...]}``) or a text (``content=``) that carries a link,
    short links included (reason ``content_link``), and a verification code parameter
    (``context={"code": ...}``) that is not ``code_digits`` digits (reason ``content_code``).
    A content that is the route an adapter counts by (``context["route"]``) is no text: a route
    such as ``/v1/sms/send.json`` would read as a domain. Nothing of the content is stored."""

    reason = codes.CONTENT_LINK
    counted_by = JUDGED

    def __init__(
        self, *, code_digits: tuple[int, int] = (4, 8), name: str = "content", shadow: bool = False
    ) -> None:
        low, high = code_digits
        if not 1 <= low <= high:
            raise ConfigError(f"code_digits must be (fewest, most), not {code_digits!r}")
        self.code_digits, self.name, self.shadow = (low, high), name, shadow

    def review(self, attempt: Attempt, now: float) -> Review:
        params = attempt.context.get("params", ())
        if isinstance(params, str):
            params = (params,)
        texts = [str(p) for p in params]
        content = attempt.content
        if content is not None and content != attempt.context.get(ROUTE):
            texts.append(content)
        if any(_LINK.search(text) for text in texts):
            return Deny(codes.CONTENT_LINK)
        code = attempt.context.get("code")
        if code is not None:
            text = str(code)
            low, high = self.code_digits
            if not (text.isascii() and text.isdigit() and low <= len(text) <= high):
                return Deny(codes.CONTENT_CODE)
        return ()


NUMBER_DAY: Final = "number_day"
"""``recommended``'s own rate per number, which no challenge lifts: 5 codes a day, not the
provider's 10 (a real user needs 1 to 3: past 3 a range or country asks for a challenge)."""
SHED: Final = 0.5
"""The share of the day's budget from which ``recommended``'s budget sheds (``BudgetShed``), and
its alarm."""


def recommended(
    serve: Iterable[str],
    *,
    daily_budget: float | None = None,
    prices: Mapping[str, float] | None = None,
    challenge: bool = True,
    tz: str = "UTC",
    learn_until: float | date | str | None = None,
) -> list[Policy]:
    """The whole defence for an app that serves the regions ``serve``, in order: the switch,
    where and what may be texted, the providers' content and per-number rules, the per-IP rate
    (an address earns room as codes are entered from it), room per range, network and country
    that follows each one's own codes sent and entered (``LearnedCap``, challenging where the
    app can ask for a CAPTCHA), the tier above the challenge (``ChallengeCap``), and the daily
    budget if given, shedding unproven sends in low-conversion countries from half of it on.
    ``learn_until`` is accepted for the earlier sets and changes nothing: the
    floors enforce from the first code on. See the README's pumping section."""
    _epoch(learn_until)  # a bad day is a ConfigError all the same
    policies: list[Policy] = [
        Suspend(),
        Countries(allow=serve, tz=tz),
        ContentRules(),
        SameContent(),
        DailyCap(10, tz=tz),
        PhoneRate("1/minute;5/hour"),
        IPThrottle("20/hour", per_verified=2.0, challenge=challenge),
        PhoneRate("5/day", name=NUMBER_DAY),
        LearnedCap("range", floor=1, per_verified=2.0, ceiling=10, challenge=challenge),
        LearnedCap("network", floor=10, ceiling=100, challenge=challenge),
        LearnedCap("country", floor=30, ceiling=300, fresh=30, challenge=challenge),
        ChallengeCap("range", 1, per_verified=2.0),
        ChallengeCap("network", 5, per_verified=0.02, window=HOUR),
        ChallengeCap("country", 12, per_verified=0.02, window=HOUR),
    ]
    if daily_budget is not None:
        spend = SpendCap(daily_budget, prices=prices, alarm=SHED, tz=tz)
        policies += [spend, BudgetShed(spend, SHED, challenge=challenge)]
    return policies


class Defences(NamedTuple):
    """The pumping defences that flat settings build (``settings_defences``), each in its place
    among the provider rules: ``countries`` after the lists, ``content`` before the rules,
    ``unverified`` after them, ``spend`` and its ``shed`` last."""

    countries: Countries | None
    content: ContentRules | None
    unverified: list[Policy]
    spend: SpendCap | None
    shed: BudgetShed | None = None


def settings_defences(read: Settings, tz: str, shadows: Collection[str]) -> Defences:
    """The pumping defences of flat settings: ``Countries`` from ``COUNTRIES`` (and
    ``COUNTRY_CAPS``), ``SpendCap`` from ``DAILY_BUDGET`` or ``DAILY_MESSAGES`` (``PRICES``,
    ``DEFAULT_PRICE``, ``BUDGET_ALARM``), and with ``RECOMMENDED`` the rest of
    ``recommended(...)`` (its ``ContentRules``, ``LearnedCap``s and ``ChallengeCap``s, taken from it, so that
    settings build what code would; ``Countries`` then allows every region if ``COUNTRIES`` is
    absent, refusing the number types as ever). The keys that only shape another's policy
    (``PRICES``... without ``DAILY_BUDGET`` or ``DAILY_MESSAGES``, ``LEARN_UNTIL`` and
    ``UNVERIFIED_CHALLENGE`` without ``RECOMMENDED``) are a ConfigError when that key is absent:
    they would do nothing (given as 0 or False, the policy is off and they wait)."""
    _needs(read, ("PRICES", "DEFAULT_PRICE", "BUDGET_ALARM"), ("DAILY_BUDGET", "DAILY_MESSAGES"))
    _needs(read, ("LEARN_UNTIL", "UNVERIFIED_CHALLENGE"), ("RECOMMENDED",))
    whole = read.boolean("RECOMMENDED", False)
    serve = read.strings("COUNTRIES") or None
    caps = read.integer_table("COUNTRY_CAPS")
    countries = None
    if serve is not None or caps or whole:
        with read.about("COUNTRIES", "COUNTRY_CAPS"):
            countries = Countries(serve, caps=caps, tz=tz, shadow="countries" in shadows)
    budget = read.number("DAILY_BUDGET", 0) or None
    messages = read.integer("DAILY_MESSAGES", 0) or None
    prices = read.number_table("PRICES")
    spend = None
    if budget is not None or messages is not None:
        with read.about("DAILY_BUDGET", "DAILY_MESSAGES", "PRICES", "DEFAULT_PRICE", "BUDGET_ALARM"):
            spend = SpendCap(
                budget,
                daily_messages=messages,
                prices=prices,
                default_price=read.number("DEFAULT_PRICE", 0.05),
                alarm=read.number("BUDGET_ALARM", SHED if whole else 0.8),
                tz=tz,
                shadow="spend" in shadows,
            )
    if not whole:
        return Defences(countries, None, [], spend)
    with read.about("LEARN_UNTIL", "UNVERIFIED_CHALLENGE"):
        rest = recommended(
            serve or (),
            challenge=read.boolean("UNVERIFIED_CHALLENGE", True),
            tz=tz,
            learn_until=read.optional("LEARN_UNTIL"),
        )
    content = next(p for p in rest if isinstance(p, ContentRules))
    content.shadow = content.name in shadows
    scopes = [
        p
        for p in rest
        if isinstance(p, UnverifiedCap | LearnedCap | ChallengeCap)
        or (isinstance(p, PhoneRate) and p.name == NUMBER_DAY)
    ]
    for cap in scopes:
        cap.shadow = cap.name in shadows
    unverified: list[Policy] = list(scopes)
    shed = None
    if spend is not None:
        shed = BudgetShed(
            spend, SHED, challenge=read.boolean("UNVERIFIED_CHALLENGE", True), shadow="budget_shed" in shadows
        )
    return Defences(countries, content, unverified, spend, shed)


def _needs(read: Settings, names: tuple[str, ...], needs: tuple[str, ...]) -> None:
    """A ConfigError if a key of ``names`` is set and none of ``needs`` is: it would do nothing."""
    given = [n for n in names if n in read]
    if given and not any(n in read for n in needs):
        named = ", ".join(read.key(n) for n in given)
        raise ConfigError(
            f"{named} {'has' if len(given) == 1 else 'have'} no effect without "
            f"{' or '.join(read.key(n) for n in needs)}: set {'one' if len(needs) > 1 else 'it'}, "
            f"or remove {named}"
        )


def _epoch(when: float | date | str | None) -> float | None:
    if when is None or isinstance(when, int | float):
        return when
    if isinstance(when, str):
        try:
            when = date.fromisoformat(when)
        except ValueError:
            raise ConfigError(f"learn_until {when!r} is not a day: use YYYY-MM-DD") from None
    return datetime.combine(when, time(), tzinfo=ZoneInfo("UTC")).timestamp()
