"""The Redis backend: one EVALSHA per decision, on a single node, Sentinel or Cluster.

The decision logic is written once, as generators that yield Redis requests and receive
their replies (``_steps_*``); ``run`` drives them with the sync client and ``arun`` with
``redis.asyncio``. So the sync and async paths differ only in how a request is sent.

Clock: the script trusts the app's clock (the Guard's, passed as ``now``), not Redis's
``TIME``. A decision then reads one clock for its calendar day and its windows alike, and
tests stay deterministic. App servers whose clocks differ by d seconds see a window up to
d seconds shorter or longer than each other: keep them on NTP (skew is then milliseconds).
Key TTLs are set relative to that clock, so skew between an app server and Redis never
expires a live hit early.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import weakref
from collections.abc import Callable, Generator, Sequence
from importlib import resources
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.retry
import redis.sentinel
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.crc import key_slot

from smsguard.drive import adrive, drive
from smsguard.errors import BackendError, BackendUnavailable, ConfigError
from smsguard.plan import Change, Counter, Flag, Forget, Job, Outcome, Receipt, Record, Tallied, taken

log = logging.getLogger("smsguard")

_pack_command: Callable[..., bytes] | None
try:
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - the redis extra brings it
    _pack_command = None

SCRIPT = resources.files("smsguard.backends").joinpath("lua/consume.lua").read_text()

# A request to Redis: ("eval", keys, args) -> reply list; ("exists", keys) -> [0 | 1, ...];
# ("scan", pattern) -> [key, ...]; ("types", keys) -> [type, ...]; ("apply", changes, keys) ->
# None (one pipeline: DEL per key, ZREM per refunded hit, SET or DEL per flag).
Request = tuple[Any, ...]

# redis-py leaves these untyped; naming them Any keeps mypy --strict honest elsewhere.
_ClusterNode: Any = redis.cluster.ClusterNode
_AsyncClusterNode: Any = redis.asyncio.cluster.ClusterNode
_Sentinel: Any = redis.sentinel.Sentinel
_AsyncSentinel: Any = redis.asyncio.sentinel.Sentinel

# What "Redis cannot answer now" looks like: the guard answers it with its fail mode. An OOM
# refusal is one (over maxmemory nothing can be counted, so nothing is), and so is a replica
# that has not yet learnt it is a master. Any other error from Redis is a bug (a script error,
# a wrong type) and is raised as BackendError, never met with the fail mode.
OUTAGES = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.OutOfMemoryError,
    rx.ReadOnlyError,
    rx.BusyLoadingError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.MasterDownError,
    rx.ClusterError,
    rx.RedisClusterException,
    OSError,
)
T = TypeVar("T")
Steps = Generator[Request, Any, Outcome]

# Retry once, at once, when a pooled connection turns out dead (Redis restarted): that is no
# outage. Never on a timeout: the script may have run, and a stalled Redis must not be waited
# for twice.
_RETRY_ON = (rx.ConnectionError,)

# Eviction policies that may delete counters (allkeys-*) or counters alone (volatile-*).
SAFE_POLICY = "noeviction"


def _failure(exc: BaseException, partial: bool) -> BackendUnavailable | BackendError:
    """What an exception from the client means: an outage, or a bug to raise."""
    if isinstance(exc, OUTAGES):
        return BackendUnavailable(f"{type(exc).__name__}: {exc}", partial=partial)
    if isinstance(exc, rx.RedisError):
        return BackendError(f"Redis answered with an error: {type(exc).__name__}: {exc}")
    # Not Redis's answer but the client library failing mid-call (seen: an AttributeError
    # inside redis.asyncio during a Cluster failover). It says nothing about our counters:
    # treat it as an outage of this call, and log it so that it is seen.
    log.error("smsguard: the Redis client failed: %r", exc, exc_info=exc)
    return BackendUnavailable(f"{type(exc).__name__} in the Redis client: {exc}", partial=partial)


class RedisBackend:
    """Counters in Redis sorted sets of hit times, one per subject (a number, a client network),
    which serves every window of it: member the attempt's token, score when it was taken.

    Build it from a URL (``RedisBackend.from_url("redis://localhost:6379/0")``) or from
    redis-py clients you already have: ``client`` for ``Guard.check``, ``aclient`` (a
    ``redis.asyncio`` client) for ``Guard.acheck``. Every key starts with ``prefix``.

    At first use it reads ``maxmemory-policy`` and logs a warning for anything but
    ``noeviction``: an evicting Redis may drop a victim's count (``allkeys-*``, ``volatile-*``)
    and the emergency switch (``allkeys-*``).
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
        self._policy_checked = False
        self._batches: weakref.WeakKeyDictionary[Any, _Batches] = weakref.WeakKeyDictionary()
        if cluster is None:
            cluster = isinstance(client, redis.cluster.RedisCluster) or isinstance(
                aclient, redis.asyncio.cluster.RedisCluster
            )
        self.cluster = cluster
        """True for a Redis Cluster: counters are then consumed slot by slot."""

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
        not Redis being down.
        """
        scheme, url = _scheme(url)
        settings: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout}
        settings.update(options)
        retry = settings.pop("retry", None)
        sync_retry = retry or redis.retry.Retry(NoBackoff(), 1, _RETRY_ON)
        async_retry = retry or redis.asyncio.retry.Retry(NoBackoff(), 1, _RETRY_ON)
        if scheme in ("redis", "rediss", "unix"):
            pooled = {**settings, "max_connections": max_connections, "timeout": pool_timeout}
            return cls(
                prefix=prefix,
                make_client=lambda: redis.Redis(
                    connection_pool=redis.BlockingConnectionPool.from_url(url, retry=sync_retry, **pooled)
                ),
                make_aclient=lambda: redis.asyncio.Redis(
                    connection_pool=_hiredis_packing(
                        redis.asyncio.BlockingConnectionPool.from_url(url, retry=async_retry, **pooled)
                    )
                ),
            )
        password, hosts, path = _locations(url)
        if password:
            settings.setdefault("password", password)
        if scheme == "redis+cluster":
            return cls(
                prefix=prefix,
                cluster=True,
                make_client=lambda: redis.cluster.RedisCluster(
                    startup_nodes=[_ClusterNode(h, p) for h, p in hosts], **settings
                ),
                make_aclient=lambda: redis.asyncio.cluster.RedisCluster(
                    startup_nodes=[_AsyncClusterNode(h, p) for h, p in hosts], **settings
                ),
            )
        service = path.strip("/")  # redis+sentinel, as _scheme let nothing else through
        if not service:
            raise ConfigError(f"{url!r} names no service: redis+sentinel://host:port/service_name")
        sentinel_kwargs = {"socket_timeout": timeout, "password": password} if password else None
        return cls(
            prefix=prefix,
            make_client=lambda: _Sentinel(
                hosts, sentinel_kwargs=sentinel_kwargs, retry=sync_retry, **settings
            ).master_for(service),
            make_aclient=lambda: _AsyncSentinel(
                hosts, sentinel_kwargs=sentinel_kwargs, retry=async_retry, **settings
            ).master_for(service),
        )

    # -- the Backend protocol ----------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        return self._drive(self._steps_run(job))

    async def arun(self, job: Job) -> Outcome:
        return await self._adrive(self._steps_run(job))

    def apply(self, changes: Sequence[Change]) -> None:
        self._drive(self._steps_apply(changes))

    async def aapply(self, changes: Sequence[Change]) -> None:
        await self._adrive(self._steps_apply(changes))

    def read(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        return self._drive(self._steps_read(keys))

    async def aread(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        return await self._adrive(self._steps_read(keys))

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

    # -- the logic, written once -------------------------------------------------------

    def _steps_run(self, job: Job) -> Steps:
        if not self.cluster:
            request, order = self._eval(job, job.flags, job.counters, commit=job.commit)
            reply = yield request
            return _outcome(reply, len(job.flags), job.counters, order, job.now)
        # A cluster script may touch one slot only. Flags are read first; then the
        # counters go slot by slot, each slot all-or-none, and a later slot's denial
        # refunds the earlier ones: a hit may be held for a moment, never over-admitted.
        shadowed: list[int] = []
        if job.flags:
            found = yield ("exists", [self.prefix + f.key for f in job.flags])
            for i, hit in enumerate(found):
                if hit:
                    if not job.flags[i].shadow:
                        return Outcome(i, shadowed=tuple(shadowed))
                    shadowed.append(i)
        nflags = len(job.flags)
        counts = [0] * len(job.counters)
        waits = [0.0] * len(job.counters)
        took: list[Counter] = []
        full = False
        for indexes in _by_slot(job.counters):
            group = tuple(job.counters[i] for i in indexes)
            # Once one is full, the other slots are only checked (nothing written), so that
            # the denial names the counter that frees last, as on a single node.
            request, order = self._eval(job, (), group, commit=job.commit and not full)
            reply = yield request
            out = _outcome(reply, 0, group, order, job.now)
            for k, i in enumerate(indexes):
                counts[i] = out.counts[k]
                if out.waits:
                    waits[i] = out.waits[k]
            shadowed += (nflags + indexes[k] for k in out.shadowed)
            if out.waits:
                full = True
            elif not full and job.commit:
                took.extend(taken(group, 0, out.shadowed, out.counts))
        if full and took:
            yield from self._steps_apply((Receipt(job.token, tuple(took)),))
        return Outcome(-1, tuple(counts), tuple(waits) if full else (), tuple(sorted(shadowed)))

    def _steps_apply(self, changes: Sequence[Change]) -> Steps:
        # A forgotten subject's keys are found first (a scan, every node of a cluster), then
        # deleted with the other changes, counters only: its list entries are not counters.
        forgotten: list[Any] = []
        for change in changes:
            if isinstance(change, Forget):
                keys = yield ("scan", f"{_glob_escape(self.prefix)}*{{{_glob_escape(change.subject)}}}*")
                if keys:
                    types = yield ("types", keys)
                    forgotten += [
                        key for key, kind in zip(keys, types, strict=True) if kind in (b"zset", "zset")
                    ]
        if changes:
            yield ("apply", changes, forgotten)
        return Outcome()

    def _steps_read(self, keys: Sequence[str]) -> Generator[Request, Any, list[dict[str, int]]]:
        replies = yield ("read", [self.prefix + key for key in keys])
        return [{_text(name): int(n) for name, n in reply.items()} for reply in replies]

    def _eval(
        self, job: Job, flags: Sequence[Flag], counters: Sequence[Counter], *, commit: bool = True
    ) -> tuple[Request, list[int]]:
        """The EVALSHA arguments for one script call, built once for either client, and the
        order the script sees ``counters`` in (grouped by the key that holds their hits)."""
        prefix = self.prefix
        now = job.now
        keys = [prefix + f.key for f in flags]
        groups = _groups(counters)
        args: list[Any] = [repr(now), job.token, len(flags), len(groups), int(commit), _score(now)]
        args += (int(f.shadow) for f in flags)
        extras: list[Any] = []  # keys the counters refer to, after the groups' keys
        order: list[int] = []
        for name, tag, members in groups:
            keys.append(prefix + name)
            head = len(args)
            args += (len(members), 0, "", tag + ":" if isinstance(tag, str) else "")
            least, last = (math.inf, ""), now  # the least bound, and its score
            for i in members:
                c = counters[i]
                window = _window(c, now)
                if window is None:  # a fixed period: negative
                    bound, limit = (0.0 if c.since is None else c.since), -c.limit
                else:
                    bound, limit = _first_counted(now, window), c.limit
                score = _score(bound)
                least = min(least, (bound, score))
                last = max(last, c.expires_at)
                if c.shadow or c.amount or c.unless is not None or c.earn is not None:
                    marks = []
                    for mark in (c.unless, c.earn):
                        if mark is None:
                            marks.append(0)
                        else:
                            extras.append(prefix + mark)
                            marks.append(len(flags) + len(groups) + len(extras))  # its index in KEYS
                    match = int(c.match is not None)
                    spec: Any = (
                        f"{limit} {c.shadow} {match} {marks[0]} {marks[1]} {c.per_earned!r} {c.amount}"
                    )
                elif c.match is not None:
                    spec = limit + (0.5 if limit > 0 else -0.5)  # a half more: it counts by the tag
                else:
                    spec = limit
                args += (spec, score)
            args[head + 1] = math.ceil((last - now) * 1000) + 1000
            args[head + 2] = least[1]  # the very string of that counter's bound: the script compares them
            order += members
        return ("eval", keys + extras, args), order

    # -- the I/O of a step: the only code that differs between sync and async -------------

    def _drive(self, steps: Generator[Request, Any, T]) -> T:
        client = self._sync_client()
        return drive(steps, functools.partial(self._sent, client))

    async def _adrive(self, steps: Generator[Request, Any, T]) -> T:
        client = await self._async_client()
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
            try:
                return client.evalsha(self._sha or self._load(client), len(keys), *keys, *args)
            except rx.NoScriptError:  # Redis restarted or flushed its scripts: load, then retry once
                return client.evalsha(self._load(client), len(keys), *keys, *args)
        if kind == "scan":
            return list(client.scan_iter(match=request[1], count=1000))
        return self._pipeline(client.pipeline(transaction=False), request).execute()

    async def _asend(self, client: Any, request: Request) -> Any:
        kind = request[0]
        if kind == "eval":
            _, keys, args = request
            if not self.cluster:  # concurrent decisions share round trips (see _Batches)
                return await self._batches_of(client).eval(keys, args)
            return await self._aeval(client, keys, args)
        if kind == "scan":
            return [key async for key in client.scan_iter(match=request[1], count=1000)]
        return await self._pipeline(client.pipeline(transaction=False), request).execute()

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

    def _pipeline(self, pipe: Any, request: Request) -> Any:
        """Queue an "exists" or "apply" request on ``pipe`` (sync or async alike)."""
        kind, items, *forgotten = request
        if kind in ("exists", "types", "read"):
            command = {"exists": pipe.exists, "types": pipe.type, "read": pipe.hgetall}[kind]
            for key in items:
                command(key)
            return pipe
        for key in forgotten[0]:  # the counters of forgotten subjects, found by a scan
            pipe.delete(key)
        for change in items:
            if isinstance(change, Forget):
                continue
            if isinstance(change, Record):
                # A mark's score is when it expires; the script counts those after now. The ones
                # up to now go as the set is written, so a set written again and again (a
                # country's earnings) holds its live marks, and its TTL drops the last of them.
                for counter in change.counters:
                    key = self.prefix + counter.key
                    pipe.zremrangebyscore(key, "-inf", repr(change.now))
                    pipe.zadd(key, {change.token: counter.expires_at})
                    pipe.pexpire(key, math.ceil((counter.expires_at - change.now) * 1000) + 1000)
            elif isinstance(change, Tallied):
                key = self.prefix + change.key
                for name, n in change.counts:
                    pipe.hincrby(key, name, n)
                pipe.pexpire(key, math.ceil((change.expires_at - change.now) * 1000))
            elif isinstance(change, Receipt):
                for name, tag, _ in _groups(change.counters):
                    if tag is not False:  # a sum is not given back
                        member = change.token if tag is None else f"{tag}:{change.token}"
                        pipe.zrem(self.prefix + name, member)
            elif change.on:
                pipe.set(self.prefix + change.key, 1)
            else:
                pipe.delete(self.prefix + change.key)
        return pipe

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
            self._warn_if_evicting(self._read_policy(lambda: self._client.config_get("maxmemory-policy")))
        return self._client

    async def _async_client(self) -> Any:
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
        if not self._policy_checked:
            self._policy_checked = True  # before the await: concurrent first calls ask once
            try:
                answer = await client.config_get("maxmemory-policy")
            except rx.ResponseError:
                answer = {}
            except Exception as exc:
                self._policy_checked = False
                raise _failure(exc, self.cluster) from exc
            self._warn_if_evicting(answer)
        return client

    def _read_policy(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except rx.ResponseError:  # CONFIG is off limits (many managed Redis): taken on trust
            return {}
        except Exception as exc:
            self._policy_checked = False
            raise _failure(exc, self.cluster) from exc

    def _warn_if_evicting(self, answer: Any) -> None:
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


_Waiting = tuple[list[Any], list[Any], "asyncio.Future[Any]"]
"""A decision waiting for the wire: its EVALSHA's keys and arguments, and its reply to come."""

