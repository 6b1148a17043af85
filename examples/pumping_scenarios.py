"""Named pumping, bombing and legitimate-surge scenarios, played through two guards.

Each scenario is weeks of real sign-ups and logins in served countries (most real users enter
their code within two minutes; one in ten does not and asks again), some days of history first,
then an attacker of one shape, or a surge of real users that must pass:

- ``low and slow``: two weeks, ~100 number ranges in the served countries, each range hit a few
  times a day, under every fixed floor;
- ``adaptive bot``: reads each refusal's reason and Retry-After and moves to the next range,
  network or country, from residential proxies and fresh IPv6 /64s;
- ``captcha farm``: the same bot, buying a solve for every challenge;
- ``complicit operator 5% / 20% / 50%``: texts the numbers of one small operator, which enters
  that share of the codes (it receives them);
- ``five real SIMs``: five numbers that enter every code they are sent;
- ``attack while learning``: the adaptive bot from the app's first day, inside ``learn_until``;
- ``campus``: 400 students signing up behind one address within two hours;
- ``doubled day``, ``new country``, ``TV ad hour``, ``carrier outage``: legitimate surges (sign-ups
  doubled for a day; a country launched with no history; ten times the traffic for an hour; one
  network's codes lost for three hours, its users asking again);
- ``bombing``: one victim from rotating proxies, ``bombing with solves``, ``bombing 50 victims``.

``--held-out`` plays other scenarios instead, written before the defence's mechanisms were changed
to meet the bars and run only once they were done, on other seeds, sizes and countries: a spread
over 200 ranges, a bot that sees only what a client is told (an opaque refusal, a coarse
Retry-After), waits it out and alternates IPv4 and IPv6, an operator entering 35% of its codes,
a daytime peak of three times the traffic, a CAPTCHA farm in two countries, a bombing of 20
victims, and the patient bot from the app's first day.

``--sealed`` plays a third set, written before the fourth pass's changes and run only once they
were done (seed 2026, 350 users a day, ES NL CZ RO): low and slow over 60 ranges, a spread over 400,
a faster and a slower adaptive bot, a farm in one country, operators entering 10% and 40%, the
patient bot after three weeks of history, a farm from the first day, a tripled day, a campus of 250,
a bombing of 10 victims with solves and one of 100 victims.

For each it prints, per guard (the provider's rules alone, and ``recommended(...)``): the share
of pumped codes delivered, of real users never served a code, of real users shown a challenge,
and the most codes a bombing victim got in a day. ``recommended`` is given a daily budget of three times
a normal day's spend at list prices (``--budget``), above the doubled day it must carry. The bars (issue
22): pumped delivered at most 1% where the attacker enters none of its codes and 5% where it
enters some, never served at most 0.1%, challenged at most 1%, no victim over the daily cap (10).

Run it:  python examples/pumping_scenarios.py [--seed 1] [--users 400] [--only NAME ...]
         [--countries GB FR DE LV] [--budget 2] [--held-out | --sealed]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import phonenumbers

from smsguard import DailyCap, Decision, Guard, InvalidPhone, IPThrottle, PhoneRate, Policy, SameContent
from smsguard.attempt import COARSE, OPAQUE, REFUSED
from smsguard.backends.base import Backend
from smsguard.phone import identify
from smsguard.pumping import DEFAULT_PRICES, Countries, recommended

START = 1772409600.0  # Mon 2026-03-02 00:00 UTC
DAY = 86400.0
HOUR = 3600.0
CAP = 10  # the providers' daily cap per number: no bombing victim above it
AWAY = 12 * HOUR  # a returning user logs in again at most every 12 hours
TUNING = ("GB", "FR", "DE", "LV")
HELD_OUT = ("IT", "PL", "SE", "PT")  # with seed 707 and 300 users a day
SEALED = ("ES", "NL", "CZ", "RO")  # with seed 2026 and 350 users a day


class Phones:
    """Valid mobile numbers of any region, drawn from phonenumbers' own example numbers: a
    number keeps the example's first national digit and draws the rest."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._heads: dict[str, tuple[str, int]] = {}
        self._networks: dict[str, str] = {}

    def _head(self, country: str) -> tuple[str, int]:
        if country not in self._heads:
            example = phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE)
            if example is None:
                raise ValueError(f"phonenumbers has no example mobile number for {country}")
            national = str(example.national_number)
            self._heads[country] = (f"+{example.country_code}{national[:1]}", len(national) - 1)
        return self._heads[country]

    def mobile(self, country: str) -> str:
        head, digits = self._head(country)
        while True:
            number = head + f"{self.rng.randrange(10**digits):0{digits}d}"
            if self.valid(number, country):
                return number

    def in_range(self, prefix: str, country: str) -> str:
        """A valid mobile number of ``country`` starting with ``prefix`` (4 digits drawn)."""
        for _ in range(200):
            number = prefix + f"{self.rng.randrange(10_000):04d}"
            if self.valid(number, country):
                return number
        raise ValueError(f"no valid number under {prefix}")

    def valid(self, number: str, country: str) -> bool:
        try:
            found = identify(number, details=True)
        except InvalidPhone:
            return False
        if found.region == country and found.number_type == "mobile":
            self._networks[number] = found.network or ""
            return True
        return False

    def network(self, number: str) -> str:
        return self._networks[number]


