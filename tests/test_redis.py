"""RedisBackend against real redis-server processes that the suite starts itself."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
import subprocess
import sys
import textwrap
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import trustme
from conftest import ANSWER_TIMEOUT, Clock, admitted_by_threads, unique_prefix
from redis.backoff import NoBackoff
from redis.retry import Retry
from servers import (
    RedisCluster,
    RedisServer,
    free_port,
    start_sentinel,
    stop_process,
    top_level_commands,
    wait_until,
)

from smsguard import (
    BackendError,
    BackendUnavailable,
    Blacklist,
    ConfigError,
    DailyCap,
    Decision,
    Guard,
    IPThrottle,
    PhoneRate,
    SameContent,
    Suspend,
    Whitelist,
)
from smsguard.backends.redis import RedisBackend
from smsguard.plan import Counter, Job, Outcome, key

pytestmark = pytest.mark.redis_server

VICTIM = "+8613800138000"
OTHER = "+8613900139000"
FOUR = [SameContent(), DailyCap(10, tz="Asia/Shanghai"), PhoneRate("1/minute;5/hour"), IPThrottle("20/hour")]


def redis_backend_url(backend: RedisBackend) -> str:
    client = backend._sync_client()
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


def guard_on(backend: RedisBackend, clock: Clock, policies: Any = FOUR, **settings: Any) -> Guard:
    return Guard(policies, backend=backend, clock=clock, secret="s", default_region="CN", **settings)


def test_one_command_per_decision(redis_server: RedisServer, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    # Every decision sent (no local deny cache: tests/test_denials.py has its own count).
    guard = guard_on(backend, clock, [Whitelist(shared=True), *FOUR], deny_cache=False)
    guard.check(VICTIM, content="warm-up", ip="203.0.113.1")  # loads the script once

    def work() -> None:
        for i in range(50):
            guard.check(f"+86138001380{i:02d}", content="x", ip=f"203.0.113.{i}")
        asyncio.run(guard.acheck(VICTIM, content="y", ip="203.0.113.9"))

    commands = top_level_commands(redis_server.port, work)
    assert commands == ["EVALSHA"] * 51


def test_one_command_per_decision_with_the_recommended_set(redis_server: RedisServer, clock: Clock) -> None:
    from smsguard import recommended

    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    guard = guard_on(backend, clock, recommended(["CN"], daily_budget=100.0), deny_cache=False)
    guard.check(VICTIM, content="warm-up", ip="203.0.113.1")
    decisions: list[bool] = []

    def work() -> None:
        for i in range(30):
            decisions.append(guard.check(f"+86138001380{i:02d}", content="x", ip=f"203.0.113.{i}").allowed)

    commands = top_level_commands(redis_server.port, work)
    assert commands == ["EVALSHA"] * 30, "every policy, and the statistics, in the one script"
    assert decisions.count(False) > 0, "the range cap (3 an hour) held the block"
    verified = top_level_commands(redis_server.port, lambda: guard.verified(VICTIM))
    # One pipeline (one round trip): the number's marks and earnings (their expired marks
    # dropped), and the statistics (a script, which adds them once however often it is sent).
    assert set(verified) == {"ZREMRANGEBYSCORE", "ZADD", "PEXPIRE", "EVAL"}, verified


def test_script_reloaded_after_flush(
    redis_backend: RedisBackend, redis_server: RedisServer, clock: Clock
) -> None:
    guard = guard_on(redis_backend, clock, [DailyCap(2)])
    assert guard.check(VICTIM).allowed
    redis.Redis(port=redis_server.port).script_flush()
    assert guard.check(VICTIM).allowed
    assert guard.check(VICTIM).reason == "daily_cap"


def test_nothing_plain_in_redis_and_every_counter_expires(
    redis_backend: RedisBackend, redis_server: RedisServer, clock: Clock
) -> None:
    guard = guard_on(redis_backend, clock, [Whitelist(shared=True), *FOUR])
    guard.check("138 0013 8000", content="Your code is 4821", ip="203.0.113.77")
    guard.add_number("whitelist", "+8613900139000")
    client = redis.Redis(port=redis_server.port)
    keys = list(client.scan_iter(match=redis_backend.prefix + "*"))
    # the number's log (same content, daily cap, both phone rates), the IP's log (ip_throttle),
    # the whitelist entry, this hour's statistics and the mark of their write (kept a minute),
    # the app's fingerprint (for the smsguard command)
    assert len(keys) == 6
    dump = b" ".join(keys)
    for stored in keys:
        kind = client.type(stored)
        if kind == b"zset":
            members = client.zrange(stored, 0, -1, withscores=True)
            dump += b" ".join(m + repr(s).encode() for m, s in members)
            ttl = client.pttl(stored)
            assert 0 < ttl <= 86400 * 1000 + 1000, f"{stored!r} has no bounded TTL"
        elif kind == b"hash":
            dump += b" ".join(b"%s=%s" % item for item in client.hgetall(stored).items())
            assert 0 < client.pttl(stored) <= (36 * 86400) * 1000, "statistics are kept 35 days"
        else:
            dump += client.get(stored) or b""
    for secret in [b"13800138000", b"13900139000", b"4821", b"Your code", b"203.0.113.77"]:
        assert secret not in dump


def test_ttl_follows_the_window(redis_backend: RedisBackend, redis_server: RedisServer, clock: Clock) -> None:
    guard = guard_on(redis_backend, clock, [SameContent(30)])
    guard.check(VICTIM, content="x")
    client = redis.Redis(port=redis_server.port)
    (key,) = client.scan_iter(match=redis_backend.prefix + "sent:*")
    assert 30_000 < client.pttl(key) <= 31_000


def test_a_number_is_one_log_that_stays_as_small_as_its_windows(
    redis_backend: RedisBackend, redis_server: RedisServer, clock: Clock
) -> None:
    """The number's same-content, daily and rate windows all count from one sorted set of hit
    times, and the hits no window counts any more are dropped as new ones come: over 30 days
    of a number texted hourly, the log never holds more than the day's hits."""
    guard = guard_on(
        redis_backend, clock, [SameContent(), DailyCap(30, tz="Asia/Shanghai"), PhoneRate("1/hour")]
    )
    client = redis.Redis(port=redis_server.port)
    log = redis_backend.prefix + key("sent", guard.identify(VICTIM)[1])
    sizes = []
    for hour in range(30 * 24):
        assert guard.check(VICTIM, content=f"code {hour}").allowed, hour
        assert guard.check(VICTIM, content="again").reason == "phone_rate"
        sizes.append(client.zcard(log))
        clock.advance(3600)
    counters = [
        k for k in client.keys(redis_backend.prefix + "*") if b":stats:" not in k and b":fingerprint" not in k
    ]
    assert counters == [log.encode()], "one key per number"
    assert max(sizes) <= 24 + 4, "a day's hits, and a few due to go"
    assert min(sizes[48:]) >= 1


