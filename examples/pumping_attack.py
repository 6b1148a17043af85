"""Two days of sign-ups with a pumping campaign against them, played through two guards.

Real users in four served countries (GB, FR, DE, LV) ask for a code, most enter it within a
minute or two, some ask again, and a few never do. Meanwhile, from rotating residential proxies
(a fresh IP for every request), a pumping campaign walks sequential number blocks in two served
countries, texts random numbers of one complicit Latvian operator, and probes an unserved
high-cost country (Uzbekistan), 1.1 attempts for each real user; and someone bombs one
victim's phone. Pumped codes are never entered, and the bots solve no CAPTCHA.

The first guard is today's careful set: per-number and per-IP limits and a blacklist of the
calling codes the app does not serve. The second is ``recommended(serve=...)`` with the app
asking for a CAPTCHA when challenged. For each it prints the share of pumped codes delivered,
the real users never served a code, the money spent at list prices, and the bombing victim's
codes per day.

Run it:  python examples/pumping_attack.py  [--users 20000] [--redis redis://localhost:6379/0]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import carrier

from smsguard import (
    Blacklist,
    DailyCap,
    Guard,
    InvalidPhone,
    IPThrottle,
    PhoneRate,
    Policy,
    SameContent,
    recommended,
)
from smsguard.phone import identify
from smsguard.pumping import DEFAULT_PRICES

START = 1772409600.0  # Mon 2026-03-02 00:00 UTC
DAY = 86400.0
SERVED = ["GB", "FR", "DE", "LV"]
# Where real users' numbers come from: a prefix and how many random digits follow it.
MOBILE = {"GB": ("+447", 9), "FR": ("+336", 8), "DE": ("+4915", 9), "LV": ("+3712", 7)}


def numbers(rng: random.Random, country: str, wanted: int, network: str | None = None) -> list[str]:
    """``wanted`` distinct valid mobile numbers of ``country`` (of ``network`` if given)."""
    prefix, digits = MOBILE.get(country, ("+9989", 8))
    found: set[str] = set()
    while len(found) < wanted:
        number = prefix + f"{rng.randrange(10**digits):0{digits}d}"
        if network is not None and operator(number, country) != network:
            continue  # most draws, for a small operator: told apart at a fiftieth of the cost
        try:
            found_number = identify(number, details=True)
        except InvalidPhone:
            continue
        if (
            found_number.region == country
            and found_number.number_type == "mobile"
            and network in (None, found_number.network)
        ):
            found.add(number)
    return sorted(found)


def operator(number: str, country: str) -> str:
    """The operator that phonenumbers' carrier data gives ``number``'s prefix: the network that
    ``details`` reports for it, if it is valid, looked up without parsing or validating it."""
    code = phonenumbers.country_code_for_region(country)
    national = int(number[len(str(code)) + 1 :])
    found: str = carrier.name_for_valid_number(phonenumbers.PhoneNumber(code, national), "en")
    return found


def block(start: str, count: int) -> list[str]:
    """``count`` sequential numbers from ``start``: how pumping walks a range."""
    head, tail = start[:-6], int(start[-6:])
    return [f"{head}{tail + i:06d}" for i in range(count)]


@dataclass(order=True)
class Job:
    at: float
    seq: int
    who: str = field(compare=False)  # "user" or the campaign's name
    phone: str = field(compare=False)
    ip: str = field(compare=False)
    user: int = field(compare=False, default=-1)
    tries: int = field(compare=False, default=0)
    verify: bool = field(compare=False, default=False)


def traffic(rng: random.Random, users: int) -> tuple[list[Job], dict[str, int]]:
    """The two days' first attempts (users, pumping, bombing), and how many of each campaign."""
    seq = itertools.count()
    jobs = []
    people = [n for country in SERVED for n in numbers(rng, country, users // len(SERVED))]
    for i, phone in enumerate(people):
        at = START + rng.random() * 2 * DAY
        jobs.append(
            Job(at, next(seq), "user", phone, f"81.{rng.randrange(256)}.{rng.randrange(256)}.{i % 250}", i)
        )
    tenth = users // 10  # the campaign grows with the app it preys on
    campaigns = {
        "number blocks (GB, FR)": block("+447400100000", 3 * tenth) + block("+33612300000", 3 * tenth),
        "complicit operator (LV)": numbers(rng, "LV", tenth, network="Triatel") * 4,
        "probe (UZ)": numbers(rng, "UZ", tenth),
    }
    for name, targets in campaigns.items():
        for phone in targets:
            proxy = (
                f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            )
            jobs.append(Job(START + rng.random() * 2 * DAY, next(seq), name, phone, proxy))
    victim = numbers(rng, "GB", 1)[0]
    for _ in range(600):
        proxy = f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        jobs.append(Job(START + rng.random() * 2 * DAY, next(seq), "bombing", victim, proxy))
    heapq.heapify(jobs)
    return jobs, {name: len(targets) for name, targets in campaigns.items()}


@dataclass
class Result:
    delivered: Counter[str] = field(default_factory=Counter)
    served: set[int] = field(default_factory=set)
    challenged: set[int] = field(default_factory=set)
    spent: float = 0.0
    victim_per_day: Counter[int] = field(default_factory=Counter)
    decisions: int = 0
    seconds: float = 0.0


class Clock:
    """The simulation's clock, injected into the guard: two days pass in seconds."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def play(guard: Guard, clock: Clock, first: list[Job], rng: random.Random) -> Result:
    """Run the two days' ``first`` attempts (a heap) through ``guard``: real users retry as a
    person would (after a short wait, or at once with a solved CAPTCHA), enter 90% of the codes
    they get, and ask again once for the rest, as ``rng`` draws; bots never verify, never solve a
    challenge, never wait."""
    jobs = list(first)
    result = Result()
    seq = itertools.count(len(jobs))
    started = time.perf_counter()
    while jobs:
        job = heapq.heappop(jobs)
        clock.now = job.at
        if job.verify:
            guard.verified(job.phone)
            continue
        real = job.who == "user"
        solved = real and job.tries > 0  # a person solves the CAPTCHA the app showed
        d = guard.check(job.phone, content="Your code is 123456", ip=job.ip, challenge_passed=solved)
        result.decisions += 1
        if d.allowed:
            result.spent += DEFAULT_PRICES.get(d.country or "", 0.05)
            if real:
                result.served.add(job.user)
                if rng.random() < 0.9:  # entered within a minute or two
                    heapq.heappush(
                        jobs,
                        Job(job.at + rng.uniform(20, 120), next(seq), "user", job.phone, job.ip, verify=True),
                    )
                elif job.tries < 2:  # no code entered: ask again later
                    heapq.heappush(
                        jobs,
                        Job(
                            job.at + rng.uniform(90, 600),
                            next(seq),
                            "user",
                            job.phone,
                            job.ip,
                            job.user,
                            job.tries + 1,
                        ),
                    )
            else:
                result.delivered[job.who] += 1
                if job.who == "bombing":
                    result.victim_per_day[int((job.at - START) // DAY)] += 1
        elif real and job.tries < 4:
            if d.kind == "challenge":
                result.challenged.add(job.user)
            wait = 1.0 if d.kind == "challenge" else (d.retry_after or 60.0)
            if wait <= 3600:  # a person waits a minute, or an hour, not a day
                heapq.heappush(
                    jobs, Job(job.at + wait, next(seq), "user", job.phone, job.ip, job.user, job.tries + 1)
                )
    result.seconds = time.perf_counter() - started
    return result


def todays_policies() -> list[Policy]:
    """The careful use of the per-number and per-IP policies, and a blacklist of every calling
    code the app does not serve (here: Uzbekistan's)."""
    return [
        Blacklist(prefixes=["+998"]),
        SameContent(),
        DailyCap(10),
        PhoneRate("1/minute;5/hour"),
        IPThrottle("20/hour"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis", help="a Redis URL to run on (default: the memory backend)")
    args = parser.parse_args(argv)
    logging.getLogger("smsguard").setLevel(logging.ERROR)  # its surge warnings: what is measured here

    draw = random.Random(args.seed)
    first, campaigns = traffic(draw, args.users)  # drawn once, played through each guard alike
    people = draw.getstate()
    pumped = sum(campaigns.values())
    guards: dict[str, Callable[[], list[Policy]]] = {
        "today's policies": todays_policies,
        "recommended set": lambda: recommended(SERVED, daily_budget=5000.0),
    }
    results = {}
    for name, policies in guards.items():
        clock = Clock()
        backend = None
        if args.redis:
            from smsguard import RedisBackend

            backend = RedisBackend.from_url(args.redis, prefix=f"pumping-demo:{name[:5]}:")
            backend.clear()
        guard = Guard(policies(), backend=backend, clock=clock, secret="demo", default_region="GB")
        rng = random.Random()
        rng.setstate(people)  # each guard meets the same people, who choose alike
        results[name] = play(guard, clock, first, rng)

    print(f"{args.users:,} real users and {pumped:,} pumping attempts over two days")
    print(f"{'':36}" + "".join(f"{name:>20}" for name in results))
    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("pumped codes delivered", lambda r: _share(sum(r.delivered[c] for c in campaigns), pumped)),
        *((f"  {c}", lambda r, c=c: _share(r.delivered[c], campaigns[c])) for c in campaigns),
        ("real users never served a code", lambda r: _share(args.users - len(r.served), args.users, 2)),
        ("real users shown a CAPTCHA", lambda r: _share(len(r.challenged), args.users, 2)),
        ("money spent (list prices)", lambda r: f"${r.spent:,.0f}"),
        ("bombing victim, most codes a day", lambda r: str(max(r.victim_per_day.values(), default=0))),
        ("decisions/s", lambda r: f"{r.decisions / r.seconds:,.0f}"),
    ]
    for label, cell in rows:
        print(f"{label:36}" + "".join(f"{cell(r):>20}" for r in results.values()))


def _share(n: int, total: int, places: int = 1) -> str:
    return f"{n:,} ({100 * n / total:.{places}f}%)" if total else "-"


if __name__ == "__main__":
    main()
