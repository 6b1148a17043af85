"""The Redis backend: one EVALSHA per decision, on a single node, Sentinel or Cluster.

The decision logic is written once, as generators that yield Redis requests and receive
their replies (``smsguard.backends.wire``); ``run`` drives them (``smsguard.drive``) with the
sync client and ``arun`` with ``redis.asyncio``. So the sync and async paths differ only in how
a request is sent.

Clock: the script trusts the app's clock (the Guard's, passed as ``now``), not Redis's
``TIME``. A decision then reads one clock for its calendar day and its windows alike, and
tests stay deterministic. App servers whose clocks differ by d seconds see a window up to
d seconds shorter or longer than each other: keep them on NTP (skew is then milliseconds).
Key TTLs are set relative to that clock, so skew between an app server and Redis never
expires a live hit early.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import weakref
from collections.abc import Callable, Generator, Sequence
from importlib import resources
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.retry
import redis.sentinel
from redis import exceptions as rx

from smsguard.backends import redis_clients
from smsguard.backends.wire import Request, Wire, _glob_escape
from smsguard.drive import adrive, drive
from smsguard.errors import BackendError, BackendUnavailable, ConfigError
from smsguard.plan import Change, Job, Outcome

log = logging.getLogger("smsguard")

_pack_command: Callable[..., bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - the redis extra brings it
    _pack_command = None

SCRIPT = resources.files("smsguard.backends").joinpath("lua/consume.lua").read_text()


# What "Redis cannot answer now" looks like: the guard answers it with its fail mode. Any other
# error from Redis is a bug (a script error, a wrong type, a command refused by an ACL) and is
# raised as BackendError, never met with the fail mode. First the connection lost or never made,
# and a reply not in time:
OUTAGES = (
    rx.ConnectionError,  # BusyLoadingError (LOADING) among them
    rx.TimeoutError,
    rx.ClusterError,
    rx.RedisClusterException,
    OSError,
)
# Then Redis's refusals of a command it would run another time, told by the first word of its
# error reply, whatever class redis-py gives the error (most are a plain ResponseError):
REFUSALS = frozenset(
    {
        "NOREPLICAS",  # min-replicas-to-write: too few replicas in reach (one is gone)
        "MISCONF",  # stop-writes-on-bgsave-error: the last save to disk failed
        "BUSY",  # another client's script or function runs past busy-reply-threshold
        "LOADING",  # the dataset is still loading, after a restart
        "MASTERDOWN",  # a replica without its master, with replica-serve-stale-data no
        "READONLY",  # a replica not yet told it is the master, in a failover
        "TRYAGAIN",  # a Cluster slot being moved
        "CLUSTERDOWN",  # a Cluster slot without a master
        # Over maxmemory under noeviction (the policy to use, see the README) Redis refuses every
        # write: nothing can be counted, so nothing is, until it has room again.
        "OOM",
    }
)
# Before redis-py 8 an error has no status_code: the reply's first word starts its message
# (after what a pipeline adds), but for those it has a class for, whose message lacks it
# (LOADING, MASTERDOWN and CLUSTERDOWN have theirs among the OUTAGES).
_REFUSED = (rx.OutOfMemoryError, rx.ReadOnlyError, rx.TryAgainError)
_IN_PIPELINE = "of pipeline caused error: "
T = TypeVar("T")

# Eviction policies that may delete counters (allkeys-*) or counters alone (volatile-*).
SAFE_POLICY = "noeviction"


def _failure(exc: BaseException, partial: bool) -> BackendUnavailable | BackendError | ConfigError:
    """What an exception from the client means: an outage, a bug to raise, or a storage URL
    that names a database Redis does not have (which only its first command can tell)."""
    if isinstance(exc, BackendUnavailable | BackendError | ConfigError):
        return exc  # told already (_sync_client's): not the client failing
    if isinstance(exc, rx.ResponseError) and "DB index is out of range" in str(exc):
        return ConfigError(
            f"Redis has no such database ({exc}): the storage URL's database must be below its "
            "`databases` setting (16 by default), as in redis://localhost:6379/0"
        )
    if isinstance(exc, OUTAGES) or _refused(exc):
        return BackendUnavailable(f"{type(exc).__name__}: {_clients_named(str(exc))}", partial=partial)
    if isinstance(exc, rx.RedisError):
        return BackendError(f"Redis answered with an error: {type(exc).__name__}: {exc}")
    # Not Redis's answer but the client library failing mid-call (seen: an AttributeError
    # inside redis.asyncio during a Cluster failover). It says nothing about our counters:
    # treat it as an outage of this call, and log it so that it is seen.
    log.error("smsguard: the Redis client failed: %r", exc, exc_info=exc)
    return BackendUnavailable(f"{type(exc).__name__} in the Redis client: {exc}", partial=partial)


_CLIENT_AT = re.compile(r"host=([^,>)]+),port=(\d+)")


def _clients_named(text: str) -> str:
    """``text`` with each Redis client's repr (``<redis.client.Redis(<...ConnectionPool(...)>)>``,
    hundreds of characters) as its ``host:port``: a Sentinel's "no master found" names each
    sentinel it asked so."""
    out, done = [], 0
    while (start := text.find("<redis.", done)) >= 0:
        depth = 0
        for end in range(start, len(text)):
            depth += {"<": 1, ">": -1}.get(text[end], 0)
            if depth == 0:
                break
        else:
            break  # unbalanced: left as it is
        where = _CLIENT_AT.search(text, start, end)
        out += [text[done:start], f"{where[1]}:{where[2]}" if where else "a Redis client"]
        done = end + 1
    return "".join(out) + text[done:]


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a command for now (see REFUSALS)."""
    if not isinstance(exc, rx.ResponseError):
        return False
    code = getattr(exc, "status_code", None)  # the reply's first word, from redis-py 8
    if code is None:
        if isinstance(exc, _REFUSED):
            return True
        code = str(exc).rpartition(_IN_PIPELINE)[2].split(" ", 1)[0]
    return code in REFUSALS


