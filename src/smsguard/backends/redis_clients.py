"""The redis-py clients a ``RedisBackend.from_url`` URL names: what a URL means is
``smsguard.backends.urls``; here it becomes clients, made when first used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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
from redis.backoff import NoBackoff

from smsguard.backends import urls
from smsguard.errors import ConfigError

# redis-py leaves these untyped; naming them Any keeps mypy --strict honest elsewhere.
_ClusterNode: Any = redis.cluster.ClusterNode
_AsyncClusterNode: Any = redis.asyncio.cluster.ClusterNode
_Sentinel: Any = redis.sentinel.Sentinel
_parse_url: Callable[[str], dict[str, Any]] = redis.connection.parse_url
_AsyncSentinel: Any = redis.asyncio.sentinel.Sentinel

# Retry once, at once, on a connection error: a pooled connection that turns out dead (Redis
# restarted) is no outage. The error may also come after Redis ran the command, its reply lost:
# sent again, a decision answers as it did (consume.lua) and statistics are added once
# (tally.lua). Never on a timeout: a stalled Redis must not be waited for twice.
_RETRY_ON = (rx.ConnectionError,)

# redis-py's Cluster client sends a command again itself, after refreshing its map of slots, on
# the errors of its ERRORS_ALLOW_RETRY, ten times more with a backoff: a connection error (a
# dead node, whose replica may lead now) and a slot not in its map, and these clients leave out
# the others. A timeout: a stalled node is waited for once, as a single node. CLUSTERDOWN: the
# cluster refuses for as long as a master is failing (seconds), and the fail mode answers at
# once, not after seconds of retries. Its pipelines (flags, refunds, statistics: writes that
# count once however often sent) keep redis-py's own list. (Any: redis-py types the attribute
# as its own four.)
_CLUSTER_RETRY_ON: Any = tuple(
    e
    for e in redis.cluster.RedisCluster.ERRORS_ALLOW_RETRY
    if e not in (rx.TimeoutError, rx.ClusterDownError)
)


class _Cluster(redis.cluster.RedisCluster):
    ERRORS_ALLOW_RETRY = _CLUSTER_RETRY_ON


class _AsyncCluster(redis.asyncio.cluster.RedisCluster):
    ERRORS_ALLOW_RETRY = _CLUSTER_RETRY_ON


def of_url(
    url: str,
    timeout: float,
    connect_timeout: float,
    max_connections: int,
    pool_timeout: float,
    options: dict[str, Any],
    packing: Callable[[Any], Any],
) -> dict[str, Any]:
    """The ``RedisBackend`` options (``make_client``, ``make_aclient``, ``cluster``,
    ``pool_timeout``) of ``url``, and ``packed``: whether its sync client's EVALSHA may be packed
    by hiredis; see ``RedisBackend.from_url``. ``packing`` makes a single node's async pool pack
    its commands with hiredis."""
    scheme, url = urls.scheme(url)
    settings: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": connect_timeout}
    settings.update(options)
    retry = settings.pop("retry", None)
    sync_retry = retry or redis.retry.Retry(NoBackoff(), 1, _RETRY_ON)
    async_retry = retry or redis.asyncio.retry.Retry(NoBackoff(), 1, _RETRY_ON)
    if scheme in ("redis", "rediss", "unix"):
        urls.check_single(url)
        try:
            _parse_url(url)  # its query options, which redis-py reads only at the first command
        except ValueError as exc:
            raise ConfigError(
                f"{urls.shown(url)}: {exc} Give each option a value redis-py reads: seconds for "
                "a timeout (?socket_timeout=0.5), true or false for a switch"
            ) from None
        pooled = {**settings, "max_connections": max_connections, "timeout": pool_timeout}
        return {
            "packed": retry is None,
            "make_client": lambda: redis.Redis(
                connection_pool=redis.BlockingConnectionPool.from_url(url, retry=sync_retry, **pooled)
            ),
            "make_aclient": lambda: redis.asyncio.Redis(
                connection_pool=packing(
                    redis.asyncio.BlockingConnectionPool.from_url(url, retry=async_retry, **pooled)
                )
            ),
        }
    password, hosts, path = urls.locations(url)
    if password:
        settings.setdefault("password", password)
    if scheme == "redis+cluster":
        if path.strip("/") not in ("", "0"):
            raise ConfigError(f"{urls.shown(url)}: a Cluster has database 0 only: end the URL with the hosts")
        return {
            "cluster": True,
            "make_client": lambda: _Cluster(startup_nodes=[_ClusterNode(h, p) for h, p in hosts], **settings),
            "make_aclient": lambda: _AsyncCluster(
                startup_nodes=[_AsyncClusterNode(h, p) for h, p in hosts],
                max_connections=max_connections,
                **settings,
            ),
            "pool_timeout": pool_timeout,
        }
    service = path.strip("/")  # redis+sentinel, as _scheme let nothing else through
    if not service:
        raise ConfigError(f"{urls.shown(url)!r} names no service: redis+sentinel://host:port/service_name")
    sentinel_kwargs = {"socket_timeout": timeout, "password": password} if password else None
    return {
        "make_client": lambda: _Sentinel(
            hosts, sentinel_kwargs=sentinel_kwargs, retry=sync_retry, **settings
        ).master_for(service),
        "make_aclient": lambda: _AsyncSentinel(
            hosts, sentinel_kwargs=sentinel_kwargs, retry=async_retry, **settings
        ).master_for(service),
    }
