"""The Backend protocol: what the guard needs of a storage.

Backends know counters and flags, not phones or policies: the guard turns an attempt into a
Job (see ``smsguard.plan``), the backend runs it atomically, and the guard turns the Outcome
into a Decision. Every write (refunds, flag changes, statistics) is a ``Change`` applied in one
batch. Statistics are hashes of counts, one per hour, read back with ``read``.

A flow (``smsguard.flows``) asks the backend through steps: ``(RUN, job)``, ``(APPLY, changes)``,
``(READ, keys, now)``; ``smsguard.drive``'s ``io(backend)`` and ``aio(backend)`` do them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol, runtime_checkable

from smsguard.plan import Change, Counter, Flag, Forget, Job, Note, Outcome, Receipt, SetFlag, Tallied

__all__ = [
    "Backend",
    "Change",
    "Counter",
    "Flag",
    "Forget",
    "Job",
    "Note",
    "Outcome",
    "Receipt",
    "SetFlag",
    "Tallied",
]

RUN: Final = "run"
APPLY: Final = "apply"
READ: Final = "read"
ASYNC: Final = {APPLY: "aapply", READ: "aread"}
"""The async twin of each step's method."""


@runtime_checkable
class Backend(Protocol):
    """Storage that runs a Job atomically: every counter passes and all consume, or none do."""

    shared: bool
    """True when several processes see the same state (the guard then needs a shared secret)."""

    def run(self, job: Job) -> Outcome:
        """Read the flags in order, then check every counter and consume all or none (none when
        ``job.commit`` is False)."""
        ...

    async def arun(self, job: Job) -> Outcome:
        """``run`` for async code; never blocks the event loop on I/O."""
        ...

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply refunds, flag changes and statistics; a Receipt gives its hits back once,
        however often it is applied."""
        ...

    async def aapply(self, changes: Sequence[Change]) -> None:
        """``apply`` for async code."""
        ...

    def read(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        """The statistics hashes ``keys``, as of ``now`` (empty for one that is absent)."""
        ...

    async def aread(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        """``read`` for async code."""
        ...

    def clear(self) -> None:
        """Forget every counter and flag this backend holds."""
        ...
