"""One flow per operation of the guard: a generator with no I/O of its own.

A flow yields what it needs of the backend, one step at a time, and returns its result:

- ``("run", job)``: the job's Outcome (``Backend.run``);
- ``("apply", changes)``: nothing (``Backend.apply``);
- ``("read", keys, now)``: the statistics hashes (``Backend.read``).

A backend that cannot answer has its ``BackendUnavailable`` thrown into the flow at the very
step it met, so a flow knows which step failed without keeping notes. ``smsguard.drive`` runs
them: ``Guard.check`` is ``drive(flows.check(...), io(backend))`` and ``Guard.acheck`` the same
flow with ``adrive`` and ``aio(backend)`` (``smsguard.backends.base``), so every rule serves both.
The flows of verification codes are ``smsguard.code_flows``.

Tested as h11 tests its state machine: feed a flow an outcome, or throw an outage into it,
with no backend at all (tests/test_flows.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from datetime import date
from functools import partial
from time import perf_counter
from typing import Any

from smsguard import stats
from smsguard.attempt import Attempt, Decision, Usage
from smsguard.backends.base import APPLY, READ, RUN
from smsguard.backends.memory import MemoryBackend
from smsguard.codes import CodeRules, Codes
from smsguard.denials import DenyCache
from smsguard.drive import Flow
from smsguard.errors import BackendUnavailable, ConfigError
from smsguard.events import BUDGET_ALARM, Reporter
from smsguard.failover import FlagMirror, Outage, Outbox
from smsguard.fingerprint import KEY
from smsguard.phone import NO_COUNTRY
from smsguard.plan import CodeState, Forget, Note, Outcome, Plan, Receipt, SetFlag
from smsguard.planner import ADDRESS, IPLike, Planner
from smsguard.policies import Alarming, usage
from smsguard.pumping import LearnedCap
from smsguard.stats import Day, Report, Statistics

log = logging.getLogger("smsguard")


class Flows:
    """The guard's operations as flows, and the state they keep between calls: the planner,
    the fail mode's three parts, the statistics buffered, the listeners."""

    def __init__(
        self,
        planner: Planner,
        *,
        fail_mode: str,
        retry_interval: float,
        clock: Callable[[], float],
        reporter: Reporter,
        statistics: Statistics | None,
        fingerprint: str | None = None,
        codes: Codes | None = None,
        denials: DenyCache | None = None,
    ) -> None:
        """``fingerprint``: what the first decision leaves in a shared backend (None: nothing);
        ``denials``: the local deny cache (None: every job goes to the backend)."""
        self.denials = denials
        self._early = denials is not None and planner.by_number is not None
        if denials is not None and planner.by_number is not None:
            denials.by_number = frozenset(owner.name for _, _, owner in planner.by_number)
        self.planner, self.clock, self.reporter, self.statistics = planner, clock, reporter, statistics
        self._unsigned = fingerprint  # no decision yet, so the fingerprint is not owed
        self._note: Note | None = None  # the fingerprint, owed from the first decision on
        self._owed_at = float("-inf")  # when a decision next sends what is owed (after a partial failure)
        self._policies = {p.name: p for p in planner.policies}
        self.local = MemoryBackend()
        """In process: the fallback counters (fail mode ``local``) and the mirror of flags."""
        self.outage = Outage(fail_mode, retry_interval, self.local)
        self.mirror = FlagMirror(self.local)
        self.outbox = Outbox()
        self.outage.notify = lambda kind, detail: reporter.backend(kind, self.clock(), detail)
        self._alarms = {p.name: p for p in planner.policies if isinstance(p, Alarming)}
        self.codes = codes or Codes(CodeRules(), planner.digest)
        """How verification codes are made and checked (``smsguard.codes``)."""
        self._scopes = {p.name: p for p in planner.policies if isinstance(p, LearnedCap)}
        self._told: dict[str, float] = {}  # a scope event -> when it may be told again

    # -- deciding --------------------------------------------------------------------------

    def check(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        challenge_passed: bool,
        now: float | None = None,
    ) -> Flow[Decision]:
        """Judge one attempt: the decision, made once, recorded and reported. ``now``: the
        clock's reading ``quick`` took (its early denial then tried)."""
        decision, _ = yield from self._decide(phone, content, ip, context, challenge_passed, False, now)
        return decision

    def quick(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        challenge_passed: bool,
    ) -> Decision | float:
        """``check``'s early denial (``_early_denial``) with no flow at all, where the decision
        owes the backend nothing (no statistics due, no fingerprint): recorded and reported as
        ``check`` does. Else the clock's reading, for ``check(..., now)`` to go on from (which
        tries no early denial again: at worst, a denial the deny cache answers after planning)."""
        statistics, reporter = self.statistics, self.reporter
        started = perf_counter() if reporter.listeners else None
        now = self.clock()
        if (
            not self._early
            or self._note is not None
            or self._unsigned is not None
            or (statistics is not None and statistics.owes(now))
        ):
            return now
        decision = self._early_denial(phone, content, ip, context, now, challenge_passed)
        if decision is None:
            return now
        if statistics is not None:
            statistics.record(decision, now)
        if reporter.wants(decision):
            reporter.decision(decision, ip, now, started, perf_counter())
        return decision

    def _decide(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        challenge_passed: bool,
        issue: bool,
        now: float | None = None,
    ) -> Flow[tuple[Decision, CodeState | None]]:
        """``check``, and with ``issue`` the code the backend issued with an allowed decision in
        the same step (None where no backend step allowed it). ``now``: see ``check``."""
        reporter, statistics, outage = self.reporter, self.statistics, self.outage
        started = perf_counter() if reporter.listeners else None
        plan: Plan | Decision | None = None
        if now is None:
            now = self.clock()
            if self._early and not issue:
                plan = self._early_denial(phone, content, ip, context, now, challenge_passed)
        if plan is None:
            plan = self.planner.plan(phone, content, ip, context, now, False, challenge_passed)
        state = None
        if isinstance(plan, Decision):  # a fixed list verdict: no backend needed
            decision = plan
        elif now < outage.down_until:
            decision = outage.decide(plan)
        else:
            if issue:  # the code goes with the decision's own step
                denies = plan.final is not None and not plan.final.allowed  # unless a flag exempts
                plan = plan._replace(
                    job=plan.job._replace(code=self.codes.issue(plan.attempt.phone_id, now, denies))
                )
            unsent = None
            if self.outbox.pending and now >= self._owed_at:
                try:
                    yield from self._flush(now)
                except BackendUnavailable as exc:
                    if exc.partial:  # some slots down: what is owed waits, this job may need none
                        self._owed_at = now + outage.retry_interval
                    else:
                        unsent = exc  # the whole backend is down: the job is not sent
            known = self.denials.answer(plan.job, plan.attempt.phone_id) if self.denials is not None else None
            if unsent is not None:
                decision = self._unanswered(plan, unsent)
            elif known is not None:  # a full counter known here: denied with no round trip
                decision = plan.decide(known)
            else:
                try:
                    outcome = yield (RUN, plan.job)
                except BackendUnavailable as exc:
                    decision = self._unanswered(plan, exc)
                    if not decision.allowed and plan.job.counters:
                        # It may have run all the same: no SMS went out, so its hits go back.
                        self.outbox.owe(Receipt(plan.job.token, plan.job.counters))
                else:
                    decision = self._answered(plan, outcome, now)
                    state = outcome.code
        if self._unsigned is not None:  # the first decision: the fingerprint goes with the write after it
            self._note, self._unsigned = Note(KEY, self._unsigned), None
        if statistics is not None:
            statistics.record(decision, now)
            if decision.allowed and not isinstance(plan, Decision) and plan.attempt.network is not None:
                statistics.add(now, f"{stats.SENT_TO}{decision.country or NO_COUNTRY} {plan.attempt.network}")
        if (
            self._note is not None or (statistics is not None and statistics.due(now))
        ) and now >= outage.down_until:
            with suppress(BackendUnavailable):  # the next decision meets the outage, not this one
                yield from self._flush(now)
        if reporter.wants(decision):
            reporter.decision(decision, ip, now, started, perf_counter())
        return decision, state

    def _early_denial(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        now: float,
        challenge_passed: bool,
    ) -> Decision | None:
        """A flood's denial from the deny cache before the attempt is planned whole: by a counter
        of the number, the same Decision the whole plan would get (``DenyCache.early``); None
        when the attempt must be planned (and sent) as always."""
        denials = self.denials
        if (
            denials is None
            or now < denials.others_until
            or now < self.outage.down_until
            or self.outbox.pending
            or type(phone) is not str
            or type(content) is not str
            or (type(ip) is not str and not isinstance(ip, ADDRESS))  # an adapter's is parsed
        ):
            return None
        planner = self.planner
        attempt = planner.early_attempt(phone, content, ip, now, challenge_passed, context)
        if attempt is None:
            return None
        if not denials.may_deny(attempt.phone_id, now):
            # An unseen number's: nothing known to deny it by, no plan to make (nor a denial
            # kept: each rests on a counter of the number known full, which may_deny covers).
            return None
        steady = planner.steady and planner.settled(attempt, now)
        if steady:  # a number's denial, kept once planned: no plan at all
            decision = denials.recall(attempt.phone_id, challenge_passed, now)
            if decision is not None:
                return decision
        plan = planner.plan_number(attempt, now)
        if plan is None:
            return None
        # Steady, the number's plan at another time is the same counters, for the denial kept.
        return denials.early(plan, partial(planner.plan_number, attempt) if steady else None)

    def _answered(self, plan: Plan, outcome: Outcome, now: float) -> Decision:
        job = plan.job
        self.outage.answered(job.now)
        if self.denials is not None:
            self.denials.learn(job, outcome, plan.counter_owners, plan.attempt.phone_id)
        if job.flags:
            self.mirror.read(job.flags, outcome.flag)
        decision = plan.decide(outcome)
        if self._scopes and not decision.allowed and decision.policy in self._scopes:
            self._scope_event(plan, outcome, now)
        if self._alarms and decision.allowed:
            # Each budget this allowed decision brought to its alarm share (the decision that
            # crosses it is one, however many workers count).
            for counter, owner, before in zip(job.counters, plan.counter_owners, outcome.counts, strict=True):
                policy = self._alarms.get(owner.name)
                if policy is not None and not counter.shadow:
                    detail = policy.crossed(counter, before)
                    if detail is not None:
                        self.reporter.alarm(owner.name, detail, now)
                        if self.statistics is not None:
                            self.statistics.add(now, stats.event(BUDGET_ALARM, owner.name, None))
        return decision

    def _scope_event(self, plan: Plan, outcome: Outcome, now: float) -> None:
        """A LearnedCap refused: its scope's surge or conversion drop, told once an hour per
        scope and process."""
        denied = outcome.denied
        told = self._scopes[plan.counter_owners[denied].name].told(plan.job.counters[denied])
        if told is None or self._told.get(told[1], 0.0) > now:
            return
        if len(self._told) > 10_000:  # bounded: drop the ones whose hour is over
            self._told = {k: t for k, t in self._told.items() if t > now}
        self._told[told[1]] = now + 3600
        policy = self._scopes[plan.counter_owners[denied].name]
        self.reporter.scope(
            told[0], policy.name, told[1], plan.attempt.region, now, loud=policy.by != "range"
        )
        if self.statistics is not None:  # for the daily review
            self.statistics.add(now, stats.event(told[0], policy.name, plan.attempt.region))

    def _unanswered(self, plan: Plan, exc: BackendUnavailable) -> Decision:
        if self.denials is not None:
            self.denials.clear()
        self.outage.failed(exc, plan.job.now)
        return self.outage.decide(plan)

    # -- writes ----------------------------------------------------------------------------
    # Every write goes through the outbox, so that writes reach the backend in the order they
    # were made, those made during an outage included.

    def refund(self, decision: Decision) -> Flow[None]:
        """Give back what an allowed attempt consumed, once; deferred through an outage."""
        now = self.clock()
        self.reporter.refund(decision, now)
        receipt, statistics = decision.receipt, self.statistics
        if receipt is not None and statistics is not None:
            statistics.add(now, stats.REFUNDED)
        owed = False
        if receipt is not None:
            if receipt.fallback:  # counted here: given back here
                self.local.apply((receipt,))
            else:
                self.outbox.owe(receipt)
                owed = True
                if self.denials is not None:
                    self.denials.changed((receipt,))
        if owed or (statistics is not None and statistics.due(now) and now >= self.outage.down_until):
            yield from self._deferred(now, "refund")

    def verified(self, phone: str, ip: IPLike | None) -> Flow[None]:
        """Note a verification: each policy's ``on_verified`` hits, and the statistics."""
        now = self.clock()
        attempt, record = self.planner.verified(phone, ip, now)
        if record.counters:
            self.local.apply((record,))  # the fallback knows the number too
            self.outbox.owe(record)
        if self.statistics is not None:
            self._count_verified(self.statistics, attempt, now)
        self.reporter.verified(attempt.region, attempt.phone_id, now)
        if record.counters or self.statistics is not None:
            yield from self._deferred(now, "verification")

    @staticmethod
    def _count_verified(statistics: Statistics, attempt: Attempt, now: float) -> None:
        """A verification in the statistics: in all, per country, and per network if known."""
        statistics.add(now, stats.VERIFIED)
        region = attempt.region or NO_COUNTRY
        statistics.add(now, stats.VERIFIED_IN + region)
        if attempt.network is not None:
            statistics.add(now, f"{stats.VERIFIED_IN}{region} {attempt.network}")

    def switch(self, on: bool) -> Flow[None]:
        """Turn the emergency switch on or off."""
        return self._write(SetFlag(self.planner.switch().KEY, on))

    def list_entry(self, policy: str, phone: str, on: bool) -> Flow[None]:
        """Add ``phone`` to (or take it out of) the shared list of the policy named ``policy``."""
        return self._write(
            SetFlag(self.planner.shared_list(policy).flag_key(self.planner.identify(phone).phone_id), on)
        )

    def reset(self, phone: str) -> Flow[None]:
        """Forget every counter of ``phone``, here at once and in the backend."""
        forget = Forget(self.planner.identify(phone).phone_id)
        self.local.apply((forget,))
        return self._write(forget)

    def _write(self, change: SetFlag | Forget) -> Flow[None]:
        """A change holds in this guard at once, then goes to the backend with what is owed;
        if it cannot be reached, BackendUnavailable tells the caller that others do not see it
        yet (it is sent when the backend answers again)."""
        if isinstance(change, SetFlag):
            self.mirror.written(change)
        if self.denials is not None:
            self.denials.changed((change,))
        self.outbox.owe(change)
        yield from self._flush(self.clock())

    def flush(self) -> Flow[None]:
        """Send what is owed and the statistics buffered; raises BackendUnavailable."""
        return self._flush(self.clock())

    def _flush(self, now: float) -> Flow[None]:
        owed = tuple(self.outbox.pending)
        statistics = self.statistics
        tallies = statistics.drain(now) if statistics is not None else ()
        note, self._note = self._note, None  # taken at once: concurrent decisions send it once
        try:
            yield (APPLY, owed + tallies if note is None else (*owed, *tallies, note))
        except BackendUnavailable:  # what this guard buffered goes with a later write
            if tallies and statistics is not None:
                statistics.restore(tallies)
            self._note = note or self._note
            raise
        self.outbox.sent(owed)

    def _deferred(self, now: float, what: str) -> Flow[None]:
        """``_flush``; through an outage, what is owed stays owed (sent with the next write
        that reaches the backend)."""
        try:
            yield from self._flush(now)
        except BackendUnavailable as exc:
            log.warning("smsguard: %s deferred until the backend answers (%s)", what, exc)

    # -- reads -----------------------------------------------------------------------------

    def status(self, phone: str, content: str | None, ip: IPLike | None) -> Flow[list[Usage]]:
        """The counters that hold ``phone`` (and ``content``'s, ``ip``'s): nothing consumed."""
        now = self.clock()
        plan = self.planner.peek(phone, content, ip, now)
        out = yield (RUN, plan.job)
        waits = out.waits or (0.0,) * len(out.counts)
        code = (yield (RUN, self.codes.peek(plan.attempt.phone_id, now))).code
        return self.codes.usage(code, now) + [
            usage(self._policies[owner.name], counter, n, wait or None)
            for counter, owner, n, wait in zip(
                plan.job.counters, plan.counter_owners, out.counts, waits, strict=True
            )
            if n >= 0  # not one passed over (a verified number's UnverifiedCap)
        ]

    def stats(self, day: date | str | None) -> Flow[Day]:
        """The statistics of ``day``, this guard's buffered ones written first."""
        now, days = self._days(day, 0)
        yield from self._flush(now)
        hashes = yield (READ, Statistics.keys(days[0]), now)
        return Day.from_hashes(days[0], hashes)

    def report(self, day: date | str | None) -> Flow[Report]:
        """The daily review of ``day``: against the day before and a week before."""
        now, days = self._days(day, 3)
        yield from self._flush(now)
        hashes = yield (READ, _keys(days), now)
        return Report(*(Day.from_hashes(d, hashes[24 * i : 24 * i + 24]) for i, d in enumerate(days)))

    def _days(self, day: date | str | None, n: int) -> tuple[float, tuple[date, ...]]:
        if self.statistics is None:
            raise ConfigError("this guard keeps no statistics (statistics=False)")
        now = self.clock()
        wanted = self.statistics.day(day, now)
        return now, stats.around(wanted) if n else (wanted,)


def _keys(days: Iterable[date]) -> list[str]:
    return [key for day in days for key in Statistics.keys(day)]
