"""The 4-policy check on the memory backend, side by side with `limits` in one run.

Workload (issue #2): 100,000 attempts across 50,000 numbers and 5,000 IPs, drawn at random
with a fixed seed; SameContent(30 s), DailyCap(10/day), PhoneRate(1/minute;5/hour),
IPThrottle(20/hour). Then a flood of random numbers: peak memory, and memory once their
windows have passed.

`limits` has no calendar day, no all-or-nothing and no phone numbers, so its side does the
nearest thing: four moving-window limits (10/day as a sliding 24 h), hit in turn and
stopping at the first refusal (its usual pattern, and its cheapest). It runs twice: keyed
on the number as typed (what a `limits` user gets for free, where "138 0013 8000" and
"+8613800138000" are two numbers) and keyed on the number normalized by `phonenumbers` as
smsguard does (the same job).
"""

from __future__ import annotations

import argparse
import gc
import logging
import multiprocessing
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import phonenumbers
from limits import parse, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from smsguard import DailyCap, Guard, IPThrottle, MemoryBackend, PhoneRate, SameContent, recommended
from smsguard.policies import Policy, Suspend
from smsguard.pumping import ContentRules, Countries, SpendCap, UnverifiedCap

Attempt = tuple[str, str, str]  # phone as typed, content, ip


def workload(n: int = 100_000, numbers: int = 50_000, ips: int = 5_000, seed: int = 1) -> list[Attempt]:
    rng = random.Random(seed)
    phones = [f"13{rng.randrange(5, 10)}{rng.randrange(10**8):08d}" for _ in range(numbers)]
    formats = ["{}", "+86 {}", "+86{}", "0086{}"]
    addresses = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(ips)]
    return [
        (
            rng.choice(formats).format(rng.choice(phones)),
            f"Your code is {rng.randrange(10)}",
            rng.choice(addresses),
        )
        for _ in range(n)
    ]


def four_policies() -> list[object]:
    return [
        SameContent(30),
        DailyCap(10, tz="Asia/Shanghai"),
        PhoneRate("1/minute;5/hour"),
        IPThrottle("20/hour"),
    ]


def earlier_pumping_set() -> list[Policy]:
    """``recommended(["CN"], daily_budget=1e6)`` as it was before the scopes learned (issue 22):
    fixed floors per range, network and country that verifications widened, for the row beside
    today's."""
    return [
        Suspend(),
        Countries(allow=["CN"]),
        ContentRules(),
        SameContent(),
        DailyCap(10),
        PhoneRate("1/minute;5/hour"),
        IPThrottle("20/hour"),
        UnverifiedCap("range", "3/hour;6/day", challenge=True),
        UnverifiedCap("network", "10/hour;30/day", challenge=True),
        UnverifiedCap("country", "60/hour;200/day", challenge=True),
        SpendCap(1e6),
    ]


def pumping_check(*, learned: bool) -> Callable[[str, str, str], bool]:
    """The whole pumping defence on the memory backend: today's ``recommended`` set (learned) or
    the earlier one."""
    policies = recommended(["CN"], daily_budget=1e6) if learned else earlier_pumping_set()
    guard = Guard(policies, default_region="CN", secret="bench")
    return lambda phone, content, ip: guard.check(phone, content=content, ip=ip).allowed


def smsguard_check(*, statistics: bool = True, listener: bool = False) -> Callable[[str, str, str], bool]:
    """The guard (statistics on, as by default); with ``listener``, a Prometheus metrics
    listener on its own registry: the issue's "statistics and one listener on" row."""
    listeners = []
    if listener:
        from prometheus_client import CollectorRegistry

        from smsguard.metrics import PrometheusMetrics

        listeners.append(PrometheusMetrics(CollectorRegistry()))
    guard = Guard(
        four_policies(),  # type: ignore[arg-type]
        default_region="CN",
        secret="bench",
        listeners=listeners,
        statistics=statistics,
    )
    return lambda phone, content, ip: guard.check(phone, content=content, ip=ip).allowed


# The four limits in limits' vocabulary, for the peer doing the same job.
SAME, DAILY, RATES, PER_IP = (
    parse("1/30 seconds"),
    parse("10/day"),
    parse_many("1/minute;5/hour"),
    parse("20/hour"),
)