# What a stalled Redis looks like to a round trip: no answer (or no connection) within its bound.
_STALLS = (rx.TimeoutError, TimeoutError)


class _Batches:
    """The decisions of one async client (one event loop) travel together: while a round trip is
    on the wire, the decisions that arrive wait, then go in one pipeline of EVALSHAs, each still
    its own all-or-nothing script. A decision that finds nothing on the wire is sent at once,
    alone: without concurrency nothing waits.

    A round trip that times out is a stall: the decisions waiting behind it fail with it, at
    once, as an outage, never sent. Redis would answer them no sooner, and a decision is bounded
    by one timeout, not by the stalled round trip's and then its own."""

    def __init__(self, backend: RedisBackend, client: Any) -> None:
        self.backend, self.client = backend, client
        self.waiting: list[_Waiting] = []
        self.sending = False
        self._tasks: set[asyncio.Task[None]] = set()  # held, so that none is collected mid-flight

    async def eval(self, keys: list[Any], args: list[Any]) -> Any:
        if self.sending:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.waiting.append((keys, args, future))
            return await future
        self.sending = True
        stalled = None
        try:
            return await self.backend._aeval(self.client, keys, args)
        except _STALLS as exc:
            stalled = exc
            raise
        finally:
            self._next(stalled)

    def _next(self, stalled: Exception | None = None) -> None:
        """Send what waited (in a task: the caller that finished has its answer), or rest; after
        a round trip that ``stalled``, fail what waited and rest."""
        if not self.waiting:
            self.sending = False
            return
        batch, self.waiting = self.waiting, []
        if stalled is not None:
            self.sending = False
            _fail(batch, rx.TimeoutError(f"queued behind a round trip that timed out: {stalled}"))
            return
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            self._next(stalled)


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