@dataclass(order=True)
class Event:
    at: float
    seq: int
    kind: str = field(compare=False)  # "user", "verify", "attack"
    user: int = field(compare=False, default=-1)
    tries: int = field(compare=False, default=0)
    solved: bool = field(compare=False, default=False)


@dataclass
class User:
    phone: str
    ip: str
    country: str
    measured: bool
    lost: bool = False  # its codes never arrive (a carrier outage)
    back: bool = False  # a returning user: its number verified before


@dataclass
class Result:
    attempts: int = 0
    delivered: int = 0
    users: int = 0
    served: set[int] = field(default_factory=set)
    challenged: set[int] = field(default_factory=set)
    victim_days: Counter[tuple[str, int]] = field(default_factory=Counter)
    decisions: int = 0
    seconds: float = 0.0
    reasons: Counter[str] = field(default_factory=Counter)

    def row(self) -> dict[str, float]:
        users = max(len({*self.served}) and self.users, 1)
        return {
            "pumped": 100 * self.delivered / self.attempts if self.attempts else float("nan"),
            "never": 100 * (self.users - len(self.served)) / users,
            "challenged": 100 * len(self.challenged) / users,
            "victim": float(max(self.victim_days.values(), default=0)),
        }


class Attacker:
    """A campaign: when it attempts, what it targets, and what it does with each answer."""

    enters = 0.0  # the share of its delivered codes it enters
    bombing = False

    def times(self, rng: random.Random) -> Iterator[float]:
        raise NotImplementedError

    def target(self, rng: random.Random) -> tuple[str, str, bool]:
        """(phone, ip, solved a challenge) for its next attempt."""
        raise NotImplementedError

    def told(self, decision: Decision, rng: random.Random) -> None:
        """The answer to its last attempt (a bot reads it)."""

    def idle(self, at: float) -> bool:
        """Whether it skips its attempt due at ``at`` (a bot waiting out a Retry-After)."""
        return False


def seen(decision: Decision) -> tuple[str, float | None]:
    """What a client is told of a refusal (the HTTP adapters' default): an anti-fraud scope's
    reason as ``refused``, its wait rounded up to a coarse step."""
    reason, wait = decision.reason or "", decision.retry_after
    if reason in OPAQUE:
        reason = REFUSED
        wait = None if wait is None else math.ceil(wait / COARSE) * COARSE
    return reason, wait


def proxy(rng: random.Random) -> str:
    """A residential proxy's address, or a fresh IPv6 /64."""
    if rng.random() < 0.5:
        return f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    return f"2a02:{rng.randrange(65536):x}:{rng.randrange(65536):x}:{rng.randrange(65536):x}::1"


def spread(rng: random.Random, start: float, days: float, per_day: float) -> Iterator[float]:
    """Poisson arrivals at ``per_day`` over ``days`` from ``start``."""
    at = start
    while True:
        at += rng.expovariate(per_day / DAY)
        if at >= start + days * DAY:
            return
        yield at


