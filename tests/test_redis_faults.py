"""A Redis that misbehaves: refusals that mean "not now", and replies lost on the way back.

Each runs against a real redis-server: one set up to refuse writes (no replica for
min-replicas-to-write, a failed save, another client's long script, a dataset still loading, a
replica whose master is gone), and a loopback proxy that cuts the connection after Redis ran a
script, before its reply reaches the client (so redis-py's retry sends the decision again).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from conftest import ANSWER_TIMEOUT, Clock, unique_prefix
from redis._parsers.base import BaseParser
from redis.backoff import NoBackoff
from redis.retry import Retry
from servers import (
    RedisCluster,
    RedisServer,
    free_port,
    redis_server_binary,
    wait_listening,
    wait_until,
)
from starlette.testclient import TestClient
from test_redis import OTHER, VICTIM, guard_on

from smsguard import (
    BackendError,
    BackendUnavailable,
    Countries,
    DailyCap,
    Decision,
    Guard,
    IPThrottle,
    PhoneRate,
)
from smsguard.backends.redis import RedisBackend, _failure

pytestmark = pytest.mark.redis_server

EXAMPLES = Path(__file__).parent.parent / "examples"


# -- refusals that mean "not now" -------------------------------------------------------------


class Refusing:
    """A redis-server on a free port that refuses (writes, or everything) with ``code``."""

    def __init__(self, code: str, workdir: Path) -> None:
        self.code = code
        self.port = free_port()
        self.workdir = workdir / f"{code}-{self.port}"
        self.workdir.mkdir(parents=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.busy: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def spawn(self, *extra: str) -> redis.Redis:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [redis_server_binary(), *args, "--dir", str(self.workdir), *extra], stdout=subprocess.DEVNULL
        )
        wait_listening(self.port, self.process)
        return redis.Redis(port=self.port, retry=Retry(NoBackoff(), 0))

    def start(self) -> Refusing:
        if self.code == "NOREPLICAS":  # no replica at all: writes need one
            self.spawn("--min-replicas-to-write", "1")
        elif self.code == "MISCONF":  # a save that fails (its directory is gone) stops writes
            client = self.spawn()
            self.workdir.rmdir()
            client.config_set("save", "3600 1")
            client.bgsave()
            wait_until(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err", "a failed save")
        elif self.code == "BUSY":  # another client's script that never ends
            client = self.spawn("--lua-time-limit", "10")
            self.busy = socket.create_connection(("127.0.0.1", self.port))
            loop = b"while true do end"
            self.busy.sendall(b"*3\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(loop), loop))
        elif self.code == "LOADING":  # a dataset that takes half a minute to load
            client = self.spawn()
            with client.pipeline() as pipe:
                for i in range(3000):
                    pipe.set(f"k{i}", os.urandom(1500))  # random: no compression, events per key
                pipe.execute()
            client.save()
            self.stop()
            self.spawn("--key-load-delay", "10000", "--loading-process-events-interval-bytes", "1024")
        elif self.code == "MASTERDOWN":  # a replica whose master is gone, serving nothing stale
            self.spawn("--replicaof", "127.0.0.1", str(free_port()), "--replica-serve-stale-data", "no")
        elif self.code == "READONLY":  # a replica (a master's in a failover, not yet promoted)
            self.spawn("--replicaof", "127.0.0.1", str(free_port()))
        wait_until(self.refuses, f"Redis to refuse with {self.code}")
        return self

    def refuses(self) -> bool:
        """Whether a script that writes, as a decision's does, is refused now with this code."""
        try:
            redis.Redis(port=self.port, retry=Retry(NoBackoff(), 0)).eval(WRITES, 1, "probe")
        except redis.RedisError as exc:
            return exc.status_code == self.code
        return False

    def stop(self) -> None:
        if self.busy is not None:
            self.busy.close()
            self.busy = None
        if self.process is not None:  # killed: a Redis whose save fails refuses to shut down
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module", params=["NOREPLICAS", "MISCONF", "BUSY", "LOADING", "MASTERDOWN", "READONLY"])
def refusing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Refusing]:
    server = Refusing(request.param, tmp_path_factory.mktemp("refusing"))
    try:
        yield server.start()
    finally:  # stopped even if it never came to refuse
        server.stop()