def _outcome(
    reply: Sequence[Any], nflags: int, counters: Sequence[Counter], order: list[int], now: float
) -> Outcome:
    """The Outcome in a script's reply for ``nflags`` flags and ``counters``, sent in ``order``
    (their indexes); a reply of another shape is a bug."""
    n = len(order)
    try:
        flag, nshadowed = int(reply[0]), int(reply[1])
        end = len(reply) - nshadowed
        shadowed = tuple(int(i) for i in reply[end:])
        middle = reply[2:end]
        if flag >= 0 and middle:
            raise ValueError("it counts after a flag")
        counts = tuple(int(c) for c in middle[:n])
        frees = middle[n:]
        if flag < 0 and (len(counts) != n or len(frees) not in (0, n)):
            raise ValueError(f"it does not fit {n} counters")
        if nshadowed < 0 or any(not 0 <= i < nflags + n for i in shadowed):
            raise ValueError("its shadowed items do not fit the job")
        waits = (
            tuple(_wait(counters[i], at, now) for i, at in zip(order, frees, strict=True)) if frees else ()
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise BackendError(f"unreadable script reply {reply!r}: {exc}") from None
    if order != sorted(order):  # back to the job's order
        sent = {at: i for i, at in enumerate(order)}
        counts = tuple(counts[sent[i]] for i in range(n)) if counts else ()
        waits = tuple(waits[sent[i]] for i in range(n)) if waits else ()
        shadowed = tuple(sorted(i if i < nflags else nflags + order[i - nflags] for i in shadowed))
    return Outcome(flag, counts, waits, shadowed)


_SOON = 1e-6


def _window(counter: Counter, now: float) -> float | None:
    """``counter``'s sliding window in seconds, or None for a fixed period (a calendar day; and a
    sum, which is kept per period)."""
    if counter.amount or counter.since is not None:
        return None
    return counter.expires_at - now if counter.window is None else counter.window


def _held(counter: Counter) -> str:
    """The key that holds ``counter``'s hits: its log, shared with the other windows of its
    subject, or its own key (a sum's always)."""
    return counter.key if counter.amount or counter.log is None else counter.log


def _wait(counter: Counter, frees: Any, now: float) -> float:
    """Seconds until ``counter`` frees a slot, from what the script says frees it: -1 (it is not
    full), or the score of the hit whose window end frees a slot (a sliding window). A fixed
    period (and a sum) frees when it ends. Worked out as the memory backend does, to the bit;
    never 0 for a counter the script found full (it took nothing: the attempt must be denied),
    which a clock outside the years of exact scores could otherwise round to."""
    if frees == -1:
        return 0.0
    window = _window(counter, now)
    if window is None:
        return max(counter.expires_at - now, _SOON)
    return max((float(frees) / _TICKS + _EPOCH) + window - now, _SOON)


# A hit's score in a log is its time t (epoch seconds) as (t - _EPOCH) * _TICKS: exact for t
# from _EPOCH / 2 to 2 * _EPOCH (1995 to 2072: the subtraction is exact there), and an integer
# from 2**30 (2004), since doubles there lie 2**-22 s apart or more. Redis keeps an integer
# score as an integer and compares it without parsing text, where a fractional time such as
# 1772409600.1234567 costs a strtod at every read of every hit: the dearest part of a decision,
# before this. (A clock outside those years, a test's, is still right to within rounding.)
_EPOCH = 1610612736.0  # 2**30 + 2**29
_TICKS = 4194304.0  # 2**22


def _score(t: float) -> str:
    """The score of a hit taken at ``t``, as Redis is given it. (Outside the years of exact
    scores, rounding may merge two times, never reorder them: a window may count a hit taken
    just before its bound, never leave one out.)"""
    scaled = (t - _EPOCH) * _TICKS
    return str(int(scaled)) if scaled.is_integer() else repr(scaled)


def _first_counted(now: float, window: float) -> float:
    """The earliest hit time t that a sliding window of ``window`` seconds counts at ``now``:
    ``t + window > now`` in floating point, the memory backend's own test, to the last bit."""
    t = now - window
    if t + window > now:
        while (earlier := math.nextafter(t, -math.inf)) + window > now:
            t = earlier
        return t
    while t + window <= now:
        t = math.nextafter(t, math.inf)
    return t


def _groups(counters: Sequence[Counter]) -> list[tuple[str, str | bool | None, list[int]]]:
    """``counters`` by the key that holds their hits, in order of first appearance: (key, tag,
    indexes). A log shared by several counters; else a counter's own key. The tag of a log is
    the ``match`` of its counters (None: none has one), False for a sum, which is alone."""
    groups: dict[str, tuple[str, str | bool | None, list[int]]] = {}
    for i, c in enumerate(counters):
        if c.amount:
            groups[c.key] = (c.key, False, [i])
            continue
        name = _held(c)
        group = groups.get(name)
        if group is None:
            groups[name] = (name, c.match, [i])
            continue
        if c.match is not None and group[1] != c.match:
            if group[1] is not None:
                raise BackendError(f"counters on the log {name!r} match two tags: {group[1]!r}, {c.match!r}")
            groups[name] = group = (name, c.match, group[2])
        group[2].append(i)
    return list(groups.values())


def _by_slot(counters: Sequence[Counter]) -> list[list[int]]:
    """Indexes of ``counters`` grouped by cluster slot, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(counters):
        groups.setdefault(key_slot(_held(c).encode()), []).append(i)
    return list(groups.values())


_SCHEMES = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
    "redis+unix": "unix",
    "redis+cluster": "redis+cluster",
    "redis+sentinel": "redis+sentinel",
}


def _scheme(url: str) -> tuple[str, str]:
    """(scheme, url) in redis-py's spelling, from any of limits' spellings (``valkey`` for
    ``redis``, ``redis+unix://``); a ConfigError naming the right form for anything else."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    canonical = _SCHEMES.get(scheme.replace("valkey", "redis", 1))
    if canonical is None:
        raise ConfigError(
            f"{url!r} is not a storage URL: use one such as redis://localhost:6379/0, "
            "rediss://, unix:///run/redis.sock, redis+sentinel://host:26379/service_name, "
            "redis+cluster://host:7000,host:7001 (valkey for redis in any) or memory://"
        )
    return canonical, canonical + url[len(scheme) :]


def _locations(url: str) -> tuple[str | None, list[tuple[str, int]], str]:
    """(password, [(host, port)], path) of a URL that may list several hosts."""
    rest = url.split("://", 1)[1]
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[-1]) or None
    hosts = []
    for location in netloc.split(","):
        host, _, port = location.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{url!r}: {location!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    return password, hosts, path


def _text(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
