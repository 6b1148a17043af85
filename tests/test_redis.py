"""RedisBackend against real redis-server processes that the suite starts itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis
import trustme
from conftest import Clock, admitted_by_threads, unique_prefix
from servers import (
    RedisCluster,
    RedisServer,
    free_port,
    start_sentinel,
    stop_process,
    top_level_commands,
    wait_until,
)

from smsguard import ConfigError, DailyCap, Decision, Guard, IPThrottle, PhoneRate, SameContent, Whitelist
from smsguard.backends.redis import RedisBackend

pytestmark = pytest.mark.redis_server

VICTIM = "+8613800138000"
FOUR = [SameContent(), DailyCap(10, tz="Asia/Shanghai"), PhoneRate("1/minute;5/hour"), IPThrottle("20/hour")]


def guard_on(backend: RedisBackend, clock: Clock, policies: Any = FOUR, **settings: Any) -> Guard:
    return Guard(policies, backend=backend, clock=clock, secret="s", default_region="CN", **settings)


def test_one_command_per_decision(redis_server: RedisServer, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix=unique_prefix())
    guard = guard_on(backend, clock, [Whitelist(shared=True), *FOUR])
    guard.check(VICTIM, content="warm-up", ip="203.0.113.1")  # loads the script once

    def work() -> None:
        for i in range(50):
            guard.check(f"+86138001380{i:02d}", content="x", ip=f"203.0.113.{i}")
        asyncio.run(guard.acheck(VICTIM, content="y", ip="203.0.113.9"))

    commands = top_level_commands(redis_server.port, work)
    assert commands == ["EVALSHA"] * 51


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
    assert len(keys) == 6  # same_content, daily_cap, 2 phone_rate, ip_throttle, whitelist entry
    dump = b" ".join(keys)
    for key in keys:
        if client.type(key) == b"zset":
            members = client.zrange(key, 0, -1, withscores=True)
            dump += b" ".join(m + repr(s).encode() for m, s in members)
            ttl = client.pttl(key)
            assert 0 < ttl <= 86400 * 1000 + 1000, f"{key!r} has no bounded TTL"
        else:
            dump += client.get(key) or b""
    for secret in [b"13800138000", b"13900139000", b"4821", b"Your code", b"203.0.113.77"]:
        assert secret not in dump


def test_ttl_follows_the_window(redis_backend: RedisBackend, redis_server: RedisServer, clock: Clock) -> None:
    guard = guard_on(redis_backend, clock, [SameContent(30)])
    guard.check(VICTIM, content="x")
    client = redis.Redis(port=redis_server.port)
    (key,) = client.scan_iter(match=redis_backend.prefix + "*")
    assert 30_000 < client.pttl(key) <= 31_000


WORKER = textwrap.dedent(
    """
    import sys, threading
    from smsguard import DailyCap, Guard
    from smsguard.backends.redis import RedisBackend
    url, prefix = sys.argv[1], sys.argv[2]
    guard = Guard([DailyCap(10)], backend=RedisBackend.from_url(url, prefix=prefix), secret="shared")
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
        subprocess.Popen([sys.executable, "-c", WORKER, url, prefix], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    counts = [int(w.communicate(timeout=120)[0]) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sum(counts) == 10, f"4 processes x 8 threads admitted {counts}"


def test_cluster_spanning_slots_never_over_admits(redis_cluster: RedisCluster, clock: Clock) -> None:
    backend = RedisBackend.from_url(redis_cluster.url, prefix=unique_prefix())
    assert backend.cluster
    # The number's counters and the IP's live in different slots: the IP limit (5) binds
    # first, and each denial there must give back the number's reservation.
    guard = guard_on(backend, clock, [DailyCap(10), IPThrottle("5/hour")])
    admitted = admitted_by_threads(lambda: guard.check(VICTIM, ip="203.0.113.5"), threads=8, each=10)
    assert len(admitted) == 5
    # Rolled-back reservations are gone: the number holds exactly the 5 admitted hits.
    assert guard.check(VICTIM, ip="203.0.113.6").remaining == {"daily_cap": 4, "ip_throttle": 4}


def test_cluster_concurrent_acheck(redis_cluster: RedisCluster, clock: Clock) -> None:
    guard = guard_on(RedisBackend.from_url(redis_cluster.url, prefix=unique_prefix()), clock, [DailyCap(10)])

    async def flood() -> list[Decision]:
        return await asyncio.gather(*(guard.acheck(VICTIM) for _ in range(300)))

    assert sum(d.allowed for d in asyncio.run(flood())) == 10


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
        assert sorted(k.split(b":")[0] for k in client.keys("*")) == [b"c", b"l"]
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
        keys = redis.Redis(port=server.port).keys(backend.prefix + "*")
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
        keys = redis.Redis(port=redis_server.port).keys(backend.prefix + "*")
        assert len(keys) == 1, "counted on the master the sentinel named"
        assert asyncio.run(guard.acheck(VICTIM)).reason == "daily_cap"
    finally:
        stop_process(sentinel)


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