WRITES = "return redis.call('SET', KEYS[1], 1)"

# What redis-py's message keeps of each refusal (the code itself, where it has no class for it).
SAID = {
    "NOREPLICAS": "NOREPLICAS",
    "MISCONF": "MISCONF",
    "BUSY": "BUSY",
    "LOADING": "loading the dataset",
    "MASTERDOWN": "Link with MASTER is down",
    "READONLY": "read only replica",
}

# What each fail mode answers for an attempt Redis cannot take now.
FAILED = {"open": (True, "fail_open"), "closed": (False, "backend_unavailable"), "local": (True, None)}


@pytest.mark.parametrize("fail_mode", ["open", "closed", "local"])
def test_a_refusal_for_now_meets_the_fail_mode(
    refusing: Refusing, clock: Clock, caplog: pytest.LogCaptureFixture, fail_mode: str
) -> None:
    """A write Redis refuses for now (no replica to write to, a failed save, another client's
    long script, a dataset still loading, no master, a replica not yet promoted) is an outage:
    the fail mode answers, sync and async, never an exception; a write (here the statistics)
    raises BackendUnavailable, to be sent again later."""

    def guard() -> Guard:  # one per call: a failure leaves the backend alone for a while
        return guard_on(RedisBackend.from_url(refusing.url), clock, fail_mode=fail_mode)

    sync, other = guard(), guard()

    async def acheck() -> Decision:
        decision = await other.acheck(VICTIM, content="code", ip="203.0.113.2")
        with pytest.raises(BackendUnavailable):
            await other.aflush()
        return decision

    with caplog.at_level(logging.WARNING, logger="smsguard"):
        decisions = [sync.check(VICTIM, content="code", ip="203.0.113.2"), asyncio.run(acheck())]
        with pytest.raises(BackendUnavailable):
            sync.flush()
    assert [(d.allowed, d.reason) for d in decisions] == [FAILED[fail_mode]] * 2, decisions
    told = [r.getMessage() for r in caplog.records if "backend unavailable" in r.getMessage()]
    assert len(told) == 2, told
    assert all(SAID[refusing.code] in m for m in told), told
    assert refusing.refuses(), "still refusing: the decisions met the refusal"


@pytest.mark.parametrize(
    ("fail_mode", "statuses"),
    [
        pytest.param("open", [200, 200], id="open"),
        pytest.param("closed", [503, 503], id="closed"),
        pytest.param("local", [200, 429], id="local"),
    ],
)
def test_the_starlette_example_answers_a_refusal_with_its_fail_mode(
    refusing: Refusing, monkeypatch: pytest.MonkeyPatch, fail_mode: str, statuses: list[int]
) -> None:
    """Never a 500: open sends, closed answers 503, local counts in process (the second code
    to the number within a minute is refused there)."""
    monkeypatch.setenv("REDIS_URL", refusing.url)
    monkeypatch.setenv("SMSGUARD_SECRET", "s")
    monkeypatch.setenv("SMSGUARD_FAIL_MODE", fail_mode)
    spec = importlib.util.spec_from_file_location(f"starlette_app_{fail_mode}", EXAMPLES / "starlette_app.py")
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    client = TestClient(example.app, client=("203.0.113.7", 50000), raise_server_exceptions=False)
    answers = [client.post("/sms/send", json={"phone": "+86 138 0013 8000"}) for _ in range(2)]
    assert [a.status_code for a in answers] == statuses, [a.text for a in answers]
    assert refusing.refuses()