def e164(phone: str) -> str | None:
    """The number in E.164, or None if phonenumbers finds it invalid (what the peer must do too)."""
    number = phonenumbers.parse(phone, "CN")
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def limits_check(
    limiter: MovingWindowRateLimiter | None = None, *, normalize: bool = True
) -> Callable[[str, str, str], bool]:
    """The four limits with ``limits`` (its memory storage unless given a limiter), keyed on the
    validated number, or with ``normalize=False`` on the number as typed."""
    limiter = limiter or MovingWindowRateLimiter(MemoryStorage())

    def check(phone: str, content: str, ip: str) -> bool:
        key = e164(phone) if normalize else phone
        return key is not None and (
            limiter.hit(SAME, "same", key, content)
            and limiter.hit(DAILY, "daily", key)
            and all(limiter.hit(r, "rate", key) for r in RATES)
            and limiter.hit(PER_IP, "ip", ip)
        )

    return check


# The issue-23 workload, for instructions per decision: every attempt a number not seen before
# (typed in one of four formats), same content 1/30 s, 10/day and 5/hour per number, 20/hour per
# IP. Each peer parses the number with phonenumbers (parse, validate, E.164), as smsguard does,
# and stops at its first refusal (no all-or-nothing: its cheapest pattern).
UNSEEN_FORMATS = ("{}", "+86 {}", "+86{}", "0086{}")


def unseen(n: int, ips: int = 1000) -> list[Attempt]:
    """``n`` attempts, each for a number not seen before (spread over the mobile ranges), from
    ``ips`` addresses in turn, with two contents."""
    return [
        (
            UNSEEN_FORMATS[i % 4].format(f"13{5 + i % 5}{(i * 7919) % 10**8:08d}"),
            f"Your code is {i % 2}",
            f"10.{i % ips >> 8}.{i % ips & 255}.7",
        )
        for i in range(n)
    ]


def issue_policies() -> list[object]:
    return [SameContent(30), DailyCap(10, tz="Asia/Shanghai"), PhoneRate("5/hour"), IPThrottle("20/hour")]


def smsguard_unseen(*, recommended: bool = False, listener: bool = False) -> Callable[[str, str, str], bool]:
    """smsguard on memory, statistics on (its default); with ``listener``, an event listener
    (a Prometheus collector); with ``recommended``, the recommended set for an app serving CN."""
    from smsguard import recommended as recommended_set

    listeners = []
    if listener:
        from prometheus_client import CollectorRegistry

        from smsguard.metrics import PrometheusMetrics

        listeners.append(PrometheusMetrics(CollectorRegistry()))
    policies = recommended_set(["CN"], tz="Asia/Shanghai") if recommended else issue_policies()
    guard = Guard(policies, default_region="CN", secret="bench", listeners=listeners)  # type: ignore[arg-type]
    return lambda phone, content, ip: guard.check(phone, content=content, ip=ip).allowed


def limits_unseen() -> Callable[[str, str, str], bool]:
    """`limits`' moving window on its memory storage."""
    return limits_on(MovingWindowRateLimiter(MemoryStorage()))


def limits_on(limiter: MovingWindowRateLimiter) -> Callable[[str, str, str], bool]:
    """The issue's four limits with ``limiter`` (any storage), keyed on the validated number."""
    same, daily, hourly, per_ip = parse("1/30 seconds"), parse("10/day"), parse("5/hour"), parse("20/hour")

    def check(phone: str, content: str, ip: str) -> bool:
        key = e164(phone)
        return key is not None and (
            limiter.hit(same, "same", key, content)
            and limiter.hit(daily, "daily", key)
            and limiter.hit(hourly, "rate", key)
            and limiter.hit(per_ip, "ip", ip)
        )

    return check


def throttled_unseen() -> Callable[[str, str, str], bool]:
    """throttled-py's token bucket on its memory store."""
    from datetime import timedelta

    from throttled import MemoryStore, Throttled, per_day, per_duration, per_hour

    store = MemoryStore()
    same, daily, hourly, per_ip = (
        Throttled(using="token_bucket", quota=quota, store=store)
        for quota in (per_duration(timedelta(seconds=30), 1), per_day(10), per_hour(5), per_hour(20))
    )

    def check(phone: str, content: str, ip: str) -> bool:
        key = e164(phone)
        return key is not None and not (
            same.limit(f"same:{key}:{content}").limited
            or daily.limit(f"daily:{key}").limited
            or hourly.limit(f"rate:{key}").limited
            or per_ip.limit(f"ip:{ip}").limited
        )

    return check