class Ranges(Attacker):
    """Walks number ranges (a range: a number without its last 4 digits), a few hits a day each."""

    def __init__(
        self, phones: Phones, countries: list[str], ranges: int, per_range: float, start: float, days: float
    ):
        self.phones, self.start, self.days = phones, start, days
        self.ranges = []
        for i in range(ranges):
            country = countries[i % len(countries)]
            self.ranges.append((phones.mobile(country)[:-4], country))
        self.per_day = ranges * per_range

    def times(self, rng: random.Random) -> Iterator[float]:
        return spread(rng, self.start, self.days, self.per_day)

    def target(self, rng: random.Random) -> tuple[str, str, bool]:
        prefix, country = rng.choice(self.ranges)
        return self.phones.in_range(prefix, country), proxy(rng), False


class Adaptive(Attacker):
    """A bot that moves on: refused in a range it goes to another; refused again and again in a
    network or country (or told so by the reason), to another network or country. It waits the
    Retry-After when that is short. ``solves``: it buys a CAPTCHA solve for each challenge."""

    def __init__(
        self,
        phones: Phones,
        countries: list[str],
        per_day: float,
        start: float,
        days: float,
        solves: bool = False,
    ):
        self.phones, self.countries, self.per_day, self.start, self.days = (
            phones,
            countries,
            per_day,
            start,
            days,
        )
        self.solves = solves
        self.country = 0
        self.prefix = ""
        self.misses = 0
        self.solving = False
        self._new_range(phones.rng)

    def _new_range(self, rng: random.Random) -> None:
        self.prefix = self.phones.mobile(self.countries[self.country])[:-4]

    def times(self, rng: random.Random) -> Iterator[float]:
        return spread(rng, self.start, self.days, self.per_day)

    def target(self, rng: random.Random) -> tuple[str, str, bool]:
        solved, self.solving = self.solving, False
        return self.phones.in_range(self.prefix, self.countries[self.country]), proxy(rng), solved

    def told(self, decision: Decision, rng: random.Random) -> None:
        if decision.allowed:
            self.misses = 0
            return
        if decision.kind == "challenge" and self.solves:
            self.solving = True
            return
        self.misses += 1
        reason = decision.reason or ""
        if "country" in reason or "budget" in reason or self.misses % 8 == 0:
            self.country = (self.country + 1) % len(self.countries)
        self._new_range(rng)


class Patient(Adaptive):
    """A bot that reads only what a client is told (``seen``): it alternates IPv4 proxies and
    IPv6 /64s, waits out a Retry-After of up to an hour in the same range, else moves to another
    range, and to the next country every fifth refusal."""

    def __init__(self, phones: Phones, countries: list[str], per_day: float, start: float, days: float):
        super().__init__(phones, countries, per_day, start, days)
        self.v6, self.at, self.until = False, start, 0.0

    def idle(self, at: float) -> bool:
        self.at = at
        return at < self.until

    def target(self, rng: random.Random) -> tuple[str, str, bool]:
        self.v6 = not self.v6
        ip = proxy(rng)
        while (":" in ip) != self.v6:
            ip = proxy(rng)
        return self.phones.in_range(self.prefix, self.countries[self.country]), ip, False

    def told(self, decision: Decision, rng: random.Random) -> None:
        if decision.allowed:
            return
        self.misses += 1
        _, wait = seen(decision)
        if wait is not None and wait <= HOUR and self.misses % 2:
            self.until = self.at + wait
            return
        if self.misses % 5 == 0:
            self.country = (self.country + 1) % len(self.countries)
        self._new_range(rng)


class Operator(Attacker):
    """A complicit operator's numbers texted at random; it enters ``enters`` of the codes."""

    def __init__(
        self,
        phones: Phones,
        country: str,
        numbers: int,
        per_day: float,
        start: float,
        days: float,
        enters: float,
    ):
        network = phones.network(phones.mobile(country))
        pool: list[str] = []
        while len(pool) < numbers:
            n = phones.mobile(country)
            if phones.network(n) == network:
                pool.append(n)
        self.pool, self.per_day, self.start, self.days, self.enters = pool, per_day, start, days, enters

    def times(self, rng: random.Random) -> Iterator[float]:
        return spread(rng, self.start, self.days, self.per_day)

    def target(self, rng: random.Random) -> tuple[str, str, bool]:
        return rng.choice(self.pool), proxy(rng), False