@pytest.mark.cluster
def test_a_cluster_master_refusing_degrades_only_the_decisions_that_need_it(
    redis_cluster: RedisCluster, clock: Clock
) -> None:
    """The master of the victim's slot loses its replica (min-replicas-to-write): only the
    decisions that need that slot meet the fail mode, sync and async; the others count."""
    guard = guard_on(
        RedisBackend.from_url(redis_cluster.url, prefix=unique_prefix(), timeout=ANSWER_TIMEOUT),
        clock,
        [DailyCap(10)],
        fail_mode="open",
    )

    def master(phone: str) -> RedisServer:
        return redis_cluster.master_of(f"sent:{{{guard.identify(phone)[1]}}}")

    refusing = master(VICTIM)
    elsewhere = next(p for p in (f"+86138001381{i:02d}" for i in range(100)) if master(p) is not refusing)
    config = redis.Redis(port=refusing.port)
    config.config_set("min-replicas-to-write", 1)
    try:
        for decide in (guard.check, lambda phone: asyncio.run(guard.acheck(phone))):
            assert [decide(VICTIM).reason, decide(elsewhere).reason] == ["fail_open", None]
    finally:
        config.config_set("min-replicas-to-write", 0)
    assert guard.status(elsewhere)[0].used == 2, "counted in Redis"


@pytest.mark.parametrize(
    "reply",
    [
        "NOREPLICAS Not enough good replicas to write.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "READONLY You can't write against a read only replica. script: 1a2b, on @user_script:193.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "OOM command not allowed when used memory > 'maxmemory'. script: 1a2b, on @user_script:193.",
    ],
)
def test_each_refusal_is_an_outage_however_it_arrives(reply: str) -> None:
    """Sorted by the reply's first word: as redis-py 8 parses it, and as older redis-py left
    it (no status_code; the code cut from the message of an error it has a class for; a
    pipeline's words before it)."""
    parsed = BaseParser.parse_error(reply)
    assert isinstance(_failure(parsed, False), BackendUnavailable)
    older = type(parsed)(f"Command # 1 (EVALSHA 1a2b 1 k) of pipeline caused error: {parsed.args[0]}")
    assert older.status_code is None
    assert isinstance(_failure(older, False), BackendUnavailable), older


@pytest.mark.parametrize(
    "reply",
    [
        "ERR user_script:12: Script attempted to access nonexistent global variable 'x' script: 1a2b",
        "WRONGTYPE Operation against a key holding the wrong kind of value script: 1a2b",
        "NOPERM User smsguard has no permissions to run the 'evalsha' command",
        "CROSSSLOT Keys in request don't hash to the same slot",
        "ERR Error running script: BUSY inside the message is no refusal",
    ],
)
def test_any_other_error_reply_is_a_bug(reply: str) -> None:
    parsed = BaseParser.parse_error(reply)
    assert isinstance(_failure(parsed, False), BackendError)
    older = type(parsed)(f"Command # 1 (EVALSHA 1a2b 1 k) of pipeline caused error: {parsed.args[0]}")
    assert isinstance(_failure(older, False), BackendError)


# -- a reply lost after the script ran -------------------------------------------------------