def pyrate_unseen() -> Callable[[str, str, str], bool]:
    """PyrateLimiter's sliding log, a memory bucket per key (its per-key routing: a bucket
    factory), never blocking."""
    from pyrate_limiter import BucketFactory, Duration, InMemoryBucket, Limiter, Rate, RateItem, WallClock

    class PerKey(BucketFactory):
        def __init__(self, rates: list[Rate]) -> None:
            self.rates, self.buckets, self.clock = rates, {}, WallClock()

        def wrap_item(self, name: str, weight: int = 1) -> RateItem:
            return RateItem(name, self.clock.now(), weight=weight)

        def get(self, item: RateItem) -> InMemoryBucket:
            bucket = self.buckets.get(item.name)
            if bucket is None:
                bucket = self.buckets[item.name] = self.create(InMemoryBucket, self.rates)
            return bucket

    same, daily, hourly, per_ip = (
        Limiter(PerKey([rate]))
        for rate in (
            Rate(1, Duration.SECOND * 30),
            Rate(10, Duration.DAY),
            Rate(5, Duration.HOUR),
            Rate(20, Duration.HOUR),
        )
    )

    def check(phone: str, content: str, ip: str) -> bool:
        key = e164(phone)
        return key is not None and bool(
            same.try_acquire(f"same:{key}:{content}", blocking=False)
            and daily.try_acquire(f"daily:{key}", blocking=False)
            and hourly.try_acquire(f"rate:{key}", blocking=False)
            and per_ip.try_acquire(f"ip:{ip}", blocking=False)
        )

    return check


