"""The Backend protocol: what the guard needs of a storage.

Backends know counters and flags, not phones or policies: the guard turns an attempt into a
Job (see ``smsguard.plan``), the backend runs it atomically, and the guard turns the Outcome
into a Decision. Every write (refunds, flag changes, statistics) is a ``Change`` applied in one
batch. Statistics are hashes of counts, one per hour, read back with ``read``.

A flow (``smsguard.flows``) asks the backend through steps: ``(RUN, job)``, ``(APPLY, changes)``,
``(READ, keys, now)``; ``io(backend)`` and ``aio(backend)`` do them, for ``smsguard.drive``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, runtime_checkable

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
    "aio",
    "io",
]

RUN: Final = "run"
APPLY: Final = "apply"
READ: Final = "read"
_ASYNC: Final = {APPLY: "aapply", READ: "aread"}


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


def io(backend: Backend) -> Callable[[tuple[Any, ...]], Any]:
    """What does a flow's steps on ``backend``: ``drive(flow, io(backend))``."""
    run = backend.run

    def step(step: tuple[Any, ...]) -> Any:
        if step[0] == RUN:  # a decision's one step, first
            return run(step[1])
        return getattr(backend, step[0])(*step[1:])

    return step


def aio(backend: Backend) -> Callable[[tuple[Any, ...]], Awaitable[Any]]:
    """``io`` for async code: ``adrive(flow, aio(backend))``."""
    arun = backend.arun

    def step(step: tuple[Any, ...]) -> Awaitable[Any]:
        if step[0] == RUN:
            return arun(step[1])
        return getattr(backend, _ASYNC[step[0]])(*step[1:])  # type: ignore[no-any-return]

    return step