class Cutter:
    """A loopback TCP proxy in front of a redis-server. Armed with ``cut(evals)``, it lets the
    next round trip that carries at least ``evals`` EVALSHAs (0: any round trip) through to
    Redis, waits for all of Redis's replies to it (the scripts have run), then closes the
    client's connection without forwarding them: the client sees its connection lost while
    reading the reply. After ``hold()`` it keeps every round trip that carries an EVALSHA from
    Redis, counting those (``held``), and answers it ``reply`` (an error reply, as Redis's), or
    nothing, as a stalled Redis: the client's wait times out."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed: int | None = None  # EVALSHAs a round trip needs to be cut (None: none is)
        self.cuts = 0
        self.holding: bytes | None = None  # what a held round trip is answered (b"": nothing)
        self.held = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, evals: int = 1) -> None:
        with self.lock:
            self.armed = evals

    def hold(self, reply: bytes = b"") -> None:
        with self.lock:
            self.holding = reply

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, server]
            sent: deque[list[bytes]] = deque()  # commands Redis has not answered yet
            threading.Thread(target=self._requests, args=(client, server, sent), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, sent), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, sent: deque[list[bytes]]) -> None:
        reader = hiredis.Reader()
        while data := _recv(client):
            reader.feed(data)
            commands = []
            while (command := reader.gets()) is not False:
                commands.append(command)
            evals = sum(command[0].upper() == b"EVALSHA" for command in commands)
            with self.lock:
                reply = self.holding
                if reply is not None and evals:
                    self.held += evals
            if reply is not None and evals:
                client.sendall(reply * len(commands))  # (none of them forwarded: nothing else answers)
                continue
            sent.extend(commands)  # before Redis can answer them
            server.sendall(data)
        server.close()

    def _replies(self, server: socket.socket, client: socket.socket, sent: deque[list[bytes]]) -> None:
        reader = hiredis.Reader()
        held, answered = b"", []
        while data := _recv(server):
            reader.feed(data)
            held += data
            while reader.gets() is not False:
                answered.append(sent.popleft())
            if sent:  # more replies to come for this round trip
                continue
            evals = sum(command[0].upper() == b"EVALSHA" for command in answered)
            with self.lock:
                cut = self.armed is not None and self.armed <= evals
                if cut:
                    self.armed, self.cuts = None, self.cuts + 1
            if cut:
                client.shutdown(socket.SHUT_RDWR)
                client.close()
                server.close()
                return
            client.sendall(held)
            held, answered = b"", []
        client.close()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


@pytest.fixture
def cutter(redis_server: RedisServer) -> Iterator[Cutter]:
    proxy = Cutter(redis_server.port)
    yield proxy
    proxy.close()


def hits(server: RedisServer, guard: Guard, phone: str = VICTIM) -> int:
    """The hits in ``phone``'s log."""
    prefix = guard.backend.prefix  # type: ignore[attr-defined]
    keys = redis.Redis(port=server.port).keys(f"{prefix}sent:{{{guard.identify(phone)[1]}}}")
    return sum(redis.Redis(port=server.port).zcard(k) for k in keys)


def through(cutter: Cutter) -> RedisBackend:
    """A backend talking to Redis through ``cutter``. A generous answer timeout: what these tests
    lose is a connection (at once), and on a loaded machine a slow answer would be an outage of
    its own, decided by the fail mode, which is not what they are about."""
    return RedisBackend.from_url(f"redis://127.0.0.1:{cutter.port}/0", prefix=unique_prefix(), timeout=3.0)


@pytest.mark.parametrize("fail_mode", ["open", "closed", "local"])
def test_a_lost_reply_resent_does_not_deny_its_own_attempt(
    cutter: Cutter, redis_server: RedisServer, clock: Clock, fail_mode: str
) -> None:
    """redis-py sends the decision again on the connection error; the script finds its own hit
    and answers as it did: allowed, one hit, counted once, and its receipt gives that hit back."""
    guard = guard_on(through(cutter), clock, fail_mode=fail_mode)
    assert guard.check(OTHER, content="warm-up", ip="203.0.113.1").allowed  # script loaded
    cutter.cut()
    decision = guard.check(VICTIM, content="code 1", ip="203.0.113.2")
    assert cutter.cuts == 1, "the reply was lost once"
    assert (decision.allowed, decision.reason) == (True, None), decision
    assert decision.remaining == {"same_content": 0, "daily_cap": 9, "phone_rate": 0, "ip_throttle": 19}
    assert hits(redis_server, guard) == 1, "one hit for one attempt"
    again = guard.check(VICTIM, content="code 2", ip="203.0.113.2")
    assert again.reason == "phone_rate", "the one hit counts: nothing over-admitted"
    day = guard.stats()
    assert (day.attempts, day.allowed, day.denied) == (3, 2, {"phone_rate": 1})
    guard.refund(decision)  # the code was not sent after all
    assert hits(redis_server, guard) == 0


