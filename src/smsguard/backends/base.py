"""What a backend is asked (a Job) and what it answers (an Outcome).

Backends know counters and flags, not phones or policies: the guard turns an attempt into a
Job, the backend runs it atomically, and the guard turns the Outcome into a Decision.

These values are NamedTuples rather than frozen dataclasses: just as immutable, and a
decision makes several of them, where a NamedTuple costs less than half as much to build.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable


class Counter(NamedTuple):
    """A quota: at most ``limit`` live hits under ``key``.

    A hit taken now stops counting at ``expires_at`` (epoch seconds): ``now + window`` for a
    sliding window, the next local midnight for a calendar day. ``limit`` is at least 1.
    """

    key: str
    limit: int
    expires_at: float


class Flag(NamedTuple):
    """A key read with the counters: if it is set, the attempt stops there, consuming
    nothing. ``reason`` None exempts the attempt, else denies it with that reason.

    Per-number flags (a shared whitelist entry) are hash-tagged like the number's counters,
    so in a Redis Cluster they live in the same slot and are read by the same script.
    """

    key: str
    reason: str | None = None


class Job(NamedTuple):
    """Everything one decision asks of a backend, run as one atomic step."""

    now: float
    token: str
    """Unique per attempt: names its hits, so that a refund removes exactly them."""
    flags: tuple[Flag, ...]
    counters: tuple[Counter, ...]


class Outcome(NamedTuple):
    """A backend's answer. At most one of ``flag`` and ``denied`` is set (>= 0)."""

    flag: int = -1
    """Index of the first flag found set; nothing was consumed."""
    denied: int = -1
    """Index of the failing counter that frees a slot last; nothing was consumed."""
    retry_after: float = 0.0
    """Seconds until the ``denied`` counter frees a slot."""
    counts: tuple[int, ...] = ()
    """Live hits per counter before this attempt (when no flag was found)."""


class Receipt(NamedTuple):
    """What an allowed attempt consumed, so that ``Guard.refund`` can give it back."""

    token: str
    """The job's token: the name of its hits."""
    counters: tuple[Counter, ...]
    """The counters it took one hit of."""
    fallback: bool = False
    """Taken on the in-process fallback backend while the real one was down."""


@runtime_checkable
class Backend(Protocol):
    """Storage that runs a Job atomically: every counter passes and all consume, or none do."""

    shared: bool
    """True when several processes see the same state (the guard then needs a shared secret)."""

    def run(self, job: Job) -> Outcome:
        """Read the flags, then check every counter and consume all or none."""
        ...

    async def arun(self, job: Job) -> Outcome:
        """``run`` for async code; never blocks the event loop on I/O."""
        ...

    def refund(self, receipt: Receipt) -> None:
        """Give back the hits an allowed attempt took."""
        ...

    async def arefund(self, receipt: Receipt) -> None:
        """``refund`` for async code."""
        ...

    def set_flag(self, key: str) -> None:
        """Set the flag ``key`` (a runtime list entry, the emergency switch); it has no expiry."""
        ...

    def clear_flag(self, key: str) -> None:
        """Clear the flag ``key``."""
        ...

    def clear(self) -> None:
        """Forget every counter and set this backend holds."""
        ...
