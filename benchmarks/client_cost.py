"""CPU instructions per attempt in the client process: the Redis client path and a flood's
denials, beside `limits` and a bare redis-py EVALSHA (issue 23's targets).

Counted by valgrind's callgrind (``instructions.py``: 200 and 1,200 attempts in two processes,
the difference over 1,000); without valgrind they are timed instead, and the table says so.
A redis-server of its own on loopback; each process keys under its own prefix.

- Redis, unseen numbers: the issue's workload (``core.unseen``), smsguard (the fast extra
  when installed) beside `limits`' moving window on RedisStorage, and a bare EVALSHA of a
  one-command script over redis-py: the floor of any decision that makes a round trip.
- Flood denial: the bombing flood (``redis_bench.bombing``: one victim, attempts from 1,000
  addresses), 100 attempts first, ten a minute apart, so that the victim's hour is full; each
  attempt then measured is a denial. smsguard with its deny cache on Redis and on memory, its
  clock then standing still (within the cache's horizon: a flood pays one round trip per victim
  per horizon on top); `limits` (on the real clock) as it stops at its first refusal.
- Async, 32 tasks at once: the same unseen workload through smsguard's ``acheck`` and `limits`'
  async moving window (redis-py's asyncio client), each call an ``asyncio.gather`` of 32
  decisions on one event loop (10 and 40 calls: 960 decisions apart), shown per decision.

    python benchmarks/client_cost.py [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from instructions import Cost, available, compare, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from servers import RedisServer

_BASE = "import os, redis, core, redis_bench; URL = os.environ['BENCH_REDIS_URL']; P = f'c{os.getpid()}:'\n"
_UNSEEN = _BASE + "xs = core.unseen(N)\n"
_FLOOD = _BASE + "xs = redis_bench.bombing(N + 100); T = [1.7e9]\n"
# 100 attempts first, ten a minute apart: the victim's hour full (5/hour), its same-content
# counters (30 s) long free; then the clock stands still (within the deny cache's horizon).
_WARM = "for k, x in enumerate(xs[:100]):\n    T[0] += 61 * (k % 10 == 9)\n    check(*x)\n"
_RUN = "check(*xs[i])"
_FLOOD_RUN = "check(*xs[100 + i])"

_SMSGUARD = (
    "from smsguard import Guard\nfrom smsguard.backends.redis import RedisBackend\n"
    "def guard(backend, **kw):\n"
    "    g = Guard(core.issue_policies(), backend=backend, default_region='CN', secret='b', **kw)\n"
    "    return lambda p, c, ip: g.check(p, content=c, ip=ip).allowed\n"
)
_LIMITS = (
    "from limits.storage import RedisStorage\nfrom limits.strategies import MovingWindowRateLimiter\n"
    "check = core.limits_on(MovingWindowRateLimiter(RedisStorage(URL, key_prefix=P)))\n"
)
_STILL = "clock=lambda: T[0]"
_INCR = "return redis.call('INCR', KEYS[1])"


def cases() -> dict[str, tuple[str, str]]:
    sg = _UNSEEN + _SMSGUARD
    flood = _FLOOD + _SMSGUARD
    return {
        "bare EVALSHA (one INCR)": (
            _BASE + "r = redis.Redis.from_url(URL)\nsha = r.script_load(" + repr(_INCR) + ")",
            "r.evalsha(sha, 1, P)",
        ),
        "Redis, unseen: smsguard": (sg + "check = guard(RedisBackend.from_url(URL, prefix=P))", _RUN),
        "Redis, unseen: limits": (_UNSEEN + _LIMITS, _RUN),
        "flood denial: smsguard, Redis": (
            flood + f"check = guard(RedisBackend.from_url(URL, prefix=P), {_STILL})\n" + _WARM,
            _FLOOD_RUN,
        ),
        "flood denial: smsguard, memory": (
            flood + f"check = guard(None, deny_cache=True, {_STILL})\n" + _WARM,
            _FLOOD_RUN,
        ),
        "flood denial: limits, Redis": (_FLOOD + _LIMITS + _WARM, _FLOOD_RUN),
    }


# Async, 32 tasks at once: a call is one asyncio.gather of 32 decisions on one event loop.
TASKS = 32
_ASYNC = (
    _BASE
    + f"import asyncio\nxs = core.unseen(N * {TASKS})\nloop = asyncio.new_event_loop()\n"
    + "async def gather(check, part):\n    await asyncio.gather(*(check(*x) for x in part))\n"
    + f"def batch(check, i):\n    loop.run_until_complete(gather(check, xs[{TASKS} * i:{TASKS} * (i + 1)]))\n"
)


def async_cases() -> dict[str, tuple[str, str]]:
    """smsguard's ``acheck`` and `limits`' async moving window (redis-py's asyncio client), the
    issue's four checks on unseen numbers, ``TASKS`` concurrent tasks; costs per call are per
    gather of ``TASKS`` decisions."""
    return {
        f"Redis, unseen, async ×{TASKS}: smsguard": (
            _ASYNC
            + _SMSGUARD
            + "g = Guard(core.issue_policies(), backend=RedisBackend.from_url(URL, prefix=P),"
            " default_region='CN', secret='b')\n"
            "async def check(p, c, ip):\n    return (await g.acheck(p, content=c, ip=ip)).allowed\n",
            "batch(check, i)",
        ),
        f"Redis, unseen, async ×{TASKS}: limits": (
            _ASYNC + "check = redis_bench.limits_async_on(redis_bench.async_limiter(URL, P))\n",
            "batch(check, i)",
        ),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            env = {"BENCH_REDIS_URL": server.url}
            costs = compare(cases(), n1=200, n2=1200, runs=args.runs, env=env)
            # 30 gathers apart: 960 decisions (callgrind runs 32 at a time slowly).
            for name, cost in compare(async_cases(), n1=10, n2=40, runs=args.runs, env=env).items():
                costs[name] = Cost(cost.unit, [value / TASKS for value in cost.values])
        finally:
            server.stop()
    how = "callgrind, (I(1200) - I(200)) / 1000"
    if not available():
        how = "TIMED, valgrind absent: ns, not instructions"
    print(f"client process per attempt, 4 checks, statistics on; {how}; {args.runs} runs")
    print(table(costs, against="bare EVALSHA (one INCR)", title=""))
    ours, peer = costs["flood denial: smsguard, Redis"].median, costs["flood denial: limits, Redis"].median
    print(f"flood denial: {ours / peer:.2f}× limits' (target ≤ 0.10)")
    client, bare = costs["Redis, unseen: smsguard"].median, costs["bare EVALSHA (one INCR)"].median
    print(f"Redis client path: {client / bare:.2f}× a bare EVALSHA (target ≤ 2.5)")
    ours, peer = (costs[f"Redis, unseen, async ×{TASKS}: {who}"].median for who in ("smsguard", "limits"))
    what = "instructions" if available() else "time (timed)"
    print(f"async ×{TASKS}: {ours / peer:.2f}× limits' async {what} (target: its rate ≥ 3×, ≤ 0.33)")


if __name__ == "__main__":
    main()