@pytest.mark.parametrize("fail_mode", ["open", "closed", "local"])
def test_a_lost_reply_resent_does_not_deny_its_own_async_attempt(
    cutter: Cutter, redis_server: RedisServer, clock: Clock, fail_mode: str
) -> None:
    guard = guard_on(through(cutter), clock, fail_mode=fail_mode)

    async def scenario() -> Decision:
        assert (await guard.acheck(OTHER, content="warm-up", ip="203.0.113.1")).allowed
        cutter.cut()
        return await guard.acheck(VICTIM, content="code 1", ip="203.0.113.2")

    decision = asyncio.run(scenario())
    assert cutter.cuts == 1
    assert (decision.allowed, decision.reason) == (True, None), decision
    assert hits(redis_server, guard) == 1
    assert guard.check(VICTIM, content="code 2", ip="203.0.113.2").reason == "phone_rate"


def test_a_lost_reply_to_a_pipelined_batch(cutter: Cutter, redis_server: RedisServer, clock: Clock) -> None:
    """Twenty concurrent acheck calls: the first goes alone, the second as the next round trip,
    the other eighteen in pipelines of about half (see _Batches); the first of those pipelines
    loses its replies after every script ran. Each is allowed, once: the IP's limit of 20
    holds exactly."""
    guard = guard_on(through(cutter), clock, [PhoneRate("1/minute"), IPThrottle("20/hour")])
    numbers = [f"+86138001380{i:02d}" for i in range(21)]

    async def scenario() -> list[Decision]:
        await guard.acheck(OTHER, ip="203.0.113.1")  # connected, script loaded
        cutter.cut(evals=2)  # the first round trip of several scripts: the batch
        first = await asyncio.gather(*(guard.acheck(n, ip="203.0.113.2") for n in numbers[:20]))
        return [*first, await guard.acheck(numbers[20], ip="203.0.113.2")]

    decisions = asyncio.run(scenario())
    assert cutter.cuts == 1
    assert [d.reason for d in decisions] == [None] * 20 + ["ip_throttle"], "allowed once each, no more"
    assert [hits(redis_server, guard, n) for n in numbers] == [1] * 20 + [0]
    day = guard.stats()
    assert (day.attempts, day.allowed) == (22, 21)


@pytest.mark.parametrize(
    ("policies", "after"),
    [
        pytest.param([Countries(caps={"CN": 3})], [(True, ()), (False, ())], id="a sum alone"),
        pytest.param([DailyCap(1, shadow=True)], [(True, ("daily_cap",))] * 2, id="a shadow policy alone"),
    ],
)
def test_a_lost_reply_resent_when_no_log_tells(
    cutter: Cutter, clock: Clock, policies: list[Any], after: list[tuple[bool, tuple[str, ...]]]
) -> None:
    """A call whose hits go where not every admitted attempt leaves one (a sum; a shadow
    policy's log) keeps the tokens it admitted lately, for a while: sent again, it answers as
    it did all the same, and its hit counts once."""
    guard = guard_on(through(cutter), clock, policies)
    assert guard.check(OTHER).allowed
    cutter.cut()
    decision = guard.check(VICTIM)
    assert cutter.cuts == 1
    assert (decision.allowed, decision.shadowed) == (True, ()), decision
    assert [(d.allowed, d.shadowed) for d in (guard.check(VICTIM), guard.check(VICTIM))] == after
    client = redis.Redis(port=cutter.upstream)
    tokens = client.keys(f"{guard.backend.prefix}tokens:*")  # type: ignore[attr-defined]
    assert tokens
    assert all(0 < client.pttl(k) <= 60_000 for k in tokens), "kept a minute, no longer"


def test_statistics_written_once_when_their_reply_is_lost(
    cutter: Cutter, redis_server: RedisServer, clock: Clock
) -> None:
    guard = guard_on(through(cutter), clock, [DailyCap(10)])
    for _ in range(3):
        guard.check(VICTIM)
    cutter.cut(evals=0)  # the next round trip: the statistics' write
    guard.flush()
    assert cutter.cuts == 1
    day = guard.stats()
    assert (day.attempts, day.allowed) == (3, 3)


