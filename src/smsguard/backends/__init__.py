"""Storage for counters: the in-process MemoryBackend and the RedisBackend."""

from __future__ import annotations

from smsguard.backends.base import Backend
from smsguard.backends.memory import MemoryBackend


def backend_from_url(url: str, *, prefix: str = "smsguard:") -> Backend:
    """``memory://`` for a MemoryBackend; any Redis URL for ``RedisBackend.from_url``, its keys
    under ``prefix``."""
    if url in ("memory://", "memory"):
        return MemoryBackend()
    from smsguard.backends.redis import RedisBackend  # needs the `redis` extra

    return RedisBackend.from_url(url, prefix=prefix)
