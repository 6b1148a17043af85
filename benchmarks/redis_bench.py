"""The 4-policy check on Redis (sync and async), beside `limits`' RedisStorage, in one run.

Starts its own redis-server on a free loopback port. Same workload and the same four limits
as benchmarks/core.py (limits keyed on the normalized number, doing the same job); also
counts the top-level Redis commands each sends per decision, as MONITOR sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis
from core import (
    DAILY,
    PER_IP,
    RATES,
    SAME,
    Attempt,
    e164,
    earlier_pumping_set,
    four_policies,
    limits_check,
    measure,
    workload,
)
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage as AsyncRedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from smsguard import Guard, recommended
from smsguard.backends.redis import RedisBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import RedisCluster, RedisServer, top_level_commands


def limits_sync(url: str) -> Callable[[str, str, str], bool]:
    return limits_check(MovingWindowRateLimiter(RedisStorage(url, key_prefix="bench-limits")))


def async_limiter(url: str, prefix: str = "bench-al") -> AsyncMovingWindow:
    """`limits`' async moving window on redis-py's asyncio client (bound to the event loop it
    first runs in)."""
    storage = AsyncRedisStorage(
        url.replace("redis://", "async+redis://"), key_prefix=prefix, implementation="redispy"
    )
    return AsyncMovingWindow(storage)


def limits_async(url: str) -> Callable[[str, str, str], Awaitable[bool]]:
    """``core.limits_check``'s five limits (the four policies), awaited."""
    return _limits_awaited(async_limiter(url), (SAME, DAILY, *RATES), PER_IP)


def limits_async_on(limiter: AsyncMovingWindow) -> Callable[[str, str, str], Awaitable[bool]]:
    """``core.limits_on``'s limits (issue 23's four), awaited."""
    return _limits_awaited(limiter, tuple(map(parse, ("1/30 seconds", "10/day", "5/hour"))), parse("20/hour"))


def _limits_awaited(
    limiter: AsyncMovingWindow, number: tuple[RateLimitItem, ...], per_ip: RateLimitItem
) -> Callable[[str, str, str], Awaitable[bool]]:
    """A number's limits hit in turn (the first with the content), then the address's, stopping
    at the first refusal; keyed on the validated number."""
    same, *rest = number
    names = ("daily", *("rate",) * (len(rest) - 1))

    async def check(phone: str, content: str, ip: str) -> bool:
        key = e164(phone)
        if key is None or not await limiter.hit(same, "same", key, content):
            return False
        for item, name in zip(rest, names, strict=True):
            if not await limiter.hit(item, name, key):
                return False
        return await limiter.hit(per_ip, "ip", ip)

    return check