class RedisBackend:
    """Counters in Redis sorted sets of hit times, one per subject (a number, a client network),
    which serves every window of it: member the attempt's token, score when it was taken.

    Build it from a URL (``RedisBackend.from_url("redis://localhost:6379/0")``) or from
    redis-py clients you already have: ``client`` for ``Guard.check``, ``aclient`` (a
    ``redis.asyncio`` client) for ``Guard.acheck``. Every key starts with ``prefix``.

    At first use it reads ``maxmemory-policy`` and logs a warning for anything but
    ``noeviction``: an evicting Redis may drop a victim's count (``allkeys-*``, ``volatile-*``)
    and the emergency switch (``allkeys-*``).

    An async Cluster client's nodes hand out at most ``max_connections`` connections each and
    never wait for one: its calls queue here for up to ``pool_timeout`` seconds instead, one
    fewer at a time than that bound (see ``_Gate``).
    """

    shared = True

    def __init__(
        self,
        client: Any = None,
        *,
        aclient: Any = None,
        prefix: str = "smsguard:",
        cluster: bool | None = None,
        make_client: Callable[[], Any] | None = None,
        make_aclient: Callable[[], Any] | None = None,
        pool_timeout: float = 10.0,
    ) -> None:
        if client is None and aclient is None and make_client is None and make_aclient is None:
            raise ConfigError("RedisBackend needs a client, an aclient, or RedisBackend.from_url(url)")
        self.prefix = prefix
        self._client = client
        self._make_client = make_client
        self._aclient = aclient
        self._make_aclient = make_aclient
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._sha: str | None = None
        self._packed = False  # EVALSHA packed once by hiredis, sent on a held connection
        self._idle: list[Any] = []  # that connection, between decisions (see _evalsha)
        self._policy_checked = False
        self._batches: weakref.WeakKeyDictionary[Any, _Batches] = weakref.WeakKeyDictionary()
        self._pool_timeout = pool_timeout
        self._gates: weakref.WeakKeyDictionary[Any, _Gate | contextlib.nullcontext[None]] = (
            weakref.WeakKeyDictionary()
        )
        if cluster is None:
            cluster = isinstance(client, redis.cluster.RedisCluster) or isinstance(
                aclient, redis.asyncio.cluster.RedisCluster
            )
        self.cluster = cluster
        """True for a Redis Cluster: counters are then consumed slot by slot."""
        self.wire = Wire(prefix, cluster)
        """The requests of each call and what their replies mean, for either client."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "smsguard:",
        timeout: float = 0.5,
        connect_timeout: float = 2.0,
        max_connections: int = 64,
        pool_timeout: float = 10.0,
        **options: Any,
    ) -> RedisBackend:
        """A backend for ``url``, in the URL conventions of the ``limits`` library.

        ``redis://``, ``rediss://``, ``unix://`` or ``redis+unix://`` (single node),
        ``redis+sentinel://[:password@]host:port[,host:port]/service_name``,
        ``redis+cluster://[:password@]host:port[,host:port]``; ``valkey`` for ``redis`` in any
        of them. ``options`` go to the redis-py client.

        Three waits, three bounds. ``timeout`` bounds Redis's answer to a command: short on
        purpose, since a Redis that does not answer should meet the guard's fail mode, not hold
        the request. ``connect_timeout`` bounds opening a connection, which takes several round
        trips and, in a burst, waits on a busy event loop: longer, and a Redis that is down
        refuses at once anyway. A single node gets a blocking pool of ``max_connections``, and a
        burst queues for a connection up to ``pool_timeout``: that is this process being busy,
        not Redis being down. A Cluster's async client opens up to ``max_connections`` to each
        node, and a burst of its calls queues alike.
        """
        found = redis_clients.of_url(
            url, timeout, connect_timeout, max_connections, pool_timeout, options, _hiredis_packing
        )
        packed = found.pop("packed", False)
        made = cls(prefix=prefix, **found)
        made._packed = packed and _pack_command is not None
        return made

    # -- the Backend protocol ----------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        one = self.wire.one(job)
        if one is None:
            return self._drive(self.wire.run(job))
        # One request, sent straight: no generator to drive (a decision's common path).
        request, order = one
        return self.wire.outcome(job, self._sent(self._sync_client(), request), order)

    async def arun(self, job: Job) -> Outcome:
        one = None if self.cluster else self.wire.one(job)
        if one is None:  # a Cluster's calls pass its gate (``_adrive``)
            return await self._adrive(self.wire.run(job))
        # One request, sent straight, as ``run`` does: no generator to drive.
        request, order = one
        client = self._loop_client()
        await self._apolicy(client)
        return self.wire.outcome(job, await self._asent(client, request), order)

    def apply(self, changes: Sequence[Change]) -> None:
        self._drive(self.wire.apply(changes))

    async def aapply(self, changes: Sequence[Change]) -> None:
        await self._adrive(self.wire.apply(changes))

    def read(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        return self._drive(self.wire.read(keys))

    async def aread(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        return await self._adrive(self.wire.read(keys))

    def note(self, key: str) -> str | None:
        """The text a ``Note`` left under ``key``, or None."""
        return self._drive(self.wire.note(key))

    @property
    def sync(self) -> bool:
        """True when it has a sync client, or can make one (``check``, ``diagnose``)."""
        return self._client is not None or self._make_client is not None

    def diagnose(self, now: float) -> list[tuple[str, bool, str]]:
        """What ``smsguard check`` reports: (check, passed, detail) for the connection, the
        script, the eviction policy, and the app's clock (``now``) against Redis's ``TIME``."""
        try:
            client = self._sync_client()
            client.ping()
        except Exception as exc:
            return [("backend answers", False, str(_failure(exc, False)))]
        found: list[tuple[str, bool, str]] = [("backend answers", True, "PING: PONG")]
        try:
            sha = self._sha or self._load(client)
            loaded = all(client.script_exists(sha))
            found.append(("script loaded", loaded, sha))
        except Exception as exc:
            found.append(("script loaded", False, str(exc)))
        try:
            policies = set(_policies(client.config_get("maxmemory-policy")))
            safe = policies <= {SAFE_POLICY}
            found.append(("maxmemory-policy", safe, ", ".join(sorted(policies)) or "unknown"))
        except rx.ResponseError:
            found.append(("maxmemory-policy", True, "CONFIG is off limits here: not checked"))
        try:
            seconds, micros = _redis_time(client.time())
            skew = now - (seconds + micros / 1e6)
            found.append(("clock", abs(skew) < 1.0, f"app clock - Redis TIME = {skew:+.3f} s"))
        except Exception as exc:
            found.append(("clock", False, str(exc)))
        return found

    def clear(self) -> None:
        """Delete every key under this backend's prefix."""
        client = self._sync_client()
        try:
            pattern = _glob_escape(self.prefix) + "*"
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):  # one key a DEL: keys may span cluster slots
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + 500]:
                    pipe.delete(key)
                pipe.execute()
        except Exception as exc:
            raise _failure(exc, False) from exc

    # -- the I/O of a step: the only code that differs between sync and async -------------

    def _drive(self, steps: Generator[Request, Any, T]) -> T:
        client = self._sync_client()
        return drive(steps, functools.partial(self._sent, client))

    async def _adrive(self, steps: Generator[Request, Any, T]) -> T:
        client = self._loop_client()
        async with self._gate(client):
            await self._apolicy(client)
            return await adrive(steps, functools.partial(self._asent, client))

    def _sent(self, client: Any, request: Request) -> Any:
        """Redis's answer to ``request``; what its failure means (an outage, or a bug) raised."""
        try:
            return self._send(client, request)
        except Exception as exc:
            raise _failure(exc, self.cluster) from exc

    async def _asent(self, client: Any, request: Request) -> Any:
        try:
            return await self._asend(client, request)
        except Exception as exc:
            raise _failure(exc, self.cluster) from exc

    def _send(self, client: Any, request: Request) -> Any:
        kind = request[0]
        if kind == "eval":
            _, keys, args = request
            evalsha = self._evalsha if self._packed else client.evalsha
            try:
                return evalsha(self._sha or self._load(client), len(keys), *keys, *args)
            except rx.NoScriptError:  # Redis restarted or flushed its scripts: load, then retry once
                return evalsha(self._load(client), len(keys), *keys, *args)
        if kind == "scan":
            return list(client.scan_iter(match=request[1], count=1000))
        return self.wire.pipeline(client.pipeline(transaction=False), request).execute()

    def _evalsha(self, *command: Any) -> Any:
        """``client.evalsha(*command)`` without redis-py's command path: the arguments packed in
        one call of hiredis (redis-py encodes them one at a time in Python first), sent and read
        on the connection this backend holds between decisions (a pool's get and release cost
        more than the rest of the client's work on an EVALSHA). A connection error is tried once
        more on a fresh connection, as the client's own Retry would (``redis_clients._RETRY_ON``).

        The connection held is the last one used, taken by one decision at a time: a decision
        that finds it taken (threads) borrows one from the pool. One made before a fork is left
        to the parent: the child's pool opens its own, as redis-py's would."""
        packed = [_pack_command(("EVALSHA", *command))]  # type: ignore[misc]  # set: see from_url
        idle = self._idle
        try:
            connection = idle.pop()  # atomic: two threads never take the same one
            if connection.pid != os.getpid():  # forked: its socket is the parent's
                raise IndexError
        except IndexError:
            connection = self._client.connection_pool.get_connection()
        try:
            try:
                connection.send_packed_command(packed)
                return connection.read_response()
            except rx.ConnectionError:
                connection.disconnect()
                connection.send_packed_command(packed)
                return connection.read_response()
        except rx.ResponseError:
            raise  # an error reply, read whole: the connection stays usable
        except BaseException:
            connection.disconnect()  # its state unknown: never reused as it is
            raise
        finally:
            if idle:
                self._client.connection_pool.release(connection)
            else:
                idle.append(connection)

    async def _asend(self, client: Any, request: Request) -> Any:
        kind = request[0]
        if kind == "eval":
            _, keys, args = request
            if not self.cluster:  # concurrent decisions share round trips (see _Batches)
                return await self._batches_of(client).eval(keys, args)
            return await self._aeval(client, keys, args)
        if kind == "scan":
            return [key async for key in client.scan_iter(match=request[1], count=1000)]
        return await self.wire.pipeline(client.pipeline(transaction=False), request).execute()

    async def _aeval(self, client: Any, keys: list[Any], args: list[Any]) -> Any:
        """One EVALSHA, the script loaded again if Redis lost it."""
        try:
            return await client.evalsha(self._sha or await self._aload(client), len(keys), *keys, *args)
        except rx.NoScriptError:
            return await client.evalsha(await self._aload(client), len(keys), *keys, *args)

    async def _aevals(self, client: Any, calls: list[tuple[list[Any], list[Any]]]) -> list[Any]:
        """Several EVALSHAs in one pipeline (one round trip), each still its own atomic script;
        a reply is an exception where that script failed."""
        sha = self._sha or await self._aload(client)
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, rx.NoScriptError)]
        if lost:  # Redis restarted or flushed its scripts: load, then those again, once
            await self._aload(client)
            for i in lost:
                try:
                    replies[i] = await self._aeval(client, *calls[i])
                except Exception as exc:
                    replies[i] = exc
        return replies

    def _batches_of(self, client: Any) -> _Batches:
        batches = self._batches.get(client)
        if batches is None:
            batches = self._batches[client] = _Batches(self, client)
        return batches

    # -- clients ------------------------------------------------------------------------

    def _load(self, client: Any) -> str:
        self._sha = client.script_load(SCRIPT)
        return self._sha

    async def _aload(self, client: Any) -> str:
        self._sha = await client.script_load(SCRIPT)
        return self._sha

    def _sync_client(self) -> Any:
        if self._client is None:
            if self._make_client is None:
                raise ConfigError("this RedisBackend has only an async client: use the async methods")
            try:
                self._client = self._make_client()  # a cluster client connects when built
            except Exception as exc:
                raise _failure(exc, False) from exc
        if not self._policy_checked:
            self._policy_checked = True
            _warn_if_evicting(self._read_policy(lambda: self._client.config_get("maxmemory-policy")))
        return self._client

    def _loop_client(self) -> Any:
        """The async client of the running event loop (redis.asyncio clients are loop-bound)."""
        client = self._aclient
        if client is None:
            if self._make_aclient is None:
                raise ConfigError("this RedisBackend has only a sync client: use the sync methods")
            loop = asyncio.get_running_loop()
            client = self._aclients.get(loop)
            if client is None:
                try:
                    client = self._aclients[loop] = self._make_aclient()
                except Exception as exc:
                    raise _failure(exc, False) from exc
        return client

    async def _apolicy(self, client: Any) -> None:
        """Warn once, at first use, if Redis may evict smsguard's keys."""
        if not self._policy_checked:
            self._policy_checked = True  # before the await: concurrent first calls ask once
            try:
                answer = await client.config_get("maxmemory-policy")
            except Exception as exc:
                answer = self._unread_policy(exc)
            _warn_if_evicting(answer)

    def _gate(self, client: Any) -> _Gate | contextlib.nullcontext[None]:
        """What a call of ``client`` passes through first: a Cluster client's ``_Gate``."""
        gate = self._gates.get(client)
        if gate is None:
            limit = getattr(client, "connection_kwargs", {}).get("max_connections")
            if not self.cluster or not isinstance(limit, int):
                gate = contextlib.nullcontext()
            else:
                gate = _Gate(max(limit - 1, 1), self._pool_timeout)
            self._gates[client] = gate
        return gate

    def _read_policy(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception as exc:
            return self._unread_policy(exc)

    def _unread_policy(self, exc: Exception) -> dict[str, Any]:
        """What a CONFIG GET that failed with ``exc`` leaves: nothing, if CONFIG is off limits
        (many managed Redis: taken on trust); else ``exc`` raised as what it means, and the
        policy asked again next time."""
        if isinstance(exc, rx.ResponseError) and not _refused(exc):
            return {}
        self._policy_checked = False
        raise _failure(exc, self.cluster) from exc


class _Gate:
    """The calls of one async Cluster client under way at once: at most one fewer than the
    connections its nodes may each open (``max_connections``). A node of redis.asyncio's
    Cluster client never waits for a free connection: past that bound it raises
    MaxConnectionsError, a ConnectionError, which would meet the fail mode while Redis answers
    (under ``local``, a burst's surplus counted in process from nothing: admitted over the
    cap). So the surplus queues here, as it does for a single node's blocking pool, up to
    ``timeout`` seconds. A call takes at most one connection of a node at a time (its requests
    go one after another; a pipeline, one connection per node), and the client's own topology
    refresh, one at a time under its lock, takes the one left over."""

    def __init__(self, size: int, timeout: float) -> None:
        self._free = asyncio.Semaphore(size)
        self._timeout = timeout

    async def __aenter__(self) -> None:
        try:
            await asyncio.wait_for(self._free.acquire(), self._timeout)
        except (asyncio.TimeoutError, TimeoutError):
            # Redis answers the calls ahead of this one: this call alone meets the fail mode.
            raise BackendUnavailable(
                f"no Redis Cluster connection free within pool_timeout ({self._timeout} s)",
                partial=True,
            ) from None

    async def __aexit__(self, *exc_info: object) -> None:
        self._free.release()


_Waiting = tuple[list[Any], list[Any], "asyncio.Future[Any]"]
"""A decision waiting for the wire: its EVALSHA's keys and arguments, and its reply to come."""

# What a stalled Redis looks like to a round trip: no answer (or no connection) within its bound.
_STALLS = (rx.TimeoutError, TimeoutError)


class _Batches:
    """The decisions of one async client (one event loop) travel together: while a round trip is
    on the wire, the decisions that arrive wait, then go in one pipeline of EVALSHAs, each still
    its own all-or-nothing script. A decision that finds nothing on the wire is sent at once,
    alone: without concurrency nothing waits.

    Two round trips may be on the wire at once, each carrying about half of the decisions under
    way. With one, the app and Redis took turns: the app idle while Redis ran a batch, Redis idle
    while the app planned the next. With two, the app plans one half while Redis runs the other.
    So a second round trip goes once as many decisions wait as the first carries, taking half
    of all under way, and the rest go when one lands: halves whatever the concurrency, and no
    more round trips than one a half.

    A round trip that times out is a stall: the decisions waiting behind it fail with it, at
    once, as an outage, never sent. Redis would answer them no sooner, and a decision is bounded
    by one timeout, not by the stalled round trip's and then its own."""

    def __init__(self, backend: RedisBackend, client: Any) -> None:
        self.backend, self.client = backend, client
        self.waiting: list[_Waiting] = []  # never any while nothing is on the wire
        self.flying: list[int] = []  # the decisions in each round trip on the wire
        self._tasks: set[asyncio.Task[None]] = set()  # held, so that none is collected mid-flight

    async def eval(self, keys: list[Any], args: list[Any]) -> Any:
        if self.flying:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.waiting.append((keys, args, future))
            self._next()
            return await future
        self.flying.append(1)
        stalled = None
        try:
            return await self.backend._aeval(self.client, keys, args)
        except _STALLS as exc:
            stalled = exc
            raise
        finally:
            self._landed(1, stalled)

    def _next(self) -> None:
        """Send what waits if it is time: all of it when nothing is on the wire; with one round
        trip on it, half of the decisions under way once that many wait."""
        waiting = len(self.waiting)
        if not waiting or len(self.flying) > 1:
            return
        size = (self.flying[0] + waiting + 1) // 2 if self.flying else waiting
        if size > waiting:
            return
        batch, self.waiting = self.waiting[:size], self.waiting[size:]
        self.flying.append(size)
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _landed(self, size: int, stalled: Exception | None) -> None:
        """A round trip of ``size`` decisions is off the wire: send what waits, if it is time;
        after one that ``stalled``, fail what waits instead."""
        self.flying.remove(size)
        if stalled is None:
            self._next()
        elif self.waiting:
            batch, self.waiting = self.waiting, []
            _fail(batch, rx.TimeoutError(f"queued behind a round trip that timed out: {stalled}"))

    async def _send(self, batch: list[_Waiting]) -> None:
        stalled = None
        try:
            replies = await self.backend._aevals(self.client, [(keys, args) for keys, args, _ in batch])
        except Exception as exc:  # the round trip failed: every decision in it meets it
            if isinstance(exc, _STALLS):
                stalled = exc
            _fail(batch, exc)
        except BaseException:  # cancelled (the loop is closing): so are the decisions waiting
            for *_, future in batch:
                future.cancel()
            raise
        else:
            for (*_, future), reply in zip(batch, replies, strict=True):
                if future.done():  # its caller gave up waiting (cancelled)
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            self._landed(len(batch), stalled)


def _fail(batch: list[_Waiting], exc: Exception) -> None:
    """Answer every decision of ``batch`` still awaited with ``exc``."""
    for *_, future in batch:
        if not future.done():
            future.set_exception(exc)


class _HiredisPacking:
    """A redis.asyncio connection that packs commands with hiredis, as redis-py's sync client
    does: redis.asyncio packs them in Python an argument at a time, and a decision's EVALSHA
    carries a couple of dozen (about a fifth of an async decision's time). The same bytes."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " not in args[0]:
            try:
                return [_pack_command(args)]  # type: ignore[misc]  # set: see _hiredis_packing
            except TypeError:  # not str, bytes, int or float: redis-py's rules (or its error)
                pass
        return super().pack_command(*args)  # type: ignore[misc, no-any-return]


@functools.cache
def _packing(connection_class: type) -> type:
    return type(connection_class.__name__, (_HiredisPacking, connection_class), {})


def _hiredis_packing(pool: Any) -> Any:
    """``pool`` (redis.asyncio, one node: TCP, TLS or a socket), its connections packing with
    hiredis when it is installed."""
    if _pack_command is not None:
        pool.connection_class = _packing(pool.connection_class)
    return pool


def _warn_if_evicting(answer: Any) -> None:
    """Warn if Redis may evict smsguard's keys."""
    policies = set(_policies(answer)) - {SAFE_POLICY}
    if policies:
        log.warning(
            "smsguard: Redis maxmemory-policy is %s: under memory pressure Redis may evict "
            "counters (a victim's daily count)%s. Set maxmemory-policy noeviction: smsguard then "
            "refuses to count when Redis is full and follows its fail mode.",
            ", ".join(sorted(policies)),
            " and the emergency switch and list entries"
            if any(p.startswith("allkeys") for p in policies)
            else "",
        )


def _redis_time(answer: Any) -> tuple[int, int]:
    """A TIME answer as (seconds, microseconds); a cluster client's may be per node."""
    if isinstance(answer, dict):
        answer = next(iter(answer.values()))
    return int(answer[0]), int(answer[1])


def _policies(answer: Any) -> list[str]:
    """The maxmemory-policy values in a CONFIG GET answer (a cluster client's may be per node)."""
    if not isinstance(answer, dict):
        return []
    found = []
    for name, value in answer.items():
        if isinstance(value, dict):
            found += _policies(value)
        elif str(name).endswith("maxmemory-policy") and value:
            found.append(value.decode() if isinstance(value, bytes) else str(value))
    return found