def test_hit_times_are_kept_to_the_bit() -> None:
    """A hit's score is an integer that gives its time back exactly, and a sliding window's
    first counted time is the one the memory backend's own test draws."""
    from hypothesis import given
    from hypothesis import strategies as st

    from smsguard.backends.wire import _EPOCH, _TICKS, _first_counted, _score

    @given(st.floats(2.0**30, 2.0**31 - 1), st.sampled_from([0.001, 1.0, 30.0, 60.0, 3600.0, 86400.0, 0.1]))
    def check(t: float, window: float) -> None:
        score = _score(t)
        assert "." not in score, "an integer: Redis keeps it without text"
        assert int(score) / _TICKS + _EPOCH == t
        first = _first_counted(t + window, window)
        assert first + window > t + window
        assert not (math.nextafter(first, -math.inf) + window > t + window)

    check()


def test_a_clock_far_from_today_still_counts(redis_backend: RedisBackend, clock: Clock) -> None:
    """Scores are exact from 1995 to 2072; a test's clock at 1,000 s still gets its windows and
    retry-after right, to within rounding (a quarter of a microsecond there)."""
    clock.now = 1000.25
    guard = guard_on(redis_backend, clock, [PhoneRate("1/minute;2/hour")])
    assert guard.check(VICTIM).allowed
    clock.advance(10)
    denied = guard.check(VICTIM)
    assert denied.reason == "phone_rate"
    assert denied.retry_after == pytest.approx(50, abs=1e-6)
    clock.advance(50.001)
    assert guard.check(VICTIM).allowed
    clock.advance(60.001)
    assert guard.check(VICTIM).retry_after == pytest.approx(3600 - 120.002, abs=1e-6), "two in the hour"

    # Where rounding merges two times, it errs towards counting: never two within a minute.
    guard = guard_on(redis_backend, clock, [PhoneRate("1/minute", name="minute")])
    admitted = []
    for step in [59.999999, 0.000001, 0.0000002, 60.0, 59.9999999, 0.0000001] * 20:
        clock.advance(step)
        if guard.check(OTHER).allowed:
            admitted.append(clock.now)
    assert len(admitted) > 10
    assert all(later - earlier >= 60 for earlier, later in itertools.pairwise(admitted))


def test_async_connections_pack_with_hiredis_to_the_same_bytes(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url)

    async def main() -> None:
        pool = backend._loop_client().connection_pool
        ours, theirs = pool.connection_class(**pool.connection_kwargs), redis.asyncio.Connection()
        assert type(ours).pack_command is not redis.asyncio.Connection.pack_command
        for command in [
            ("EVALSHA", "f" * 40, 2, b"k", "{x}:y", 1.5, -3, ""),
            ("CONFIG GET", "maxmemory-policy"),
            ("SET", "k", memoryview(b"v")),
            ("SET", "k", bytearray(b"v")),
            ("ZADD", "z", "692000000000000", "tok-1f"),
        ]:
            assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))
        with pytest.raises(redis.exceptions.DataError):
            ours.pack_command("SET", "k", True)  # as redis-py answers it
        assert await backend.arun(Job(1772409600.0, "t", (), ())) == Outcome(-1, (), (), ())

    asyncio.run(main())


def test_counters_on_one_log_must_agree_on_its_tag(redis_backend: RedisBackend) -> None:
    from smsguard.plan import Counter, Job

    counters = (
        Counter("a:{s}:1", 1, 130.0, window=30.0, log="a:{s}", match="x"),
        Counter("a:{s}:2", 1, 130.0, window=30.0, log="a:{s}", match="y"),
    )
    with pytest.raises(BackendError, match="two tags"):
        redis_backend.run(Job(100.0, "t", (), counters))


def test_a_script_argument_with_a_line_break_is_refused(redis_backend: RedisBackend) -> None:
    """The script's arguments travel as one, a line each: a tag that holds a line break would
    shift every field after it, so it is refused, never sent."""
    counter = Counter("a:{s}:1", 1, 130.0, window=30.0, log="a:{s}", match="x\ny")
    with pytest.raises(BackendError, match="line break"):
        redis_backend.run(Job(100.0, "t", (), (counter,)))


