"""Storage for counters: the in-process MemoryBackend and the RedisBackend."""

from __future__ import annotations
