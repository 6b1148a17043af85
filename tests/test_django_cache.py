"""Django's CACHES Redis connection reused when asked (SMSGUARD["CACHE"]): Django's built-in
RedisCache pointed at the suite's redis-server, through the middleware, sync and async."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import django_app
import pytest
import redis
from conftest import unique_prefix
from django.core.cache import caches
from django.test import AsyncClient, Client, override_settings
from servers import RedisServer

from smsguard.adapters.django import configured, guard
from smsguard.backends.redis import RedisBackend
from smsguard.errors import ConfigError

pytestmark = pytest.mark.redis_server


def on_cache(url: str, prefix: str, **smsguard: Any) -> Any:
    return override_settings(
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "shared": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"socket_timeout": 0.5},
            },
        },
        SMSGUARD={**django_app.SMSGUARD, "CACHE": "shared", "KEY_PREFIX": prefix, **smsguard},
    )


@pytest.fixture(autouse=True)
def fresh() -> Any:
    configured.clear(setting="SMSGUARD")
    yield
    configured.clear(setting="SMSGUARD")


def post(client: Client, phone: str) -> Any:
    return client.post(
        "/sms/send", json.dumps({"phone": phone}), content_type="application/json", REMOTE_ADDR="198.51.100.3"
    )


def test_the_guard_counts_in_the_caches_redis_on_its_connection(redis_server: RedisServer) -> None:
    prefix = unique_prefix()
    with on_cache(redis_server.url, prefix):
        backend = guard().backend
        assert isinstance(backend, RedisBackend)
        cache = caches["shared"]
        assert backend._sync_client().connection_pool is cache._cache._get_connection_pool(True), "one pool"
        cache.set("hello", "world")  # the cache works alongside
        client = Client()
        statuses = [post(client, "13800138000").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429], "DAILY_CAP 3 of the test settings"
        assert cache.get("hello") == "world"
    direct = redis.Redis.from_url(redis_server.url)
    assert direct.keys(f"{prefix}*"), "the counters are in the cache's Redis"
    direct.close()


def test_async_views_reach_it_too(redis_server: RedisServer) -> None:
    prefix = unique_prefix()

    async def run() -> list[int]:
        client = AsyncClient()
        found = []
        for _ in range(4):
            response = await client.post(
                "/sms/send",
                json.dumps({"phone": "13800138001"}),
                content_type="application/json",
                REMOTE_ADDR="198.51.100.3",
            )
            found.append(response.status_code)
        return found

    with on_cache(redis_server.url, prefix):
        guard()
        assert asyncio.run(run()) == [200, 200, 200, 429]
        assert asyncio.run(guard().acheck("13800138002", ip="198.51.100.3")).allowed
        assert guard().status("13800138001")[0].used == 3, "sync and async count in one place"


def test_a_cache_that_is_not_redis_is_refused() -> None:
    local = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    for alias, message in (("default", "LocMemCache, not a Redis cache"), ("nowhere", "nowhere")):
        settled = override_settings(CACHES=local, SMSGUARD={**django_app.SMSGUARD, "CACHE": alias})
        with settled, pytest.raises(ConfigError, match=message):
            guard()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"STORAGE_URI": "redis://localhost/0"}, "keep one"),
        ({"GUARD": "django_urls.guard"}, "its own backend"),
    ],
)
def test_cache_with_another_backend_is_refused(
    redis_server: RedisServer, extra: dict[str, str], message: str
) -> None:
    with on_cache(redis_server.url, unique_prefix(), **extra), pytest.raises(ConfigError, match=message):
        guard()