def measure(check: Callable[[str, str, str], bool], attempts: Sequence[Attempt]) -> dict[str, float]:
    latencies = []
    allowed = 0
    gc.collect()
    start = time.perf_counter()
    for phone, content, ip in attempts:
        t = time.perf_counter_ns()
        allowed += check(phone, content, ip)
        latencies.append(time.perf_counter_ns() - t)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "per_s": len(attempts) / elapsed,
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
        "mean_us": statistics.fmean(latencies) / 1000,
        "allowed": allowed,
    }


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process, MiB."""
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def flood(n: int) -> None:
    """Two floods of ``n`` random numbers, a day apart, each attempt from its own IP so that
    all are admitted (the worst case for memory)."""
    now = [1772424000.0]  # 12:00 in Shanghai
    backend = MemoryBackend()
    guard = Guard(four_policies(), backend=backend, clock=lambda: now[0], secret="bench")  # type: ignore[arg-type]
    rng = random.Random(2)
    gc.collect()
    rss_before, _ = rss_mib()
    blocks_before = sys.getallocatedblocks()
    print(f"\nflood: {n:,} random numbers, each from its own IP, all admitted; then a day passes")
    print(f"  before: {blocks_before:,} Python heap blocks, RSS {rss_before:,.0f} MiB")
    for day in (1, 2):
        start = time.perf_counter()
        for i in range(n):
            now[0] += 0.01
            ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            guard.check(f"+8613{rng.randrange(5, 10)}{rng.randrange(10**8):08d}", content="x", ip=ip)
        elapsed = time.perf_counter() - start
        keys, blocks = len(backend), sys.getallocatedblocks()
        _, peak = rss_mib()
        now[0] += 86400  # every window, the calendar day included, is over
        for i in range(2000):  # ordinary traffic resumes: each decision sweeps a bounded slice
            guard.check(f"+86139{i:08d}", content="y", ip="10.9.9.9")
        after_traffic = len(backend)
        swept = backend.sweep(now[0])
        guard.planner._number.cache_clear()  # bounded anyway; cleared to see what the counters hold
        gc.collect()
        rss, _ = rss_mib()
        print(
            f"  flood {day} ({n / elapsed:,.0f}/s): {keys:,} counter keys, {blocks:,} heap blocks at its end"
        )
        print(
            f"    a day later: {after_traffic:,} keys after 2,000 ordinary checks, sweep() dropped {swept:,},"
        )
        left, blocks = len(backend), sys.getallocatedblocks()
        print(f"    {left:,} left, {blocks:,} heap blocks; RSS {rss:,.0f} MiB, peak {peak:,.0f} MiB")


def instruction_cases() -> dict[str, tuple[str, str]]:
    """The unseen-number workload for ``instructions.compare``: each peer, and smsguard with
    phonenumbers alone (the default install) and with the fast extra."""
    slow = "import os; os.environ['SMSGUARD_PARSER'] = 'phonenumbers'\n"  # as if rphonenumbers were absent
    data = "import core; xs = core.unseen(N)\n"
    run = "check(*xs[i])"
    cases = {
        "phonenumbers parse+validate+E.164": (slow + data, "core.e164(xs[i][0])"),
        "limits moving window": (slow + data + "check = core.limits_unseen()", run),
        "throttled-py token bucket": (slow + data + "check = core.throttled_unseen()", run),
        "PyrateLimiter sliding log": (slow + data + "check = core.pyrate_unseen()", run),
        "smsguard": (slow + data + "check = core.smsguard_unseen()", run),
        "smsguard + listener": (slow + data + "check = core.smsguard_unseen(listener=True)", run),
        "smsguard recommended set": (slow + data + "check = core.smsguard_unseen(recommended=True)", run),
    }
    try:
        import rphonenumbers  # noqa: F401
    except ImportError:
        return cases
    cases |= {
        "smsguard, fast": (data + "check = core.smsguard_unseen()", run),
        "smsguard + listener, fast": (data + "check = core.smsguard_unseen(listener=True)", run),
        "smsguard recommended, fast": (data + "check = core.smsguard_unseen(recommended=True)", run),
    }
    return cases


def instructions_table(runs: int) -> None:
    """Cost per decision, unseen numbers, every peer and smsguard side by side."""
    from instructions import available, compare, table

    costs = compare(instruction_cases(), n1=200, n2=1200, runs=runs)
    how = "callgrind, (I(1200) - I(200)) / 1000" if available() else "TIMED (no valgrind)"
    print(f"4 checks, unseen numbers in four formats, memory, statistics on; {how}; {runs} runs")
    print(table(costs, against="throttled-py token bucket", title=""))
    peers = [
        c.median for n, c in costs.items() if n.split()[0] in ("limits", "throttled-py", "PyrateLimiter")
    ]
    for name in ("smsguard", "smsguard, fast"):
        if name in costs:
            print(f"{name}: {costs[name].median / min(peers):.2f}× the cheapest peer")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instructions", type=int, default=3, help="runs of the callgrind table (0: none)")
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--flood", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.getLogger("smsguard").setLevel(logging.ERROR)  # the pumping sets' scope warnings

    if args.instructions:
        instructions_table(args.instructions)
        print()
    attempts = workload(args.attempts)
    makers: dict[str, Callable[[], Callable[[str, str, str], bool]]] = {
        "smsguard, statistics off": lambda: smsguard_check(statistics=False),
        "smsguard (memory)": smsguard_check,
        "smsguard + metrics listener": lambda: smsguard_check(listener=True),
        "limits, keyed as typed": lambda: limits_check(normalize=False),
        "limits + phonenumbers": lambda: limits_check(normalize=True),
        "earlier pumping set": lambda: pumping_check(learned=False),
        "recommended (learned) set": lambda: pumping_check(learned=True),
    }
    # Rounds in turn, each on fresh state, keeping each row's fastest: the first row pays for
    # no warm-up (phonenumbers loads a region's metadata on first use), and a noisy moment on
    # a shared machine hits one round, not one row.
    rows: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, make in makers.items():
            r = measure(make(), attempts)
            if name not in rows or r["per_s"] > rows[name]["per_s"]:
                rows[name] = r
    ours = rows["smsguard (memory)"]["per_s"]
    print(
        f"4-policy check, {len(attempts):,} attempts, 50,000 numbers, 5,000 IPs, one thread, "
        f"best of {args.rounds} rounds"
    )
    print(f"{'':28}{'decisions/s':>12}{'p50 µs':>9}{'p99 µs':>9}{'allowed':>9}{'smsguard ×':>12}")
    for name, r in rows.items():
        print(
            f"{name:28}{r['per_s']:>12,.0f}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}"
            f"{r['allowed']:>9,.0f}{ours / r['per_s']:>12.2f}"
        )
    off, on = rows["smsguard, statistics off"]["per_s"], rows["smsguard + metrics listener"]["per_s"]
    print(f"statistics and one listener on: {on / off:.0%} of off")
    if args.flood:
        # In a fresh process, so that its before and after count only what the flood does.
        child = multiprocessing.get_context("spawn").Process(target=flood, args=(args.flood,))
        child.start()
        child.join()


if __name__ == "__main__":
    main()
