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
import weakref
from collections.abc import Callable, Generator, Sequence
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.retry import Retry

from smsguard.backends.base import Counter, Flag, Job, Outcome, Receipt
from smsguard.errors import BackendUnavailable, ConfigError

SCRIPT = resources.files("smsguard.backends").joinpath("lua/consume.lua").read_text()

# A request to Redis: ("eval", keys, args) -> reply list; ("exists", keys) -> [0 | 1, ...];
# ("zrem", [(key, member), ...]) -> None.
Request = tuple[Any, ...]

# redis-py leaves these untyped; naming them Any keeps mypy --strict honest elsewhere.
_ClusterNode: Any = redis.cluster.ClusterNode
_AsyncClusterNode: Any = redis.asyncio.cluster.ClusterNode
_Sentinel: Any = redis.sentinel.Sentinel
_AsyncSentinel: Any = redis.asyncio.sentinel.Sentinel

# What "Redis cannot be reached" looks like; the guard answers it with its fail mode.
FAILURES = (RedisError, RedisClusterException, OSError)
Steps = Generator[Request, Any, Outcome]


class RedisBackend:
    """Counters in Redis sorted sets (member: attempt token, score: when the hit expires).

    Build it from a URL (``RedisBackend.from_url("redis://localhost:6379/0")``) or from
    redis-py clients you already have: ``client`` for ``Guard.check``, ``aclient`` (a
    ``redis.asyncio`` client) for ``Guard.acheck``. Every key starts with ``prefix``.
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
        connect_timeout: float = 0.5,
        max_connections: int = 64,
        **options: Any,
    ) -> RedisBackend:
        """A backend for ``url``, in the URL conventions of the ``limits`` library.

        ``redis://``, ``rediss://`` and ``unix://`` (single node),
        ``redis+sentinel://[:password@]host:port[,host:port]/service_name``,
        ``redis+cluster://[:password@]host:port[,host:port]``. Timeouts are short on purpose:
        a slow Redis should meet the guard's fail mode, not hold the request. ``options`` go
        to the redis-py client.

        A single node gets a blocking connection pool of ``max_connections``: a flood of
        concurrent checks queues for a connection (up to ``connect_timeout`` plus
        ``timeout``) instead of failing; redis-py's default pool raises past 100.
        """
        settings: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 1),
            **options,
        }
        scheme = urlsplit(url).scheme
        if scheme in ("redis", "rediss", "unix"):
            pooled = {**settings, "max_connections": max_connections, "timeout": timeout + connect_timeout}
            return cls(
                prefix=prefix,
                make_client=lambda: redis.Redis(
                    connection_pool=redis.BlockingConnectionPool.from_url(url, **pooled)
                ),
                make_aclient=lambda: redis.asyncio.Redis(
                    connection_pool=redis.asyncio.BlockingConnectionPool.from_url(url, **pooled)
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
        if scheme == "redis+sentinel":
            service = path.strip("/")
            if not service:
                raise ConfigError(f"{url!r} names no service: redis+sentinel://host:port/service_name")
            sentinel_kwargs = {"socket_timeout": timeout, "password": password} if password else None
            return cls(
                prefix=prefix,
                make_client=lambda: _Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **settings).master_for(
                    service
                ),
                make_aclient=lambda: _AsyncSentinel(
                    hosts, sentinel_kwargs=sentinel_kwargs, **settings
                ).master_for(service),
            )
        raise ConfigError(
            f"unsupported URL scheme {scheme!r}: use redis://, rediss://, unix://, "
            "redis+sentinel:// or redis+cluster://"
        )

    # -- the Backend protocol ----------------------------------------------------------

    def run(self, job: Job) -> Outcome:
        return self._drive(self._steps_run(job))

    async def arun(self, job: Job) -> Outcome:
        return await self._adrive(self._steps_run(job))

    def refund(self, receipt: Receipt) -> None:
        self._drive(self._steps_refund(receipt))

    async def arefund(self, receipt: Receipt) -> None:
        await self._adrive(self._steps_refund(receipt))

    def set_flag(self, key: str) -> None:
        self._call(lambda c: c.set(self.prefix + key, 1))

    def clear_flag(self, key: str) -> None:
        self._call(lambda c: c.delete(self.prefix + key))

    def clear(self) -> None:
        """Delete every key under this backend's prefix."""

        def wipe(client: Any) -> None:
            pattern = _glob_escape(self.prefix) + "*"
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):  # one key a DEL: keys may span cluster slots
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + 500]:
                    pipe.delete(key)
                pipe.execute()

        self._call(wipe)

    # -- the logic, written once -------------------------------------------------------

    def _steps_run(self, job: Job) -> Steps:
        if not self.cluster:
            reply = yield self._eval(job, job.flags, job.counters)
            return _outcome(reply)
        # A cluster script may touch one slot only. Flags are read first; then the
        # counters go slot by slot, each slot all-or-none, and a later slot's denial
        # refunds the earlier ones: a hit may be held for a moment, never over-admitted.
        if job.flags:
            found = yield ("exists", [self.prefix + f.key for f in job.flags])
            for i, hit in enumerate(found):
                if hit:
                    return Outcome(flag=i)
        counts = [0] * len(job.counters)
        taken: list[Counter] = []
        denied, wait = -1, 0.0
        for indexes in _by_slot(job.counters):
            group = tuple(job.counters[i] for i in indexes)
            # Once denied, the other slots are only checked (nothing written), so that the
            # denial names the counter that frees last, as on a single node.
            out = _outcome((yield self._eval(job, (), group, commit=denied < 0)))
            for i, n in zip(indexes, out.counts, strict=True):
                counts[i] = n
            if out.denied >= 0 and (denied < 0 or out.retry_after > wait):
                denied, wait = indexes[out.denied], out.retry_after
            elif denied < 0:
                taken.extend(group)
        if denied >= 0 and taken:
            yield from self._steps_refund(Receipt(job.token, tuple(taken)))
        return Outcome(denied=denied, retry_after=wait, counts=tuple(counts))

    def _steps_refund(self, receipt: Receipt) -> Generator[Request, Any, Outcome]:
        yield ("zrem", [(self.prefix + c.key, receipt.token) for c in receipt.counters])
        return Outcome()

    def _eval(
        self, job: Job, flags: Sequence[Flag], counters: Sequence[Counter], *, commit: bool = True
    ) -> Request:
        """The EVALSHA arguments for one script call, built once for either client."""
        keys = [self.prefix + f.key for f in flags]
        keys += [self.prefix + c.key for c in counters]
        args: list[Any] = [repr(job.now), job.token, len(flags), int(commit)]
        for c in counters:
            args += (c.limit, repr(c.expires_at))
        return ("eval", keys, args)

    # -- the two drivers: the only code that differs between sync and async ---------------

    def _drive(self, steps: Generator[Request, Any, Outcome]) -> Outcome:
        try:
            request = next(steps)
            while True:
                request = steps.send(self._send(self._sync_client(), request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except FAILURES as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def _adrive(self, steps: Generator[Request, Any, Outcome]) -> Outcome:
        try:
            request = next(steps)
            while True:
                request = steps.send(await self._asend(self._async_client(), request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except FAILURES as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _send(self, client: Any, request: Request) -> Any:
        kind = request[0]
        if kind == "eval":
            _, keys, args = request
            try:
                return client.evalsha(self._script_sha(client), len(keys), *keys, *args)
            except NoScriptError:  # Redis restarted or flushed its scripts: load, then retry once
                self._sha = client.script_load(SCRIPT)
                return client.evalsha(self._sha, len(keys), *keys, *args)
        pipe = client.pipeline(transaction=False)
        for item in request[1]:
            pipe.exists(item) if kind == "exists" else pipe.zrem(*item)
        return pipe.execute()

    async def _asend(self, client: Any, request: Request) -> Any:
        kind = request[0]
        if kind == "eval":
            _, keys, args = request
            try:
                return await client.evalsha(await self._ascript_sha(client), len(keys), *keys, *args)
            except NoScriptError:
                self._sha = await client.script_load(SCRIPT)
                return await client.evalsha(self._sha, len(keys), *keys, *args)
        pipe = client.pipeline(transaction=False)
        for item in request[1]:
            pipe.exists(item) if kind == "exists" else pipe.zrem(*item)
        return await pipe.execute()

    # -- clients ------------------------------------------------------------------------

    def _script_sha(self, client: Any) -> str:
        if self._sha is None:
            self._sha = client.script_load(SCRIPT)
        return self._sha

    async def _ascript_sha(self, client: Any) -> str:
        if self._sha is None:
            self._sha = await client.script_load(SCRIPT)
        return self._sha

    def _sync_client(self) -> Any:
        if self._client is None:
            if self._make_client is None:
                raise ConfigError("this RedisBackend has only an async client: use Guard.acheck")
            try:
                self._client = self._make_client()
            except FAILURES as exc:  # a cluster client connects when built
                raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return self._client

    def _async_client(self) -> Any:
        """The async client of the running event loop (redis.asyncio clients are loop-bound)."""
        if self._aclient is not None:
            return self._aclient
        if self._make_aclient is None:
            raise ConfigError("this RedisBackend has only a sync client: use Guard.check")
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            try:
                client = self._aclients[loop] = self._make_aclient()
            except FAILURES as exc:
                raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return client

    def _call(self, action: Callable[[Any], Any]) -> None:
        try:
            action(self._sync_client())
        except FAILURES as exc:
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _outcome(reply: Sequence[Any]) -> Outcome:
    return Outcome(int(reply[0]), int(reply[1]), float(reply[2]), tuple(int(n) for n in reply[3:]))


def _by_slot(counters: Sequence[Counter]) -> list[list[int]]:
    """Indexes of ``counters`` grouped by cluster slot, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(counters):
        groups.setdefault(key_slot(c.key.encode()), []).append(i)
    return list(groups.values())


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


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
