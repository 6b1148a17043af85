"""The fail modes: what the guard answers while its backend cannot, and what it keeps meanwhile.

Three things outlive an outage here:

- **The brakes** (semantics 12). Every decision reads its flags (the switch, shared list
  entries) from the backend; the breaker mirrors the last state it read into an in-process
  MemoryBackend. While the backend is down, every fail mode reads flags from that mirror, so a
  suspended guard stays suspended and a blacklisted number stays blocked.
- **Writes owed to the backend.** A flag change made through the guard during an outage applies
  to the mirror at once and is sent when the backend answers again; so is a refund.
- **Hits of unanswered jobs.** A job whose reply never came may still have run (a stalled Redis
  runs it when it wakes). Where the guard answered it with a denial, no SMS went out, so its
  hits are given back once the backend answers again (a refund by token: a no-op if it never
  ran). Where it answered with an allowance, the SMS went out and the hits stay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Final, Literal

from smsguard import attempt as codes
from smsguard.attempt import Decision
from smsguard.backends.memory import MemoryBackend
from smsguard.errors import BackendUnavailable, ConfigError
from smsguard.events import BACKEND_DOWN, BACKEND_UP
from smsguard.plan import Change, Flag, Outcome, Plan, Receipt, SetFlag

log = logging.getLogger("smsguard")

FailMode = Literal["open", "closed", "local"]
FAIL_MODES: Final = ("open", "closed", "local")


class Breaker:
    """The fail mode of one guard, and its memory of the backend.

    ``mode``: ``"open"`` allows (and logs), ``"closed"`` denies with reason
    ``backend_unavailable``, ``"local"`` counts in an in-process MemoryBackend. After a failure
    of the whole backend it is left alone for ``retry_interval`` seconds, then tried again; a
    partial failure (some Cluster slots) degrades only the decision that met it.
    """

    def __init__(self, mode: str, retry_interval: float, *, max_pending: int = 10_000) -> None:
        if mode not in FAIL_MODES:
            raise ConfigError(f"fail_mode must be one of {FAIL_MODES}, not {mode!r}")
        if not retry_interval > 0:
            raise ConfigError(f"retry_interval must be positive, got {retry_interval!r}")
        self.mode = mode
        self.retry_interval = retry_interval
        self.local = MemoryBackend()
        """The fallback counters (mode "local") and the mirror of flags, in every mode."""
        self.down_until = 0.0
        """Until when the backend is left alone (epoch seconds, the guard's clock); 0 when up."""
        self.pending: list[Change] = []
        """Writes the backend has yet to get, oldest first."""
        self.answered_at = float("-inf")
        """When the latest job the backend answered began (the guard's clock)."""
        self._on: set[str] = set()  # flags last read (or set through the guard) as on
        self.notify: Callable[[str, str | None], None] = lambda kind, detail: None
        """Told ``("backend_down", what failed)`` and ``("backend_up", None)``."""
        self._max_pending = max_pending

    # -- the backend answered ------------------------------------------------------------

    def answered(self, plan: Plan, outcome: Outcome) -> Decision:
        """The decision for ``plan`` from the backend's ``outcome``; the breaker notes that the
        backend answered, and the flags it read."""
        if plan.job.now > self.answered_at:
            self.answered_at = plan.job.now
        if self.down_until or plan.job.flags:
            self.succeeded(plan, outcome.flag)
        return plan.decide(outcome)

    def succeeded(self, plan: Plan, decision_flag: int) -> None:
        """The backend answered ``plan``'s job, which has flags or ended an outage;
        ``decision_flag`` is the index of the flag found set."""
        if self.down_until:
            log.warning("smsguard: backend reachable again")
            self.down_until = 0.0
            self.notify(BACKEND_UP, None)
        flags = plan.job.flags
        if flags:
            self._mirror(flags if decision_flag < 0 else flags[: decision_flag + 1], decision_flag)

    def _mirror(self, flags: Sequence[Flag], found: int) -> None:
        """Flags before ``found`` were read as off, the one at ``found`` as on (all off if -1)."""
        on = self._on
        changes = []
        for i, flag in enumerate(flags):
            state = i == found
            if (flag.key in on) != state:
                (on.add if state else on.discard)(flag.key)
                changes.append(SetFlag(flag.key, state))
        if changes:
            self.local.apply(changes)

    def flushed(self, sent: Sequence[Change]) -> None:
        """``sent``, the oldest pending writes, reached the backend. (Another thread may have
        flushed them first: only the very entries sent are let go.)"""
        pending = self.pending
        n = len(sent)
        if len(pending) >= n and all(a is b for a, b in zip(pending, sent, strict=False)):
            del pending[:n]

    # -- the backend did not answer ------------------------------------------------------

    def failed(self, plan: Plan, exc: BackendUnavailable, *, sent: bool) -> Decision:
        """The decision for ``plan`` when the backend failed on it (``sent``: its job may have
        run).

        Only a backend that does not answer is down: if it answered a job begun after this one
        (a burst kept this one waiting for a connection on a busy event loop), this decision
        degrades alone and the backend stays in use.
        """
        if not exc.partial and self.answered_at <= plan.job.now:
            if not self.down_until:
                log.warning("smsguard: backend unavailable (%s); fail mode %r", exc, self.mode)
                self.notify(BACKEND_DOWN, str(exc))
            self.down_until = plan.job.now + self.retry_interval
        decision = self.degraded(plan)
        if sent and not decision.allowed and plan.job.counters:
            self.owe(Receipt(plan.job.token, plan.job.counters))
        return decision

    def degraded(self, plan: Plan) -> Decision:
        """The decision while the backend is down: the mirrored flags first, then by fail mode."""
        if self.mode == "local":
            decision = plan.decide(self.local.run(plan.job))
            if decision.receipt is not None:
                decision.receipt = decision.receipt._replace(fallback=True)
        else:
            flags_only = plan.flags_only()
            out = self.local.run(flags_only.job)
            if out.flag >= 0 or plan.final is not None:
                decision = flags_only.decide(out)
            elif self.mode == "open":
                decision = Decision(True, plan.attempt.phone, None, codes.FAIL_OPEN)
            else:
                retry = max(self.down_until - plan.job.now, 1.0)
                decision = Decision(
                    False, plan.attempt.phone, None, codes.BACKEND_UNAVAILABLE, retry, kind=codes.UNAVAILABLE
                )
        decision.degraded = True
        return decision

    # -- writes -------------------------------------------------------------------------

    def written(self, change: SetFlag) -> None:
        """A flag change made through the guard: it holds here at once, whatever the backend."""
        on = self._on
        if (change.key in on) != change.on:
            (on.add if change.on else on.discard)(change.key)
            self.local.apply((change,))

    def refund(self, receipt: Receipt | None) -> bool:
        """Take a refund: given back here if it was counted here, else owed to the backend.
        True when the backend has it to apply."""
        if receipt is None:
            return False
        if receipt.fallback:
            self.local.apply((receipt,))
            return False
        self.owe(receipt)
        return True

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
