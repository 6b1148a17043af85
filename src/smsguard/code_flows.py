"""The flows of verification codes: a code issued with the send's decision, and checked.

``CodeFlows`` is the guard's ``Flows`` (``smsguard.flows``) with the two operations of
``smsguard.codes``: ``issue_code`` decides as ``check`` does and issues the number's code in
the same backend step; ``check_code`` checks a code in one step. Through an outage a code is
issued and checked in process (fail mode ``local`` or ``open``), never on the backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from smsguard import stats
from smsguard.attempt import EXEMPT, WRONG_CODE, Attempt, Decision
from smsguard.backends.base import RUN
from smsguard.codes import CONTENT, CodeCheck, Issued
from smsguard.drive import Flow
from smsguard.errors import BackendError, BackendUnavailable
from smsguard.flows import Flows
from smsguard.phone import Number
from smsguard.plan import UNRECORDED, CodeState, Job, Outcome, unavailable
from smsguard.planner import IPLike


class CodeFlows(Flows):
    """The guard's flows, verification codes included."""

    def issue_code(
        self,
        phone: str,
        *,
        ip: IPLike | None = None,
        context: Mapping[str, Any] | None = None,
        challenge_passed: bool = False,
        exempt: str | None = None,
    ) -> Flow[Issued]:
        """Judge the send of a code (``check``, content ``codes.CONTENT``) and, if allowed, issue
        the number's code in the same step: its live one, else a new one. ``exempt``: the name
        of what exempted the request (an adapter's ``exempt_networks``): not judged, nor counted
        or reported; the decision allowed, with that policy and reason ``exempt``."""
        if exempt is not None:
            number = self.planner.identify(phone)
            decision = Decision(
                True, number.e164, exempt, EXEMPT, country=number.region, phone_hash=number.phone_id
            )
            state = None
        else:
            decision, state = yield from self._decide(phone, CONTENT, ip, context, challenge_passed, True)
        if not decision.allowed:
            return Issued(decision, None)
        number = self.planner.identify(phone)
        if state is None:  # decided with no backend step (a fixed verdict), or by the fail mode
            now = self.clock()
            job = Job(now, "", (), (), code=self.codes.issue(number.phone_id, now))
            if decision.degraded or now < self.outage.down_until:
                if self.outage.mode == "closed":  # no code is issued during an outage
                    return Issued(self._refused(number, now), None)
                state = self.local.run(job).code  # checked here too, never on the backend
            else:
                try:
                    state = (yield (RUN, job)).code
                except BackendUnavailable as exc:
                    self.outage.failed(exc, now)
                    if self.outage.mode == "closed":
                        return Issued(self._refused(number, now), None)
                    state = self.local.run(job).code
        if state is None:
            raise BackendError("the backend issued no code with an allowed decision")
        return Issued(decision, self.codes.code(number.phone_id, state.nonce))

    def _refused(self, number: Number, now: float) -> Decision:
        """The closed fail mode's refusal of a code the backend could not issue, built whole."""
        return unavailable(
            number.e164, number.region, number.phone_id, max(self.outage.down_until - now, 1.0)
        )

    def check_code(self, phone: str, code: object, ip: IPLike | None) -> Flow[CodeCheck]:
        """Check ``code`` for ``phone``: one backend step (the code's counters, the limits on
        wrong checks and, if right, the number's verification)."""
        now = self.clock()
        attempt, record = self.planner.verified(phone, ip, now)
        job = self.codes.check(attempt, code, record, self.planner.token(), now)
        outage = self.outage
        out: Outcome | None = None
        if now >= outage.down_until:
            try:
                out = yield (RUN, job)
            except BackendUnavailable as exc:
                outage.failed(exc, now)
            else:
                outage.answered(now)
        local = out is None
        if out is None:
            # An outage: only a code issued here during it can be checked here; a code the
            # backend holds is not known, and never taken as right.
            out = self.local.run(job) if outage.mode != "closed" else Outcome(code=CodeState(""))
        result = self.codes.result(out, local, max(outage.down_until - now, 1.0))
        if result.ok and record.counters:
            if not local:
                self.local.apply((record,))  # the fallback knows the number too
            if local or (out.code is not None and out.code.nonce == UNRECORDED):
                self.outbox.owe(record)  # the backend learns it once it answers
        yield from self._checked(attempt, result, out, now)
        return result

    def _checked(self, attempt: Attempt, result: CodeCheck, out: Outcome, now: float) -> Flow[None]:
        """A check's statistics and events."""
        state = out.code
        lockout = state is not None and state.status == WRONG_CODE and state.attempts_left == 0
        statistics = self.statistics
        if statistics is not None:
            statistics.add(now, stats.CHECKED)
            if result.ok:
                self._count_verified(statistics, attempt, now)
            else:
                statistics.add(now, stats.CHECK + str(result.reason))
            if lockout:
                statistics.add(now, stats.LOCKOUTS)
        self.reporter.code_check(result, attempt.region, attempt.phone_id, now, lockout)
        if result.ok:
            self.reporter.verified(attempt.region, attempt.phone_id, now)
        due = self.outbox.pending or (statistics is not None and statistics.due(now))
        if due and now >= self.outage.down_until:
            yield from self._deferred(now, "code check")
