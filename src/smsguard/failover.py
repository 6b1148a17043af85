"""What outlives an outage of the backend, in three parts, one job each.

- ``Outage``: whether the backend is down, and what the guard answers meanwhile (its fail mode:
  ``open``, ``closed``, or ``local`` counting in an in-process MemoryBackend).
- ``FlagMirror``: the brakes (semantics 12). Every decision reads its flags (the switch, shared
  list entries) from the backend; the mirror keeps the last state read in the in-process
  backend. While the backend is down every fail mode reads flags from there, so a suspended
  guard stays suspended and a blacklisted number stays blocked.
- ``Outbox``: writes owed to the backend. A flag change made through the guard during an
  outage applies to the mirror at once and is sent when the backend answers again; so is a
  refund, and the hits of a job whose reply never came and that the guard denied (a stalled
  Redis may run it when it wakes; no SMS went out, so they are given back, a no-op if it never
  ran). Where the guard allowed it, the SMS went out and the hits stay.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from typing import Final, Literal

from smsguard.attempt import Decision
from smsguard.backends.memory import MemoryBackend
from smsguard.errors import BackendUnavailable, ConfigError
from smsguard.events import BACKEND_DOWN, BACKEND_UP
from smsguard.plan import Change, Flag, Plan, Receipt, SetFlag

log = logging.getLogger("smsguard")

FailMode = Literal["open", "closed", "local"]
FAIL_MODES: Final = ("open", "closed", "local")


class Outage:
    """Whether the backend is down, and the fail mode that decides meanwhile.

    ``mode``: ``"open"`` allows (and logs), ``"closed"`` denies with reason
    ``backend_unavailable``, ``"local"`` counts in ``local``, an in-process MemoryBackend. After
    a failure of the whole backend it is left alone for ``retry_interval`` seconds, then tried
    again; a partial failure (some Cluster slots) degrades only the decision that met it.
    """

    def __init__(self, mode: str, retry_interval: float, local: MemoryBackend) -> None:
        if mode not in FAIL_MODES:
            near = difflib.get_close_matches(str(mode).lower(), FAIL_MODES, n=1)
            hint = f": did you mean {near[0]!r}?" if near else ""
            raise ConfigError(
                f"fail_mode (SMSGUARD_FAIL_MODE) must be one of {FAIL_MODES}, not {mode!r}{hint}"
            )
        if not retry_interval > 0:
            raise ConfigError(
                f"retry_interval (SMSGUARD_RETRY_INTERVAL) must be positive, got {retry_interval!r}"
            )
        self.mode = mode
        self.retry_interval = retry_interval
        self.local = local
        self.down_until = 0.0
        """Until when the backend is left alone (epoch seconds, the guard's clock); 0 when up."""
        self.answered_at = float("-inf")
        """When the latest job the backend answered began (the guard's clock)."""
        self.notify: Callable[[str, str | None], None] = lambda kind, detail: None
        """Told ``("backend_down", what failed)`` and ``("backend_up", None)``."""

    def answered(self, began: float) -> None:
        """The backend answered a job that began at ``began``."""
        if began > self.answered_at:
            self.answered_at = began
        if self.down_until:
            log.warning("smsguard: backend reachable again")
            self.down_until = 0.0
            self.notify(BACKEND_UP, None)

    def failed(self, exc: BackendUnavailable, began: float) -> None:
        """The backend failed on a job that began at ``began``. Only a backend that does not
        answer is down: if it answered a job begun after this one (a burst kept this one waiting
        for a connection on a busy event loop), the backend stays in use."""
        if not exc.partial and self.answered_at <= began:
            if not self.down_until:
                log.warning("smsguard: backend unavailable (%s); fail mode %r", exc, self.mode)
                self.notify(BACKEND_DOWN, str(exc))
            self.down_until = began + self.retry_interval

    def decide(self, plan: Plan) -> Decision:
        """The decision while the backend is down: the mirrored flags first, then by fail mode."""
        if self.mode == "local":
            return plan.decide(self.local.run(plan.job), True, True)
        flags_only = plan.flags_only()
        out = self.local.run(flags_only.job)
        if out.flag >= 0 or plan.final is not None:
            return flags_only.decide(out, True)
        return plan.unanswered(self.mode == "open", max(self.down_until - plan.job.now, 1.0))


class FlagMirror:
    """The flags last read from the backend (or changed through this guard), kept in ``local``
    for ``Outage.decide`` to read."""

    def __init__(self, local: MemoryBackend) -> None:
        self.local = local
        self._on: set[str] = set()

    def read(self, flags: Sequence[Flag], found: int) -> None:
        """A job read ``flags`` in order: those before ``found`` off, the one at ``found`` on
        (all off if -1), and the rest unread."""
        on = self._on
        changes = []
        for i, flag in enumerate(flags if found < 0 else flags[: found + 1]):
            state = i == found
            if (flag.key in on) != state:
                (on.add if state else on.discard)(flag.key)
                changes.append(SetFlag(flag.key, state))
        if changes:
            self.local.apply(changes)

    def written(self, change: SetFlag) -> None:
        """A flag change made through the guard: it holds here at once, whatever the backend."""
        on = self._on
        if (change.key in on) != change.on:
            (on.add if change.on else on.discard)(change.key)
            self.local.apply((change,))


class Outbox:
    """The writes the backend has yet to get, oldest first (``pending``), at most
    ``max_pending``."""

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self.pending: list[Change] = []
        self._max_pending = max_pending

    def owe(self, change: Change) -> None:
        """Send ``change`` to the backend once it answers again."""
        pending = self.pending
        if len(pending) >= self._max_pending:
            # A long outage: let go of the oldest refund (a number keeps a hit it could have
            # had back), never of a flag change.
            for i, old in enumerate(pending):
                if isinstance(old, Receipt):
                    del pending[i]
                    log.warning("smsguard: %d writes owed to the backend; a refund dropped", len(pending))
                    break
        pending.append(change)

    def sent(self, changes: Sequence[Change]) -> None:
        """``changes``, the oldest pending writes, reached the backend. (Another thread may have
        sent them first: only the very entries sent are let go.)"""
        pending = self.pending
        n = len(changes)
        if len(pending) >= n and all(a is b for a, b in zip(pending, changes, strict=False)):
            del pending[:n]