def measure_async(
    check: Callable[[str, str, str], Awaitable[bool]], attempts: Sequence[Attempt], concurrency: int
) -> dict[str, float]:
    """Throughput and latency with ``concurrency`` tasks sharing one event loop."""
    latencies: list[int] = []
    allowed = 0

    async def worker(queue: list[Attempt]) -> None:
        nonlocal allowed
        while queue:
            phone, content, ip = queue.pop()
            t = time.perf_counter_ns()
            ok = await check(phone, content, ip)  # not `allowed += await ...`: that reads before awaiting
            latencies.append(time.perf_counter_ns() - t)
            allowed += ok

    async def main() -> float:
        queue = list(reversed(attempts))
        start = time.perf_counter()
        await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    latencies.sort()
    return {
        "per_s": len(attempts) / elapsed,
        "p50_us": latencies[len(latencies) // 2] / 1000,
        "p99_us": latencies[int(len(latencies) * 0.99)] / 1000,
        "allowed": allowed,
    }


def async_rounds(
    server: RedisServer, attempts: Sequence[Attempt], concurrency: int, rounds: int
) -> dict[str, list[dict[str, float]]]:
    """smsguard's ``acheck`` and `limits`' async moving window, ``concurrency`` tasks each,
    ``rounds`` rounds taking turns (a slow spell of the machine lands on both), every run on an
    empty Redis with a new guard (its deny cache would remember the last run's full counters)
    and a new `limits` storage (bound to the event loop it first runs in)."""
    found: dict[str, list[dict[str, float]]] = {}
    client = redis.Redis(port=server.port)
    for _ in range(rounds):
        for name, check in (("smsguard", async_check(server.url)), ("limits", limits_async(server.url))):
            client.flushall()
            found.setdefault(f"{name}, async ×{concurrency}", []).append(
                measure_async(check, attempts, concurrency)
            )
    client.flushall()
    return found


def async_check(url: str) -> Callable[[str, str, str], Awaitable[bool]]:
    """A new guard's ``acheck`` of the four policies on ``url``."""
    backend = RedisBackend.from_url(url, prefix="bench:")
    guard = Guard(four_policies(), backend=backend, default_region="CN", secret="bench")  # type: ignore[arg-type]

    async def check(phone: str, content: str, ip: str) -> bool:
        return (await guard.acheck(phone, content=content, ip=ip)).allowed

    return check


def _middle(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the runs."""
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def print_async(
    found: dict[str, list[dict[str, float]]], concurrency: int, sync_rate: float | None = None
) -> None:
    """The async rows' rates per round, their median [min-max], and smsguard's ratio to `limits`
    round by round (each ratio from one round's two turns)."""
    ours, theirs = (found[f"{name}, async ×{concurrency}"] for name in ("smsguard", "limits"))
    ratios = sorted(o["per_s"] / t["per_s"] for o, t in zip(ours, theirs, strict=True))
    print(f"  async ×{concurrency}, decisions/s over {len(ours)} interleaved rounds, median [min-max]:")
    for name, runs in (("smsguard", ours), ("limits", theirs)):
        rates = sorted(r["per_s"] for r in runs)
        print(f"    {name:10}{statistics.median(rates):>8,.0f} [{rates[0]:,.0f}-{rates[-1]:,.0f}]")
    versus = "" if sync_rate is None else f", {_middle(ours)['per_s'] / sync_rate:.2f}× smsguard's sync"
    print(
        f"    smsguard ÷ limits, round by round: {statistics.median(ratios):.2f}× "
        f"[{ratios[0]:.2f}-{ratios[-1]:.2f}] (target ≥ 3){versus}"
    )


def commands_per_decision(
    port: int, check: Callable[[str, str, str], object], sample: Sequence[Attempt]
) -> float:
    for attempt in sample[:5]:
        check(*attempt)  # warm up: scripts loaded, connections open
    sent = top_level_commands(port, repeat(check, sample[5:]))
    return len(sent) / (len(sample) - 5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-cluster", action="store_true", help="Skip the Redis Cluster rows.")
    parser.add_argument("--numbers", type=int, default=100_000, help="Numbers for the memory figure.")
    parser.add_argument("--flood-only", action="store_true", help="Only the bombing flood rows.")
    parser.add_argument("--async-only", action="store_true", help="Only the async rows.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds of the async rows.")
    args = parser.parse_args(argv)
    logging.getLogger("smsguard").setLevel(logging.ERROR)  # the pumping sets' scope warnings
    attempts = workload(args.attempts, numbers=args.attempts // 2, ips=max(args.attempts // 20, 1))
    if args.flood_only or args.async_only:
        with tempfile.TemporaryDirectory() as tmp:
            server = RedisServer(Path(tmp)).start()
            try:
                if args.flood_only:
                    print_flood(flood_rows(server))
                else:
                    found = async_rounds(server, attempts, args.concurrency, args.rounds)
                    print(f"4-policy check on a local redis-server, {len(attempts):,} attempts, async")
                    print_async(found, args.concurrency)
            finally:
                server.stop()
        return

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            backend = RedisBackend.from_url(server.url, prefix="bench:")
            guard = Guard(four_policies(), backend=backend, default_region="CN", secret="bench")  # type: ignore[arg-type]
            ours = sync_check(guard)

            theirs = limits_sync(server.url)
            rows = {
                "smsguard, sync": measure(ours, attempts),
                "limits, sync": measure(theirs, attempts),
            }
            backend.clear()
            full: Any = recommended(["CN"], daily_budget=1e6)
            defended = Guard(full, backend=backend, default_region="CN", secret="bench")
            pumping = measure(sync_check(defended), attempts)
            backend.clear()
            earlier = Guard(earlier_pumping_set(), backend=backend, default_region="CN", secret="bench")
            earlier_row = measure(sync_check(earlier), attempts)
            backend.clear()
            stats_on, stats_off = on_and_off(server.url, attempts)
            backend.clear()
            concurrent = async_rounds(server, attempts, args.concurrency, args.rounds)
            rows.update({name: _middle(runs) for name, runs in concurrent.items()})
            sample = workload(205, seed=9)
            commands = {
                "smsguard, sync": commands_per_decision(server.port, ours, sample),
                "limits, sync": commands_per_decision(server.port, theirs, sample),
                "recommended set, sync": commands_per_decision(server.port, sync_check(defended), sample),
                "earlier pumping set": commands_per_decision(server.port, sync_check(earlier), sample),
            }
            server_time = server_rows(server, attempts, ours, theirs, sync_check(defended))
            memory = memory_rows(server, args.numbers)
            flood = flood_rows(server)
        finally:
            server.stop()
        cluster = None if args.no_cluster else cluster_rows(Path(tmp), attempts)

    print(f"4-policy check on a local redis-server, {len(attempts):,} attempts")
    header = ["decisions/s", "p50 µs", "p99 µs", "allowed", "smsguard ×", "cmds/decision"]
    print(f"{'':22}" + "".join(f"{h:>{w}}" for h, w in zip(header, [12, 9, 9, 9, 12, 15], strict=True)))
    for name, r in rows.items():
        peer = "smsguard," + name.split(",", 1)[1]
        cmds = commands.get(name)
        print(
            f"{name:22}{r['per_s']:>12,.0f}{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}{r['allowed']:>9,.0f}"
            f"{rows[peer]['per_s'] / r['per_s']:>12.2f}{'' if cmds is None else f'{cmds:.2f}':>15}"
        )

    print_async(concurrent, args.concurrency, rows["smsguard, sync"]["per_s"])
    for name, r in (("earlier pumping set", earlier_row), ("recommended set, sync", pumping)):
        cmds = commands.get(name)
        print(
            f"{name:22}{r['per_s']:>12,.0f}{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}"
            f"{r['allowed']:>9,.0f}{rows['smsguard, sync']['per_s'] / r['per_s']:>12.2f}"
            f"{'' if cmds is None else f'{cmds:.2f}':>15}"
        )
    print("  (the four, with Countries, ContentRules, IPThrottle, three LearnedCaps, three ChallengeCaps")
    print("   and a SpendCap; the earlier set had three UnverifiedCaps: no number is ever verified here,")
    print("   so after the floors the rest are held)")
    trivial = server_time["a trivial script (INCR)"]
    print("\nRedis server time per decision (INFO commandstats, the commands it sent) and the sync")
    print("rate beside a bare EVALSHA of a trivial script over the same connection settings:")
    peer = server_time["limits, 4 limits"]
    print(f"{'':26}{'µs/decision':>12}{'× trivial':>11}{'× limits':>10}{'decisions/s':>13}{'× bare':>8}")
    for name, (usec, rate) in server_time.items():
        print(
            f"{name:26}{usec:>12.1f}{usec / trivial[0]:>11.1f}{usec / peer[0]:>10.2f}"
            f"{rate:>13,.0f}{rate / trivial[1]:>8.2f}"
        )
    print_flood(flood)
    ours_bytes, limits_bytes, learned_bytes = memory
    print(f"\nRedis memory per protected number ({args.numbers:,} numbers, one admitted attempt each):")
    share = ours_bytes / limits_bytes
    print(f"  smsguard {ours_bytes:,.0f} B, limits {limits_bytes:,.0f} B: {share:.2f} of limits'")
    print(f"  the recommended set, each number also verified once: {learned_bytes:,.0f} B")
    print("\nstatistics on, sync, decisions/s, each the faster of two interleaved runs: on / off")
    ratio = stats_on / stats_off
    print(f"  single node (a pipeline a second): {stats_on:,.0f} / {stats_off:,.0f} = {ratio:.0%}")
    if cluster:
        on, off = cluster
        print(f"  3-master Cluster (a pipeline a second): {on:,.0f} / {off:,.0f} = {on / off:.0%}")


def server_rows(
    server: RedisServer,
    attempts: Sequence[Attempt],
    *checks: Callable[[str, str, str], object],
    rounds: int = 3,
) -> dict[str, tuple[float, float]]:
    """(server µs per decision, decisions/s) of a trivial script and of each check, from INFO
    commandstats: the time of the commands a decision sent, as MONITOR names them. (A script's
    time includes the commands it runs, which commandstats also lists on their own: adding
    those too would count them twice.) The best of ``rounds`` interleaved rounds, each on an
    empty Redis: a shared machine only ever adds time."""
    client = redis.Redis(port=server.port)
    sha = client.script_load("return redis.call('INCR', KEYS[1])")
    names = ["a trivial script (INCR)", "smsguard, 4 checks", "limits, 4 limits", "recommended set"]

    def trivial(phone: str, content: str, ip: str) -> object:
        return client.evalsha(sha, 1, "bench:trivial")

    sent = {}
    for name, check in zip(names, (trivial, *checks), strict=True):
        for attempt in attempts[:10]:
            check(*attempt)  # scripts loaded, connections open
        sent[name] = {
            f"cmdstat_{c.lower()}" for c in top_level_commands(server.port, repeat(check, attempts[10:60]))
        }
    found = {name: (math.inf, 0.0) for name in names}
    for _ in range(rounds):
        for name, check in zip(names, (trivial, *checks), strict=True):
            client.flushall()
            client.config_resetstat()
            started = time.perf_counter()
            for attempt in attempts:
                check(*attempt)
            rate = len(attempts) / (time.perf_counter() - started)
            stats = client.info("commandstats").items()
            spent = sum(stat["usec"] for command, stat in stats if command in sent[name])
            found[name] = (min(found[name][0], spent / len(attempts)), max(found[name][1], rate))
    client.flushall()
    return found


def bombing(n: int = 10_000, addresses: int = 1_000) -> list[Attempt]:
    """One victim, ``n`` attempts from ``addresses`` addresses (each a fresh code), the
    issue's bombing flood."""
    ips = [f"10.1.{a >> 8}.{a & 255}" for a in range(addresses)]
    return [("138 0013 8000", f"Your code is {i % 10_000:04d}", ips[i % addresses]) for i in range(n)]


def flood_rows(server: RedisServer, rounds: int = 3) -> dict[str, list[tuple[float, float, int]]]:
    """Per check, per round: (Redis commands per 100 denied attempts, µs per attempt, denied)
    in the bombing flood, each round on an empty Redis. Commands as MONITOR sees them (the
    statistics' writes included)."""
    found: dict[str, list[tuple[float, float, int]]] = {}
    attempts = bombing()
    for _ in range(rounds):
        for name, make in (
            ("smsguard (deny cache)", lambda: sync_check(_flood_guard(server, True))),
            ("smsguard (no cache)", lambda: sync_check(_flood_guard(server, False))),
            ("limits", lambda: limits_sync(server.url)),
        ):
            redis.Redis(port=server.port).flushall()
            check = make()
            allowed: list[bool] = []
            elapsed = [0.0]

            def work(
                check: Callable[[str, str, str], bool] = check,
                allowed: list[bool] = allowed,
                elapsed: list[float] = elapsed,
            ) -> None:
                started = time.perf_counter()
                allowed.extend(check(*a) for a in attempts)
                elapsed[0] = time.perf_counter() - started

            sent = top_level_commands(server.port, work)
            denied = allowed.count(False)
            found.setdefault(name, []).append(
                (100 * len(sent) / max(denied, 1), 1e6 * elapsed[0] / len(attempts), denied)
            )
    return found


def _flood_guard(server: RedisServer, cache: bool) -> Guard:
    backend = RedisBackend.from_url(server.url, prefix="flood:")
    return Guard(four_policies(), backend=backend, default_region="CN", secret="bench", deny_cache=cache)  # type: ignore[arg-type]


def print_flood(found: dict[str, list[tuple[float, float, int]]]) -> None:
    print("\nbombing flood on Redis: one victim, 10,000 attempts from 1,000 addresses, sync,")
    print("three rounds (median [min-max]), MONITOR counting the commands sent (statistics on):")
    print(f"{'':24}{'cmds/100 denied':>24}{'µs/attempt':>24}{'denied':>8}")
    for name, runs in found.items():
        cmds = sorted(r[0] for r in runs)
        usec = sorted(r[1] for r in runs)
        print(f"{name:24}{f'{cmds[1]:.2f} [{cmds[0]:.2f}-{cmds[-1]:.2f}]':>24}"
              f"{f'{usec[1]:.1f} [{usec[0]:.1f}-{usec[-1]:.1f}]':>24}{runs[0][2]:>8,}")  # fmt: skip


def memory_rows(server: RedisServer, numbers: int) -> tuple[float, float, float]:
    """Bytes of Redis memory per protected number (one admitted attempt each, each number from its
    own IP), smsguard's and limits' for the same four limits; and the recommended set's per number
    admitted and verified (its ceilings admit a few hundred of a country's new numbers a day)."""
    client = redis.Redis(port=server.port)
    found = []
    for make in (
        lambda: sync_check(
            Guard(
                four_policies(),
                backend=RedisBackend.from_url(server.url, prefix="m:"),
                default_region="CN",
                secret="m",
                statistics=False,
            )
        ),  # type: ignore[arg-type]
        lambda: limits_sync(server.url),
    ):
        client.flushall()
        check = make()
        check("+8613000000000", "warm-up", "10.255.255.255")
        before = client.info("memory")["used_memory"]
        for i in range(numbers):
            check(f"+86138{i:08d}", "Your code is 1", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        found.append((client.info("memory")["used_memory"] - before) / numbers)
    client.flushall()
    # The recommended set: one admitted code and one verification per number, each number in a
    # range of its own (the costliest case: every scope key is new), none over a floor.
    guard = Guard(
        recommended(["CN"]),
        backend=RedisBackend.from_url(server.url, prefix="m:"),
        default_region="CN",
        secret="m",
        statistics=False,
    )
    guard.check("+8613000000000", content="warm-up", ip="10.255.255.255")
    before = client.info("memory")["used_memory"]
    count = 0
    for i in range(numbers):
        phone = f"+86138{i % 10000:04d}{i // 10000:04d}"  # a new range every number, as far as it goes
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        if guard.check(phone, content="Your code is 1", ip=ip).allowed:
            guard.verified(phone, ip=ip)
            count += 1
    found.append((client.info("memory")["used_memory"] - before) / max(count, 1))
    client.flushall()
    return found[0], found[1], found[2]


def repeat(check: Callable[[str, str, str], object], attempts: Sequence[Attempt]) -> Callable[[], object]:
    return lambda: [check(*a) for a in attempts]


def sync_check(guard: Guard) -> Callable[[str, str, str], bool]:
    return lambda phone, content, ip: guard.check(phone, content=content, ip=ip).allowed


def on_and_off(url: str, attempts: Sequence[Attempt]) -> tuple[float, float]:
    """Sync decisions/s on ``url`` with statistics on and off: the faster of two interleaved runs
    each, every run on fresh keys."""
    best = {True: 0.0, False: 0.0}
    for run in range(4):
        on = run % 2 == 1
        backend = RedisBackend.from_url(url, prefix=f"bench{run}:")
        policies: Any = four_policies()
        guard = Guard(policies, backend=backend, default_region="CN", secret="bench", statistics=on)
        best[on] = max(best[on], measure(sync_check(guard), attempts)["per_s"])
        backend.clear()
    return best[True], best[False]


def cluster_rows(workdir: Path, attempts: Sequence[Attempt]) -> tuple[float, float]:
    """``on_and_off`` on a local 3-master Redis Cluster."""
    cluster = RedisCluster(workdir).start()
    try:
        return on_and_off(cluster.url, attempts)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