class Bomber(Attacker):
    """Floods ``victims`` numbers from rotating proxies (solving challenges if ``solves``)."""

    bombing = True

    def __init__(
        self,
        phones: Phones,
        country: str,
        victims: int,
        per_day: float,
        start: float,
        days: float,
        solves: bool,
    ):
        self.victims = [phones.mobile(country) for _ in range(victims)]
        self.per_day, self.start, self.days, self.solves = per_day, start, days, solves
        self.solving = False

    def times(self, rng: random.Random) -> Iterator[float]:
        return spread(rng, self.start, self.days, self.per_day)

    def target(self, rng: random.Random) -> tuple[str, str, bool]:
        solved, self.solving = self.solving, False
        return rng.choice(self.victims), proxy(rng), solved

    def told(self, decision: Decision, rng: random.Random) -> None:
        self.solving = self.solves and decision.kind == "challenge"


@dataclass
class Scenario:
    """A named pattern: days of history, then ``days`` measured, with an attacker or a surge."""

    name: str
    history: int = 7
    days: int = 3
    attack: Callable[[Phones, list[str], float, float, int], Attacker] | None = None
    surge: str = ""
    enters_some: bool = False  # the attacker enters some of its codes (the 5% bar)
    bombing: bool = False
    size: float = 0.0  # a surge's size: extra days of sign-ups ("doubled"), students ("campus")


def scenarios() -> list[Scenario]:
    def operator(share: float) -> Callable[[Phones, list[str], float, float, int], Attacker]:
        return lambda p, c, t, d, u: Operator(p, c[-1], 2000, 1.1 * u, t, d, share)

    return [
        Scenario("low and slow", days=14, attack=lambda p, c, t, d, u: Ranges(p, c, 100, 3.5, t, d)),
        Scenario("adaptive bot", attack=lambda p, c, t, d, u: Adaptive(p, c, 1.1 * u, t, d)),
        Scenario("captcha farm", attack=lambda p, c, t, d, u: Adaptive(p, c, 1.1 * u, t, d, solves=True)),
        Scenario("complicit operator 5%", attack=operator(0.05), enters_some=True),
        Scenario("complicit operator 20%", attack=operator(0.20), enters_some=True),
        Scenario("complicit operator 50%", attack=operator(0.50), enters_some=True),
        Scenario("five real SIMs", attack=lambda p, c, t, d, u: _sims(p, c[0], u, t, d), enters_some=True),
        Scenario(
            "attack while learning",
            history=0,
            days=7,
            attack=lambda p, c, t, d, u: Adaptive(p, c, 1.1 * u, t, d),
        ),
        Scenario("campus", surge="campus"),
        Scenario("doubled day", surge="doubled"),
        Scenario("new country", surge="new country"),
        Scenario("TV ad hour", surge="tv"),
        Scenario("carrier outage", surge="outage"),
        _bombing("bombing", 0, 1, 600, solves=False),
        _bombing("bombing with solves", 0, 1, 600, solves=True),
        _bombing("bombing 50 victims", 0, 50, 3000, solves=True),
    ]


def held_out() -> list[Scenario]:
    """Scenarios kept out of the tuning: written before the mechanisms that meet the bars, run
    once they were done (``--held-out``; seed 707, 300 users a day, IT PL SE PT)."""
    return [
        Scenario(
            "spread over 200 ranges", days=10, attack=lambda p, c, t, d, u: Ranges(p, c, 200, 1.5, t, d)
        ),
        Scenario("patient v4/v6 bot", attack=lambda p, c, t, d, u: Patient(p, c, 0.8 * u, t, d)),
        Scenario(
            "operator entering 35%",
            attack=lambda p, c, t, d, u: Operator(p, c[1], 800, 0.7 * u, t, d, 0.35),
            enters_some=True,
        ),
        Scenario("daytime peak 3x", surge="peak"),
        Scenario(
            "farm in two countries",
            attack=lambda p, c, t, d, u: Adaptive(p, c[:2], 0.6 * u, t, d, solves=True),
        ),
        _bombing("bombing 20 victims", 1, 20, 1500, solves=False),
        Scenario(
            "patient bot while learning",
            history=0,
            days=5,
            attack=lambda p, c, t, d, u: Patient(p, c, 1.5 * u, t, d),
        ),
    ]


