"""Storage for counters: the in-process MemoryBackend and the RedisBackend."""

from __future__ import annotations

from smsguard.backends.base import Backend
from smsguard.backends.memory import MemoryBackend
from smsguard.errors import ConfigError


def backend_from_url(url: str, *, prefix: str = "smsguard:") -> Backend:
    """``memory://`` for a MemoryBackend; any Redis URL for ``RedisBackend.from_url``, its keys
    under ``prefix``. A ConfigError for anything else, and for a Redis URL without the
    ``redis`` extra installed."""
    if url in ("memory://", "memory"):
        return MemoryBackend()
    from smsguard.backends import urls

    urls.scheme(url)
    try:
        from smsguard.backends.redis import RedisBackend
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] not in ("redis", "hiredis"):
            raise
        raise ConfigError(
            f"{urls.shown(url)} needs the Redis client, which smsguard's redis extra brings: "
            "pip install 'smsguard[redis]'"
        ) from None
    return RedisBackend.from_url(url, prefix=prefix)