WORKER = textwrap.dedent(
    """
    import sys, threading
    from smsguard import DailyCap, Guard
    from smsguard.backends.redis import RedisBackend
    url, prefix, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    backend = RedisBackend.from_url(url, prefix=prefix, timeout=timeout)
    guard = Guard([DailyCap(10)], backend=backend, secret="shared")
    admitted = []
    start = threading.Barrier(8)
    def hammer():
        start.wait()
        for _ in range(20):
            if guard.check("+8613800138000").allowed:
                admitted.append(1)
    threads = [threading.Thread(target=hammer) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(len(admitted))
    """
)


@pytest.mark.parametrize("target", ["redis_server", "redis_cluster"])
def test_processes_and_threads_admit_exactly_the_cap(request: pytest.FixtureRequest, target: str) -> None:
    url = request.getfixturevalue(target).url
    prefix = unique_prefix()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, prefix, str(ANSWER_TIMEOUT)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    counts = [int(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sum(counts) == 10, f"4 processes x 8 threads admitted {counts}"


def test_decisions_hold_one_connection(
    redis_server: RedisServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision takes the connection the last one left, not one from the pool; decisions at
    once (threads) borrow from the pool and give back, the pool never drained."""
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix(), max_connections=3)
    guard = guard_on(backend, clock, [DailyCap(10)])
    assert guard.check(OTHER).allowed  # the script loaded, the first connection taken
    pool = backend._sync_client().connection_pool
    taken: list[Any] = []
    get_connection = pool.get_connection
    monkeypatch.setattr(pool, "get_connection", lambda: taken.append(1) or get_connection())
    assert [guard.check(f"+86137001370{i:02d}").allowed for i in range(20)] == [True] * 20
    assert taken == [], "one connection, held from one decision to the next"

    def hammer(thread: int) -> int:
        return sum(guard.check(VICTIM).allowed for _ in range(20))

    with ThreadPoolExecutor(8) as threads:
        assert sum(threads.map(hammer, range(8))) == 10, "exact with connections taken at once"
    assert len(pool._connections) <= 3
    assert guard.check(OTHER).remaining == {"daily_cap": 8}


FORKED = textwrap.dedent(
    """
    import os, sys
    from smsguard import DailyCap, Guard
    from smsguard.backends.redis import RedisBackend
    backend = RedisBackend.from_url(sys.argv[1], prefix=sys.argv[2])
    guard = Guard([DailyCap(1)], backend=backend, secret="s", default_region="CN", fail_mode="closed")
    assert guard.check("+8613800138000").allowed  # the connection held from here
    pid = os.fork()
    if pid == 0:  # fresh numbers: each allowed
        allowed = [guard.check(f"+86139{i:08d}").allowed for i in range(300)]
        os._exit(0 if all(allowed) else 1)
    allowed = [guard.check("+8613800138000").allowed for _ in range(300)]  # full: each denied
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), sum(allowed), guard.check("+8613700137000").allowed)
    """
)


def test_a_forked_worker_never_shares_its_parents_connection(redis_server: RedisServer) -> None:
    """A guard used before a fork (a pre-forking server's app): parent and child decide at once,
    each on a connection of its own, every reply read by the process that asked."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED, redis_server.url, unique_prefix()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["0", "0", "True"], done.stderr


def test_cluster_spanning_slots_never_over_admits(redis_cluster: RedisCluster, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_cluster.url, prefix=unique_prefix(), timeout=ANSWER_TIMEOUT)
    assert backend.cluster
    # The number's counters and the IP's live in different slots: the IP limit (5) binds
    # first, and each denial there must give back the number's reservation.
    guard = guard_on(backend, clock, [DailyCap(10), IPThrottle("5/hour")])
    admitted = admitted_by_threads(lambda: guard.check(VICTIM, ip="203.0.113.5"), threads=8, each=10)
    assert len(admitted) == 5
    # Rolled-back reservations are gone: the number holds exactly the 5 admitted hits.
    assert guard.check(VICTIM, ip="203.0.113.6").remaining == {"daily_cap": 4, "ip_throttle": 4}


def test_cluster_concurrent_acheck(redis_cluster: RedisCluster, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_cluster.url, prefix=unique_prefix(), timeout=ANSWER_TIMEOUT)
    guard = guard_on(backend, clock, [DailyCap(10)])

    async def flood() -> list[Decision]:
        return await asyncio.gather(*(guard.acheck(VICTIM) for _ in range(300)))

    decisions = asyncio.run(flood())
    assert not any(d.degraded for d in decisions), "Redis decided every one"
    assert sum(d.allowed for d in decisions) == 10


@pytest.mark.parametrize("built", ["from_url", "client"])
def test_cluster_burst_past_the_pool_queues_and_stays_exact(
    redis_cluster: RedisCluster, clock: Clock, built: str
) -> None:
    """redis.asyncio's Cluster nodes raise MaxConnectionsError past ``max_connections`` rather
    than wait for a connection. A burst of more decisions than that queues for one: it never
    meets the fail mode, which under ``local`` (the default) would count the surplus in process
    from nothing and admit over the cap."""

    async def flood() -> list[Decision]:
        if built == "from_url":
            backend = RedisBackend.from_url(
                redis_cluster.url, prefix=unique_prefix(), max_connections=4, timeout=ANSWER_TIMEOUT
            )
            aclient = backend._loop_client()
        else:
            nodes = [redis.asyncio.cluster.ClusterNode("127.0.0.1", n.port) for n in redis_cluster.nodes]
            aclient = redis.asyncio.cluster.RedisCluster(startup_nodes=nodes, max_connections=4)
            backend = RedisBackend(aclient=aclient, prefix=unique_prefix())
        guard = guard_on(backend, clock, [DailyCap(10)])
        try:
            return await asyncio.gather(*(guard.acheck(VICTIM) for _ in range(100)))
        finally:
            await aclient.aclose()

    decisions = asyncio.run(flood())
    assert [d.reason for d in decisions if d.degraded] == [], "Redis decided every one"
    assert sum(d.allowed for d in decisions) == 10


def test_concurrent_acheck_share_round_trips_and_stay_exact(redis_server: RedisServer, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    guard = guard_on(backend, clock, [DailyCap(10), IPThrottle("25/hour")])
    batches: list[int] = []
    send = backend._aevals

    async def counted(client: Any, calls: list[Any]) -> list[Any]:
        batches.append(len(calls))
        return await send(client, calls)

    backend._aevals = counted  # type: ignore[method-assign]

    async def alone() -> Decision:
        return await guard.acheck(VICTIM, ip="203.0.113.1")

    assert asyncio.run(alone()).allowed
    assert batches == [], "a decision with nothing on the wire goes at once, alone"

    async def flood() -> list[Decision]:
        numbers = [VICTIM] * 100 + [f"+86138001380{i:02d}" for i in range(100)]
        return await asyncio.gather(*(guard.acheck(n, ip="203.0.113.2") for n in numbers))

    decisions = asyncio.run(flood())
    assert len(batches) < 20, "200 decisions in far fewer round trips"
    assert max(batches) > 10
    assert sum(batches) == len(decisions) - 1, "all but the first went in batches"
    assert sum(d.allowed for d in decisions) == 25, "each script still all-or-nothing: the IP's 25"
    assert guard.status(VICTIM)[0].used == sum(d.allowed for d in decisions[:100]) + 1


@pytest.mark.parametrize("tasks", [8, 32, 100])
def test_concurrent_acheck_go_in_two_round_trips_of_halves(
    redis_server: RedisServer, clock: Clock, tasks: int
) -> None:
    """Tasks deciding one after another: two round trips on the wire at once, never more, each
    at most half of the decisions under way, so the app plans one half while Redis runs the
    other; and every limit still exact."""
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    guard = guard_on(backend, clock, [PhoneRate("2/hour"), IPThrottle("30/hour")])
    batches: list[int] = []
    alone: list[int] = []  # at each decision sent alone: the round trips already on the wire
    flying, most = 0, 0
    one, send = backend._aeval, backend._aevals

    async def on_the_wire(call: Awaitable[Any]) -> Any:
        nonlocal flying, most
        flying += 1
        most = max(most, flying)
        try:
            return await call
        finally:
            flying -= 1

    async def counted_one(client: Any, keys: list[Any], args: list[Any]) -> Any:
        alone.append(flying)
        return await on_the_wire(one(client, keys, args))

    async def counted(client: Any, calls: list[Any]) -> list[Any]:
        batches.append(len(calls))
        return await on_the_wire(send(client, calls))

    backend._aeval = counted_one  # type: ignore[method-assign]
    backend._aevals = counted  # type: ignore[method-assign]
    ips = tasks // 4

    async def task(t: int) -> list[Decision]:
        # Each number three times (one over its limit); each IP shared by four tasks.
        numbers = [f"+86138001{t:03d}{i:02d}" for i in range(4) for _ in range(3)]
        return [await guard.acheck(n, ip=f"203.0.113.{t % ips}") for n in numbers]

    async def flood() -> list[list[Decision]]:
        return await asyncio.gather(*(task(t) for t in range(tasks)))

    decisions = [d for ds in asyncio.run(flood()) for d in ds]
    assert most == 2, "a second round trip goes while the first is on the wire, never a third"
    assert max(batches) <= tasks // 2, f"none over half of the {tasks} under way: {batches}"
    assert len(batches) <= 3 * len(decisions) // (tasks // 2), "few round trips: about one per half"
    assert set(alone) == {0}, "alone only when nothing is on the wire"
    assert len(alone) + sum(batches) <= len(decisions), "at most one EVALSHA a decision (a full IP's: none)"
    # An IP's four tasks would have 32 admitted by their numbers' limits alone: its 30 bind.
    assert sum(d.allowed for d in decisions) == ips * 30, "each IP's limit exact"
    assert {d.reason for d in decisions} == {None, "phone_rate", "ip_throttle"}
    for t in range(tasks):
        for i in range(4):
            phone = f"+86138001{t:03d}{i:02d}"
            assert sum(d.allowed for d in decisions if d.phone == phone) <= 2, "each number's limit"


def test_kill_and_restart_redis_mid_run(tmp_path: Path, clock: Clock) -> None:
    server = RedisServer(tmp_path).start()
    try:
        closed = guard_on(
            RedisBackend.from_url(server.url, prefix="c:"), clock, [DailyCap(3)], fail_mode="closed"
        )
        local = guard_on(
            RedisBackend.from_url(server.url, prefix="l:"), clock, [DailyCap(3)], fail_mode="local"
        )
        assert closed.check(VICTIM).allowed
        assert local.check(VICTIM).allowed
        server.stop()  # Redis dies in the middle of the run

        d = closed.check(VICTIM)
        assert (d.allowed, d.reason, d.retry_after) == (False, "backend_unavailable", 5.0)
        assert [local.check(VICTIM).allowed for _ in range(4)] == [True, True, True, False]

        server.start()  # back on the same port, empty (no persistence)
        clock.advance(5)  # the guard's retry_interval
        assert closed.check(VICTIM).remaining == {"daily_cap": 2}, "counting in Redis again"
        assert local.check(VICTIM).remaining == {"daily_cap": 2}
        client = redis.Redis(port=server.port)
        assert sorted(k.split(b":")[0] for k in client.keys("*sent:*")) == [b"c", b"l"]
        # The statistics of the decisions made during the outage were kept, and written after it.
        day = closed.stats()
        assert (day.attempts, day.allowed, day.degraded) == (2, 1, 1), "the first count died with Redis"
        assert day.denied == {"backend_unavailable": 1}
        day = local.stats()
        assert (day.attempts, day.allowed, day.degraded) == (5, 4, 4)
    finally:
        server.stop()


def test_unreachable_at_start_follows_fail_mode(clock: Clock) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    guard = guard_on(RedisBackend.from_url(url), clock, [DailyCap(1)], fail_mode="open")
    assert guard.check(VICTIM).reason == "fail_open"
    cluster = RedisBackend.from_url(f"redis+cluster://127.0.0.1:{free_port()}")
    guard = guard_on(cluster, clock, [DailyCap(1)], fail_mode="closed")
    assert guard.check(VICTIM).reason == "backend_unavailable"

    async def down() -> Decision:
        return await guard_on(RedisBackend.from_url(url), clock, [DailyCap(1)], fail_mode="closed").acheck(
            VICTIM
        )

    assert asyncio.run(down()).reason == "backend_unavailable"


def test_unix_socket_url(tmp_path: Path, clock: Clock) -> None:
    sock = tmp_path / "redis.sock"
    server = RedisServer(tmp_path, None, "--unixsocket", str(sock)).start()
    try:
        guard = guard_on(RedisBackend.from_url(f"unix://{sock}"), clock, [DailyCap(1)])
        assert guard.check(VICTIM).allowed
        assert guard.check(VICTIM).reason == "daily_cap"
    finally:
        server.stop()


def test_rediss_url(tmp_path: Path, clock: Clock) -> None:
    ca = trustme.CA()
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    served = ca.issue_cert("127.0.0.1")
    served.cert_chain_pems[0].write_to_path(str(cert))
    served.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    tls_port = free_port()
    tls = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
           "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no"]  # fmt: skip
    server = RedisServer(tmp_path, None, *tls).start()  # plain TCP on server.port as well
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        backend = RedisBackend.from_url(url, ssl_ca_certs=str(ca_file), prefix=unique_prefix())
        guard = guard_on(backend, clock, [DailyCap(1)], fail_mode="closed")
        assert guard.check(VICTIM).allowed
        assert guard.check(VICTIM).reason == "daily_cap"
        assert asyncio.run(guard.acheck(VICTIM)).reason == "daily_cap"
        keys = redis.Redis(port=server.port).keys(backend.prefix + "sent:*")
        assert len(keys) == 1, "counted over TLS"

        for untrusted in (f"rediss://127.0.0.1:{tls_port}/0", f"redis://127.0.0.1:{tls_port}/0"):
            guard = guard_on(RedisBackend.from_url(untrusted), clock, [DailyCap(1)], fail_mode="closed")
            assert guard.check(VICTIM).reason == "backend_unavailable", untrusted
    finally:
        server.stop()


def test_sentinel_url(tmp_path: Path, redis_server: RedisServer, clock: Clock) -> None:
    port, sentinel = start_sentinel(tmp_path, redis_server.port)
    try:
        backend = RedisBackend.from_url(f"redis+sentinel://127.0.0.1:{port}/guarded", prefix=unique_prefix())
        guard = guard_on(backend, clock, [DailyCap(1)], fail_mode="closed")
        assert guard.check(VICTIM).allowed
        assert guard.check(VICTIM).reason == "daily_cap"
        keys = redis.Redis(port=redis_server.port).keys(backend.prefix + "sent:*")
        assert len(keys) == 1, "counted on the master the sentinel named"
        assert asyncio.run(guard.acheck(VICTIM)).reason == "daily_cap"
    finally:
        stop_process(sentinel)


def test_no_sentinel_answering_is_said_in_one_short_line(caplog: pytest.LogCaptureFixture) -> None:
    """Each sentinel asked is named by its address, not by its client's repr (hundreds of
    characters each)."""
    ports = [free_port(), free_port()]  # nothing listens: refused
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/guarded"
    guard = Guard(
        [DailyCap(3)], backend=RedisBackend.from_url(url), fail_mode="open", secret="s", statistics=False
    )
    with caplog.at_level(logging.WARNING, "smsguard"):
        assert guard.check("+447400123456").reason == "fail_open"
    [said] = [r.getMessage() for r in caplog.records if "backend unavailable" in r.getMessage()]
    assert "No master found for 'guarded'" in said
    assert all(f"127.0.0.1:{port} - " in said for port in ports), said
    assert "ConnectionPool" not in said, said
    assert len(said) < 400, said


def test_sentinel_failover(tmp_path: Path, clock: Clock) -> None:
    master = RedisServer(tmp_path, None, "--repl-diskless-sync-delay", "0").start()  # no 5 s wait to sync
    replica = RedisServer(tmp_path, None, "--replicaof", "127.0.0.1", str(master.port)).start()
    # Down after 1 s without an answer: short, yet no slow ping on a loaded machine starts a failover.
    settings = ["sentinel down-after-milliseconds guarded 1000", "sentinel failover-timeout guarded 1000"]
    port, sentinel = start_sentinel(tmp_path, master.port, *settings)
    try:
        watcher = redis.Redis(port=port, decode_responses=True)
        wait_until(
            lambda: any(r["port"] == replica.port for r in watcher.sentinel_slaves("guarded")),
            "the sentinel to find the replica",
        )
        backend = RedisBackend.from_url(f"redis+sentinel://127.0.0.1:{port}/guarded", prefix=unique_prefix())
        guard = guard_on(backend, clock, [DailyCap(2)], fail_mode="closed")
        assert guard.check(VICTIM).allowed
        assert redis.Redis(port=master.port).wait(1, 10_000) == 1, "the count reached the replica"

        master.stop()
        assert guard.check(VICTIM).reason == "backend_unavailable", "fail mode closed while nobody leads"

        def promoted(state: dict[str, Any]) -> bool:  # the failover is over, as clients see it
            return bool(state["port"] == replica.port and not (state["is_sdown"] or state["is_odown"]))

        wait_until(lambda: promoted(watcher.sentinel_masters()["guarded"]), "the replica's promotion")
        clock.advance(5)  # the guard's retry_interval: it asks Redis again
        assert guard.check(VICTIM).allowed, "the second of two, on the new master"
        assert guard.check(VICTIM).reason == "daily_cap", "the count from before the failover held"
        assert asyncio.run(guard.acheck(VICTIM)).reason == "daily_cap"
    finally:
        stop_process(sentinel)
        replica.stop()
        master.stop()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "memcached://localhost:11211",
            "'memcached://localhost:11211' is not a storage URL: use one such as",
        ),
        ("localhost:6379", "'localhost:6379' is not a storage URL: use one such as redis://localhost:6379/0"),
        ("127.0.0.1", "is not a storage URL"),
        ("redis+sentinel://localhost:26379", "names no service"),
        ("valkey+sentinel://localhost:26379", "names no service"),
        ("redis+cluster://localhost", "is not host:port"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RedisBackend.from_url(url)


def test_limits_url_spellings(
    tmp_path: Path, redis_server: RedisServer, redis_cluster: RedisCluster, clock: Clock
) -> None:
    """limits' own spellings reach the same servers: valkey:// for redis://, redis+unix://."""
    sock = tmp_path / "redis.sock"
    unix_server = RedisServer(tmp_path, None, "--unixsocket", str(sock)).start()
    sentinel_port, sentinel = start_sentinel(tmp_path, redis_server.port)
    try:
        urls = [
            redis_server.url.replace("redis://", "valkey://"),
            redis_server.url.replace("redis://", "VALKEY://"),
            f"redis+unix://{sock}",
            f"valkey+unix://{sock}",
            redis_cluster.url.replace("redis+cluster://", "valkey+cluster://"),
            f"valkey+sentinel://127.0.0.1:{sentinel_port}/guarded",
        ]
        for url in urls:
            guard = guard_on(RedisBackend.from_url(url, prefix=unique_prefix()), clock, [DailyCap(1)])
            assert guard.check(VICTIM).allowed, url
            assert guard.check(VICTIM).reason == "daily_cap", url
    finally:
        stop_process(sentinel)
        unix_server.stop()


def test_needs_a_secret(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMSGUARD_SECRET", raising=False)
    with pytest.raises(ConfigError, match="same secret in every worker"):
        Guard(backend=RedisBackend.from_url(redis_server.url))


def test_client_for_each_mode(redis_server: RedisServer, clock: Clock) -> None:
    sync_only = guard_on(
        RedisBackend(redis.Redis(port=redis_server.port), prefix=unique_prefix()), clock, [DailyCap(1)]
    )
    assert sync_only.check(VICTIM).allowed
    with pytest.raises(ConfigError, match="only a sync client"):
        asyncio.run(sync_only.acheck(VICTIM))
    with pytest.raises(ConfigError, match="needs a client"):
        RedisBackend()


# -- hardening: outages, bugs and a full Redis are told apart ------------------------------


def test_script_error_is_raised_never_met_with_the_fail_mode(
    redis_backend: RedisBackend, clock: Clock
) -> None:
    """A counter key of the wrong type makes the script fail: a bug, raised even by an open
    guard, never an admission."""
    guard = guard_on(redis_backend, clock, [DailyCap(1)], fail_mode="open")
    client = redis.Redis.from_url(redis_backend_url(redis_backend))
    client.set(redis_backend.prefix + key("sent", guard.identify(VICTIM)[1]), "not a sorted set")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        guard.check(VICTIM)
    with pytest.raises(BackendError, match="WRONGTYPE"):
        asyncio.run(guard.acheck(VICTIM))
    assert guard.outage.down_until == 0.0, "a bug does not trip the breaker"


def test_client_library_failure_follows_the_fail_mode(redis_server: RedisServer, clock: Clock) -> None:
    """An exception from inside redis.asyncio (as seen during a Cluster failover) never
    escapes acheck."""

    class Broken(redis.asyncio.Redis):
        async def execute_command(self, *args: Any, **options: Any) -> Any:
            if args[0] == "EVALSHA":
                raise AttributeError("'NoneType' object has no attribute 'send_packed_command'")
            return await super().execute_command(*args, **options)

    async def scenario() -> Decision:
        backend = RedisBackend(aclient=Broken(port=redis_server.port), prefix=unique_prefix())
        return await guard_on(backend, clock, [DailyCap(1)], fail_mode="closed").acheck(VICTIM)

    assert asyncio.run(scenario()).reason == "backend_unavailable"


def stall(server: RedisServer, seconds: float) -> socket.socket:
    """Send DEBUG SLEEP on a raw socket (no reply awaited); return once Redis has stopped
    answering."""
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(f"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n${len(str(seconds))}\r\n{seconds}\r\n".encode())

    def silent() -> bool:
        try:
            redis.Redis(port=server.port, socket_timeout=0.05, retry=Retry(NoBackoff(), 0)).ping()
            return False
        except redis.TimeoutError:
            return True

    wait_until(silent, "Redis to stall")
    return raw


def test_stalled_redis_gives_back_the_hits_of_refused_jobs(tmp_path: Path, clock: Clock) -> None:
    """Redis stalls; five concurrent checks time out and get 503; their scripts run when Redis
    wakes. No SMS went out, so once Redis answers again the hits are given back."""
    server = RedisServer(tmp_path, None, "--enable-debug-command", "yes").start()
    try:
        guard = guard_on(
            RedisBackend.from_url(server.url, timeout=0.3), clock, [DailyCap(10)], fail_mode="closed"
        )
        assert guard.check(VICTIM).remaining == {"daily_cap": 9}  # connected, script loaded
        pool = guard.backend._sync_client().connection_pool  # type: ignore[attr-defined]
        opened = [pool.get_connection() for _ in range(5)]  # five in the pool: five jobs are sent
        for connection in opened:
            pool.release(connection)
        raw = stall(server, 1.5)
        assert admitted_by_threads(lambda: guard.check(VICTIM), threads=5, each=1) == []
        raw.recv(16)  # "+OK": Redis is awake, and has run the five scripts
        client = redis.Redis(port=server.port)
        hits = client.zcard(f"smsguard:{key('sent', guard.identify(VICTIM)[1])}")
        assert hits == 6, "the timed-out scripts ran when Redis woke"
        clock.advance(5)
        assert guard.check(VICTIM).remaining == {"daily_cap": 8}, "given back: 1 before + this one"
    finally:
        server.stop()


def test_full_redis_follows_the_fail_mode_and_writes_nothing(tmp_path: Path, clock: Clock) -> None:
    """With maxmemory reached under noeviction, the script is refused whole (OOM): the fail
    mode answers, nothing is half-written, and a refused suspend() raises yet holds here."""
    server = RedisServer(tmp_path, None, "--maxmemory-policy", "noeviction").start()
    try:
        client = redis.Redis(port=server.port)
        closed = guard_on(
            RedisBackend.from_url(server.url, prefix="c:"),
            clock,
            [Suspend(), DailyCap(3)],
            fail_mode="closed",
        )
        opened = guard_on(
            RedisBackend.from_url(server.url, prefix="o:"), clock, [DailyCap(3)], fail_mode="open"
        )
        assert closed.check(VICTIM).allowed
        for i in range(200):
            client.set(f"junk{i}", "x" * 10_000)
        used = client.info("memory")["used_memory"]
        client.config_set("maxmemory", used // 2)  # well over the limit: every write is refused
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("one-more", "x")
        assert closed.check(OTHER).reason == "backend_unavailable"
        assert opened.check(OTHER).reason == "fail_open"
        assert client.keys(f"c:*{closed.identify(OTHER)[1]}*") == [], (
            "nothing written for the refused attempt"
        )
        with pytest.raises(BackendUnavailable, match="OutOfMemoryError"):
            closed.suspend()
        assert closed.check(VICTIM).reason == "suspended", "the switch holds here at once"
        client.flushdb()  # memory again: the owed write reaches Redis
        clock.advance(5)
        assert closed.check(VICTIM).reason == "suspended"
        assert client.exists("c:switch:suspended") == 1
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("policy", "warned"), [("noeviction", False), ("allkeys-lru", True), ("volatile-lru", True)]
)
def test_evicting_redis_is_warned_of_at_first_use(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture, policy: str, warned: bool
) -> None:
    server = RedisServer(tmp_path, None, "--maxmemory-policy", policy).start()
    try:
        guard = guard_on(RedisBackend.from_url(server.url), clock, [DailyCap(3)])
        with caplog.at_level(logging.WARNING, logger="smsguard"):
            guard.check(VICTIM)
            asyncio.run(guard.acheck(VICTIM))
            guard.check(VICTIM)
        warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
        assert len(warnings) == (1 if warned else 0), warnings
        if warned:
            assert f"maxmemory-policy is {policy}" in warnings[0]
            assert ("emergency switch" in warnings[0]) == policy.startswith("allkeys")
    finally:
        server.stop()


def test_an_async_guard_warns_of_an_evicting_redis_at_its_first_decision(
    tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path, None, "--maxmemory-policy", "allkeys-lru").start()
    try:
        backend = RedisBackend.from_url(server.url)
        guard = guard_on(backend, clock, [DailyCap(3)])

        def warnings() -> list[str]:
            return [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]

        async def first() -> Outcome:  # a decision's one EVALSHA, sent straight: no call before it
            return await backend.arun(Job(clock.now, "t", (), ()))

        async def twice() -> None:
            await guard.acheck(VICTIM)
            await guard.acheck(VICTIM)

        with caplog.at_level(logging.WARNING, logger="smsguard"):
            assert asyncio.run(first()) == Outcome(-1, (), (), ())
            assert len(warnings()) == 1, warnings()
            asyncio.run(twice())
        assert len(warnings()) == 1, "once, at first use"
        assert "maxmemory-policy is allkeys-lru" in warnings()[0]
    finally:
        server.stop()


def test_switch_and_list_entries_survive_volatile_eviction(tmp_path: Path, clock: Clock) -> None:
    """Under volatile-* Redis evicts only keys with a TTL: the switch and list entries have none."""
    server = RedisServer(tmp_path, None, "--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru").start()
    try:
        guard = guard_on(
            RedisBackend.from_url(server.url), clock, [Suspend(), Blacklist(shared=True), DailyCap(3)]
        )
        guard.add_number("blacklist", VICTIM)
        guard.suspend()
        client = redis.Redis(port=server.port)
        for i in range(2000):  # counters with TTLs, as a flood makes: these are what may go
            client.set(f"smsguard:flood{i}", "x" * 5000, ex=3600)
        assert client.exists("smsguard:switch:suspended") == 1
        guard.resume()
        assert guard.check(VICTIM).reason == "blacklisted"
    finally:
        server.stop()


def test_async_recovers_from_a_restart_as_sync_does(tmp_path: Path, clock: Clock) -> None:
    """A pooled connection left dead by a restart is retried at once, in async code too."""
    server = RedisServer(tmp_path).start()
    try:
        guard = guard_on(RedisBackend.from_url(server.url), clock, [DailyCap(5)], fail_mode="closed")

        async def scenario() -> list[Decision]:
            first = await guard.acheck(VICTIM)
            server.stop()
            server.start()  # the pooled connection is dead now; Redis is empty and up
            return [first, await guard.acheck(VICTIM)]

        first, after = asyncio.run(scenario())
        assert first.remaining == {"daily_cap": 4}
        assert (after.allowed, after.remaining) == (True, {"daily_cap": 4}), "counted in the restarted Redis"
        before = guard.check(VICTIM)
        server.stop()
        server.start()
        assert guard.check(VICTIM).remaining == {"daily_cap": 4}, before
    finally:
        server.stop()


def test_operations_have_async_twins_for_async_only_clients(redis_server: RedisServer, clock: Clock) -> None:
    async def scenario() -> list[str | None]:
        backend = RedisBackend(aclient=redis.asyncio.Redis(port=redis_server.port), prefix=unique_prefix())
        guard = guard_on(backend, clock, [Suspend(), Blacklist(shared=True), DailyCap(5)])
        reasons = []
        await guard.asuspend()
        reasons.append((await guard.acheck(VICTIM)).reason)
        await guard.aresume()
        await guard.aadd_number("blacklist", VICTIM)
        reasons.append((await guard.acheck(VICTIM)).reason)
        await guard.aremove_number("blacklist", VICTIM)
        reasons.append((await guard.acheck(VICTIM)).reason)
        d = await guard.acheck(OTHER)
        await guard.arefund(d)
        await guard.arefund(d)
        reasons.append(str((await guard.acheck(OTHER)).remaining))
        return reasons

    assert asyncio.run(scenario()) == ["suspended", "blacklisted", None, "{'daily_cap': 4}"]


# What a decision that meets each fail mode looks like: (allowed, reason).
OUTAGE = {"local": (True, None), "open": (True, "fail_open"), "closed": (False, "backend_unavailable")}


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("full_coverage", "modes"),
    [(False, ["local", "open", "closed"]), (True, ["local", "open", "closed"])],
    ids=["full-coverage-no", "full-coverage-yes"],
)
def test_one_dead_master(tmp_path: Path, clock: Clock, full_coverage: bool, modes: list[str]) -> None:
    """SIGKILL one of three masters, under a guard in each fail mode. With
    ``cluster-require-full-coverage no``, the numbers whose slots live on the other two stay exact
    at their cap, in sync and async code, and only the dead master's meet the fail mode. With
    ``yes`` (Redis's default) every node refuses every key while a master is down: every decision
    meets the fail mode, and none raises. Once the replica takes over, every number is exact again:
    the replica had the counts."""
    cluster = RedisCluster(tmp_path, replicas=True, full_coverage=full_coverage).start()
    loop = asyncio.new_event_loop()  # one, as an app's: its client knew the cluster before
    try:
        guards = {
            mode: guard_on(
                RedisBackend.from_url(cluster.url, prefix=f"{mode}:", timeout=ANSWER_TIMEOUT),
                clock,
                [DailyCap(2)],
                fail_mode=mode,
            )
            for mode in modes
        }
        owners: dict[int, list[str]] = {}  # master port -> three numbers whose keys it holds
        for number in (f"+86138001{i:05d}" for i in range(40)):
            port = cluster.master_of(key("sent", guards["open"].identify(number)[1])).port
            held = owners.setdefault(port, [])
            if len(held) < 3:
                held.append(number)
        assert sorted(map(len, owners.values())) == [3, 3, 3]
        numbers = [n for held in owners.values() for n in held]
        dead = next(node for node in cluster.nodes if node.port == min(owners))
        for guard in guards.values():
            for number in numbers:
                assert guard.check(number).allowed
                assert loop.run_until_complete(guard.acheck(number)).allowed
        assert cluster.replicated(dead) == 1, "the counts reached the replica before the kill"
        cluster.kill(dead)

        def seen() -> dict[tuple[str, str], list[tuple[bool, str | None]]]:
            """Each guard's decision on each number, sync then async. All at once: a decision
            that meets the dead node waits seconds for the Redis client's retries (a connection
            error, which a failover would end)."""
            asked = [(mode, n) for mode in guards for n in numbers]
            with ThreadPoolExecutor(len(asked)) as pool:
                sync = list(pool.map(lambda a: guards[a[0]].check(a[1]), asked))

            async def again() -> list[Decision]:
                return await asyncio.gather(*(guards[mode].acheck(n) for mode, n in asked))

            return {
                a: [(d.allowed, d.reason) for d in both]
                for a, *both in zip(asked, sync, loop.run_until_complete(again()), strict=True)
            }

        exact = (False, "daily_cap")
        spared = [] if full_coverage else [n for n in numbers if n not in owners[dead.port]]
        assert seen() == {(m, n): [exact if n in spared else OUTAGE[m]] * 2 for m in guards for n in numbers}

        cluster.fail_over()
        clock.advance(5)  # the guards' retry_interval
        assert seen() == {(m, n): [exact] * 2 for m in guards for n in numbers}, "the replica had the counts"
    finally:
        loop.close()
        cluster.stop()