def sealed() -> list[Scenario]:
    """Scenarios written before the changes of the fourth pass (bombings of many victims, the
    farm's solves, the patient bot while learning) and run only once they were done
    (``--sealed``; seed 2026, 350 users a day, ES NL CZ RO): other sizes, budgets, shares and
    speeds of the same patterns, and two legitimate surges."""
    return [
        Scenario("low and slow 60 ranges", days=10, attack=lambda p, c, t, d, u: Ranges(p, c, 60, 5.0, t, d)),
        Scenario("spread over 400 ranges", days=7, attack=lambda p, c, t, d, u: Ranges(p, c, 400, 1.0, t, d)),
        Scenario("fast adaptive bot", attack=lambda p, c, t, d, u: Adaptive(p, c, 2.5 * u, t, d)),
        Scenario("slow adaptive bot", days=5, attack=lambda p, c, t, d, u: Adaptive(p, c, 0.4 * u, t, d)),
        Scenario(
            "farm in one country",
            attack=lambda p, c, t, d, u: Adaptive(p, c[2:3], 0.5 * u, t, d, solves=True),
        ),
        Scenario(
            "operator entering 10%",
            attack=lambda p, c, t, d, u: Operator(p, c[0], 500, 0.5 * u, t, d, 0.10),
            enters_some=True,
        ),
        Scenario(
            "operator entering 40%",
            attack=lambda p, c, t, d, u: Operator(p, c[2], 3000, 1.5 * u, t, d, 0.40),
            enters_some=True,
        ),
        Scenario(
            "patient bot, 3 weeks known", history=21, attack=lambda p, c, t, d, u: Patient(p, c, u, t, d)
        ),
        Scenario(
            "farm while learning",
            history=0,
            days=5,
            attack=lambda p, c, t, d, u: Adaptive(p, c, 0.8 * u, t, d, solves=True),
        ),
        Scenario("tripled day", surge="doubled", size=2.0),
        Scenario("campus of 250", surge="campus", size=250),
        _bombing("bombing 10 victims with solves", 1, 10, 1000, solves=True),
        _bombing("bombing 100 victims", 3, 100, 5000, solves=False),
    ]


def _bombing(name: str, country: int, victims: int, per_day: float, solves: bool) -> Scenario:
    """A bombing of ``victims`` numbers of the ``country``-th country, ``per_day`` attempts."""
    return Scenario(
        name,
        attack=lambda p, c, t, d, u: Bomber(p, c[country], victims, per_day, t, d, solves),
        bombing=True,
    )


def _sims(phones: Phones, country: str, users: int, start: float, days: float) -> Attacker:
    attacker = Operator(phones, country, 5, 800, start, days, 1.0)  # 160 a SIM a day
    attacker.pool = [phones.mobile(country) for _ in range(5)]  # any networks: real SIMs
    return attacker