def through_all(cutters: dict[int, Cutter], **options: Any) -> RedisBackend:
    """A Cluster backend whose client reaches each node (by its port) through its cutter."""
    options.setdefault("timeout", ANSWER_TIMEOUT)
    return RedisBackend.from_url(
        "redis+cluster://" + ",".join(f"127.0.0.1:{c.port}" for c in cutters.values()),
        prefix=unique_prefix(),
        address_remap=lambda address: (
            ("127.0.0.1", cutters[address[1]].port) if address[1] in cutters else address
        ),
        **options,
    )


@pytest.mark.cluster
@pytest.mark.parametrize("call", ["check", "acheck"])
def test_a_lost_reply_resent_on_a_cluster(redis_cluster: RedisCluster, clock: Clock, call: str) -> None:
    """A Cluster client sends a command again itself after a connection error: each slot's
    script (the number's, the IP's, the country's sum) answers as it did."""
    cutters = {node.port: Cutter(node.port) for node in redis_cluster.nodes}
    try:
        policies = [PhoneRate("1/minute"), IPThrottle("20/hour"), Countries(caps={"CN": 3})]
        guard = guard_on(through_all(cutters), clock, policies)

        async def acheck(phone: str) -> Decision:
            return await guard.acheck(phone, ip="203.0.113.2")

        def decide(phone: str) -> Decision:
            if call == "check":
                return guard.check(phone, ip="203.0.113.2")
            return asyncio.run(acheck(phone))

        first = decide(OTHER)  # connected, script loaded on every node it needs
        assert first.allowed, first
        assert not first.degraded, first
        for cutter in cutters.values():
            cutter.cut()
        decision = decide(VICTIM)
        assert sum(c.cuts for c in cutters.values()) >= 1
        assert (decision.allowed, decision.remaining) == (
            True,
            {"phone_rate": 0, "ip_throttle": 18, "countries": 1},
        ), decision
        assert [d.reason for d in (decide(VICTIM), decide("+8613700137000"))] == ["phone_rate", None]
        assert decide("+8613600136000").reason == "country_cap", "the country's 3: counted once each"
    finally:
        for cutter in cutters.values():
            cutter.close()


@pytest.mark.cluster
@pytest.mark.parametrize("call", ["check", "acheck"])
@pytest.mark.parametrize(
    "reply", [b"", b"-CLUSTERDOWN The cluster is down\r\n"], ids=["stall", "CLUSTERDOWN"]
)
def test_a_stalled_or_refused_decision_is_not_sent_again_on_a_cluster(
    redis_cluster: RedisCluster, clock: Clock, call: str, reply: bytes
) -> None:
    """redis-py's Cluster client would send a decision again, ten times more and seconds later,
    when its node times out or says CLUSTERDOWN: the backend's client does not, as on a single
    node. A stalled node costs one ``timeout``, and a cluster that is down the fail mode now."""
    cutters = {node.port: Cutter(node.port) for node in redis_cluster.nodes}
    try:
        # A generous timeout: on a loaded machine the first decision's connections, slots and
        # script load through the proxies take longer than a short one (a stall costs it once).
        guard = guard_on(through_all(cutters, timeout=2.0), clock, [DailyCap(5)], fail_mode="closed")

        def decide(phone: str) -> Decision:
            if call == "check":
                return guard.check(phone)
            return asyncio.run(guard.acheck(phone))

        first = decide(OTHER)  # connected, script loaded
        assert first.allowed, first
        assert not first.degraded, first
        for cutter in cutters.values():
            cutter.hold(reply)
        assert decide(VICTIM).reason == "backend_unavailable"
        assert sum(c.held for c in cutters.values()) == 1, "the script sent once, not again"
    finally:
        for cutter in cutters.values():
            cutter.close()