def provider_rules(countries: list[str]) -> list[Policy]:
    """The providers' own rules, and the served countries only."""
    return [
        Countries(allow=countries, deny_types=()),
        SameContent(),
        DailyCap(CAP),
        PhoneRate("1/minute;5/hour"),
        IPThrottle("20/hour"),
    ]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def play(
    scenario: Scenario,
    policies: Callable[[list[str], int], list[Policy]],
    countries: list[str],
    users_per_day: int,
    seed: int,
    backend: Backend | None = None,
) -> Result:
    """Play ``scenario`` through a guard of ``policies(countries, users_per_day)``."""
    rng = random.Random(seed)
    phones = Phones(random.Random(seed + 1))
    launch = countries[-1] if scenario.surge == "new country" else None
    attack_start = START + scenario.history * DAY
    end = attack_start + scenario.days * DAY
    clock = Clock()
    guard = Guard(policies(countries, users_per_day), clock=clock, secret="demo", backend=backend)

    users: list[User] = []
    known: list[int] = []  # users whose number was verified (each once): they log in again
    came: dict[str, float] = {}  # a number's last arrival: a person logs in again after hours
    seq = itertools.count()
    events: list[Event] = []
    campus_ip = "198.51.100.7"
    outage_network = ""
    outage_from = attack_start + DAY + 10 * HOUR

    def arrivals(per_day: float, first: float, last: float, where: list[str]) -> None:
        for at in spread(rng, first, (last - first) / DAY, per_day):
            events.append(Event(at, next(seq), "user", -2))  # a new or returning user, drawn when it comes
            countries_of[events[-1].seq] = rng.choice(where)

    countries_of: dict[int, str] = {}
    everyday = [c for c in countries if c != launch]
    arrivals(users_per_day, START, end, everyday)
    if launch is not None:
        arrivals(users_per_day / len(countries), attack_start, end, [launch])
    if scenario.surge == "doubled":
        arrivals((scenario.size or 1.0) * users_per_day, attack_start + DAY, attack_start + 2 * DAY, everyday)
    if scenario.surge == "tv":
        arrivals(
            9 * users_per_day / 24 / 0.8,
            attack_start + DAY + 20 * HOUR,
            attack_start + DAY + 21 * HOUR,
            everyday,
        )
    if scenario.surge == "peak":
        for day in range(scenario.days):
            morning = attack_start + day * DAY + 9 * HOUR
            arrivals(2 * users_per_day, morning, morning + 8 * HOUR, everyday)  # 3x from 9 to 17
    if scenario.surge == "campus":
        students = scenario.size or 400
        for at in spread(rng, attack_start + DAY + 9 * HOUR, 2 * HOUR / DAY, students * DAY / (2 * HOUR)):
            events.append(Event(at, next(seq), "user", -3))
            countries_of[events[-1].seq] = countries[0]
    if scenario.surge == "outage":
        outage_network = phones.network(phones.mobile(countries[0]))

    attacker = (
        scenario.attack(phones, countries, attack_start, scenario.days, users_per_day)
        if scenario.attack
        else None
    )
    if attacker is not None:
        for at in attacker.times(rng):
            events.append(Event(at, next(seq), "attack"))
    heapq.heapify(events)

    entered: dict[int, tuple[str, str]] = {}  # an attacker's verification: its number and address
    result = Result()
    started = time.perf_counter()
    while events:
        ev = heapq.heappop(events)
        clock.now = ev.at
        if ev.kind == "verify":
            if ev.user >= 0:
                user = users[ev.user]
                guard.verified(user.phone, ip=user.ip)
                if not user.back:
                    known.append(ev.user)
            else:
                phone, ip = entered.pop(ev.seq)
                guard.verified(phone, ip=ip)
            continue
        if ev.kind == "attack":
            assert attacker is not None
            if attacker.idle(ev.at):
                continue
            phone, ip, solved = attacker.target(rng)
            d = guard.check(phone, content="Your code is 123456", ip=ip, challenge_passed=solved)
            result.decisions += 1
            attacker.told(d, rng)
            if not solved:
                result.attempts += 1  # a retry with a bought solve is the same attempt
            if d.allowed:
                if attacker.bombing:
                    result.victim_days[(phone, int((ev.at - START) // DAY))] += 1
                else:
                    result.delivered += 1
                    if rng.random() < attacker.enters:
                        at = ev.at + rng.uniform(20, 120)
                        e = Event(at, next(seq), "verify", -1)
                        entered[e.seq] = (phone, ip)
                        heapq.heappush(events, e)
            elif d.kind == "challenge" and getattr(attacker, "solves", False):
                heapq.heappush(events, Event(ev.at + rng.uniform(5, 30), next(seq), "attack"))
            continue
        # a real user
        if ev.user < 0:
            country = countries_of.pop(ev.seq)
            measured = ev.at >= attack_start
            if ev.user == -3:
                user = User(phones.mobile(country), campus_ip, country, True)
            elif (
                known and rng.random() < 0.3 and came[(back := users[rng.choice(known)]).phone] < ev.at - AWAY
            ):
                user = User(back.phone, _home(rng), back.country, measured, back=True)
            else:
                user = User(phones.mobile(country), _home(rng), country, measured)
            came[user.phone] = ev.at
            user.lost = (
                scenario.surge == "outage"
                and outage_from <= ev.at < outage_from + 3 * HOUR
                and country == countries[0]
                and phones.network(user.phone) == outage_network
            )
            users.append(user)
            ev.user = len(users) - 1
            if measured:
                result.users += 1
        user = users[ev.user]
        d = guard.check(user.phone, content="Your code is 123456", ip=user.ip, challenge_passed=ev.solved)
        result.decisions += 1
        if not d.allowed:
            result.reasons[f"{d.policy}:{d.reason}"] += user.measured
        if d.allowed:
            if user.measured:
                result.served.add(ev.user)
            lost = user.lost and outage_from <= ev.at < outage_from + 3 * HOUR
            if not lost and rng.random() < 0.9:
                heapq.heappush(events, Event(ev.at + rng.uniform(20, 120), next(seq), "verify", ev.user))
            elif ev.tries < 2:
                heapq.heappush(
                    events, Event(ev.at + rng.uniform(90, 600), next(seq), "user", ev.user, ev.tries + 1)
                )
        elif ev.tries < 5:
            if d.kind == "challenge":
                if user.measured:
                    result.challenged.add(ev.user)
                heapq.heappush(
                    events, Event(ev.at + rng.uniform(5, 30), next(seq), "user", ev.user, ev.tries + 1, True)
                )
            elif (d.retry_after or 60.0) <= HOUR:
                wait = (d.retry_after or 60.0) + rng.uniform(1, 30)
                heapq.heappush(events, Event(ev.at + wait, next(seq), "user", ev.user, ev.tries + 1))
    result.seconds = time.perf_counter() - started
    return result


def _home(rng: random.Random) -> str:
    return f"81.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def budget(countries: list[str], users: int, factor: float = 3.0) -> float:
    """``factor`` times a normal day's spend: ``users`` a day, 1.2 codes each, at list prices."""
    price = sum(DEFAULT_PRICES.get(c, 0.05) for c in countries) / len(countries)
    return factor * users * 1.2 * price


def guards(factor: float = 3.0) -> dict[str, Callable[[list[str], int], list[Policy]]]:
    """The guards compared: the providers' rules, and ``recommended`` with a daily budget of
    ``factor`` times a normal day's spend."""
    return {
        "provider rules": lambda countries, users: provider_rules(countries),
        "recommended": lambda countries, users: recommended(
            countries, daily_budget=budget(countries, users, factor)
        ),
    }


GUARDS = guards()


def bars(scenario: Scenario, row: dict[str, float]) -> bool:
    """Whether ``row`` meets issue 22's bars for ``scenario``."""
    pumped_bar = 5.0 if scenario.enters_some else 1.0
    return (
        (scenario.attack is None or scenario.bombing or row["pumped"] <= pumped_bar)
        and row["never"] <= 0.1
        and row["challenged"] <= 1.0
        and row["victim"] <= CAP
    )


def table(
    seed: int,
    users: int,
    countries: list[str],
    only: list[str] | None = None,
    *,
    factor: float = 3.0,
    played: list[Scenario] | None = None,
) -> list[str]:
    lines = [
        f"{'scenario':32}{'guard':16}{'pumped delivered':>18}{'never served':>14}{'challenged':>12}"
        f"{'victim max/day':>16}  bars"
    ]
    for scenario in scenarios() if played is None else played:
        if only and scenario.name not in only:
            continue
        for name, policies in guards(factor).items():
            row = play(scenario, policies, countries, users, seed).row()
            pumped = "-" if row["pumped"] != row["pumped"] else f"{row['pumped']:.1f}%"
            victim = f"{row['victim']:.0f}" if scenario.bombing else "-"
            lines.append(
                f"{scenario.name if name == 'provider rules' else '':32}{name:16}{pumped:>18}"
                f"{row['never']:>13.2f}%{row['challenged']:>11.2f}%{victim:>16}  "
                f"{'met' if bars(scenario, row) else 'NOT met'}"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--held-out", action="store_true", help="the held-out scenarios, seed and countries")
    parser.add_argument("--sealed", action="store_true", help="the sealed scenarios, seed and countries")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--users", type=int, help="real users a day")
    parser.add_argument("--countries", nargs="+")
    parser.add_argument("--budget", type=float, default=3.0, help="the daily budget, in normal days")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args(argv)
    seed, users, where, played = (
        (2026, 350, SEALED, sealed())
        if args.sealed
        else (707, 300, HELD_OUT, held_out())
        if args.held_out
        else (1, 400, TUNING, scenarios())
    )
    seed = args.seed if args.seed is not None else seed
    users = args.users or users
    countries = args.countries or list(where)
    logging.getLogger("smsguard").setLevel(logging.ERROR)  # its surge warnings: what is measured here
    for line in table(seed, users, countries, args.only, factor=args.budget, played=played):
        print(line, flush=True)


if __name__ == "__main__":
    main()
