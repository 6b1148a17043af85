"""The Guard: attempt -> plan -> backend -> Decision.

Planning (``planner``) and deciding (``plan``) are pure, and the fail modes live in
``breaker``; ``check`` and ``acheck`` (and each operation and its async twin) differ only in
how they call the backend, so every rule serves both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from datetime import date
from time import perf_counter
from typing import Any

from smsguard import stats
from smsguard.attempt import Decision, Usage
from smsguard.backends.base import Backend
from smsguard.backends.memory import MemoryBackend
from smsguard.breaker import Breaker, FailMode
from smsguard.errors import BackendUnavailable, ConfigError, Denied
from smsguard.events import Listener, Reporter
from smsguard.fingerprint import KEY, fingerprint
from smsguard.lifecycle import warn_if_split
from smsguard.phone import Digest, check_region
from smsguard.plan import Change, Forget, Note, Outcome, Plan, SetFlag, Tallied, stamped
from smsguard.planner import IPLike, Planner
from smsguard.policies import DailyCap, Policy, SameContent, usage
from smsguard.settings import Settings
from smsguard.stats import Day, Report, Statistics, around

__all__ = ["FailMode", "Guard"]

log = logging.getLogger("smsguard")


class Guard:
    """Policies + backend + settings: turns attempts into decisions.

    ``fail_mode`` says what happens while the backend is unreachable: ``"open"`` allows
    (and logs), ``"closed"`` denies with reason ``backend_unavailable``, ``"local"`` counts in
    an in-process MemoryBackend. In every mode the flags last read from the backend (the
    switch, shared list entries) stay in force. After a failure the backend is left alone for
    ``retry_interval`` seconds, then tried again, so recovery needs no restart.

    ``listeners`` are called with an ``Event`` after every decision, refund, and change of the
    backend's state (see ``smsguard.events``); each denial is also logged at INFO.

    ``statistics`` (a ``Statistics``; True for the default one, False for none) says how the
    per-hour counts that ``stats()`` and ``report()`` read are kept. ``dry_run=True`` runs every
    policy in shadow: counted and reported (``Decision.shadowed``), never denying.
    """

    def __init__(
        self,
        policies: Iterable[Policy] | None = None,
        *,
        backend: Backend | None = None,
        default_region: str | None = None,
        fail_mode: FailMode = "local",
        clock: Callable[[], float] | None = None,
        secret: str | bytes | None = None,
        retry_interval: float = 5.0,
        phone_cache: int = 4096,
        listeners: Iterable[Listener] = (),
        statistics: Statistics | bool = True,
        dry_run: bool = False,
    ) -> None:
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        warn_if_split(self.backend)  # a memory backend where several processes serve
        self.default_region = check_region(default_region)
        self.planner = Planner(
            policies if policies is not None else (SameContent(), DailyCap()),
            region=self.default_region,
            digest=Digest.from_settings(secret, shared=self.backend.shared),
            cache=phone_cache,
            dry_run=dry_run,
        )
        self.policies: tuple[Policy, ...] = self.planner.policies
        if statistics is True:
            statistics = Statistics()
        if isinstance(statistics, Statistics) and statistics.zone is None:
            statistics.zone = next((p.tz for p in self.policies if isinstance(p, DailyCap)), None)
        self.statistics = statistics or None
        """Where and how statistics are kept (``guard.stats()``); None when they are off."""
        self._alarms = tuple(p for p in self.policies if hasattr(p, "crossed"))  # SpendCap
        self.clock: Callable[[], float] = clock or time.time
        self.breaker = Breaker(fail_mode, retry_interval)
        self.reporter = Reporter(listeners, self.policies, fail_mode)
        """The listeners (``reporter.listeners``, a list: append to it) and the denial log."""
        self.breaker.notify = lambda kind, detail: self.reporter.backend(kind, self.clock(), detail)
        self.fingerprint = fingerprint(
            self.policies,
            digest=self.planner.digest,
            region=self.default_region,
            zone=self.statistics.tz if self.statistics is not None else None,
            prefix=getattr(self.backend, "prefix", None),
        )
        """What makes this guard's keys and verdicts (``smsguard.fingerprint``). On a shared
        backend its first decision leaves it there, for the ``smsguard`` command to check its
        own settings against."""
        self._unsigned = self.backend.shared  # no decision yet, so the fingerprint is not owed
        self._note: Note | None = None  # the fingerprint, owed from the first decision on

    @property
    def fail_mode(self) -> str:
        """``"open"``, ``"closed"`` or ``"local"``: what the guard answers while the backend is down."""
        return self.breaker.mode

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], prefix: str = "SMSGUARD_") -> Guard:
        """A guard from flat settings (a Flask ``app.config``, environment variables, a TOML
        table), each given as a value or as a string. See the README's settings table."""
        from smsguard.backends import backend_from_url
        from smsguard.policies import settings_policies

        read = Settings(settings, prefix)
        return cls(
            settings_policies(read),
            backend=backend_from_url(
                read.string("STORAGE_URI", "memory://"), prefix=read.string("KEY_PREFIX", "smsguard:")
            ),
            default_region=read.optional("DEFAULT_REGION"),
            fail_mode=read.string("FAIL_MODE", "local"),  # type: ignore[arg-type]  # Breaker checks it
            secret=read.optional("SECRET"),
            retry_interval=read.number("RETRY_INTERVAL", 5.0),
            statistics=read.boolean("STATS", True)
            and Statistics(
                read.optional("TIMEZONE"),
                days=read.integer("STATS_DAYS", 35),
                flush_interval=read.number("STATS_INTERVAL", 1.0),
            ),
            dry_run=read.boolean("DRY_RUN", False),
        )

    # -- the two shells -------------------------------------------------------------------

    def check(
        self,
        phone: str,
        *,
        content: str | None = None,
        ip: IPLike | None = None,
        context: Mapping[str, Any] | None = None,
        challenge_passed: bool = False,
    ) -> Decision:
        """Judge one attempt. Raises InvalidInput (InvalidPhone, MissingSubject) on bad input.

        ``challenge_passed``: the client passed a challenge (a CAPTCHA) with this request, so
        policies of kind ``challenge`` pass it over."""
        started = perf_counter() if self.reporter.listeners else None
        now = self.clock()
        decision = self._check(phone, content, ip, context, now, challenge_passed)
        if self._tallies_due(now):
            with suppress(BackendUnavailable):  # the next decision meets an outage, not this one
                self._flush()
        return self._reported(decision, ip, now, started)

    async def acheck(
        self,
        phone: str,
        *,
        content: str | None = None,
        ip: IPLike | None = None,
        context: Mapping[str, Any] | None = None,
        challenge_passed: bool = False,
    ) -> Decision:
        """``check`` for async code: the backend is awaited, never blocking the loop."""
        started = perf_counter() if self.reporter.listeners else None
        now = self.clock()
        decision = await self._acheck(phone, content, ip, context, now, challenge_passed)
        if self._tallies_due(now):
            with suppress(BackendUnavailable):
                await self._aflush()
        return self._reported(decision, ip, now, started)

    def _check(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        now: float,
        challenge_passed: bool,
    ) -> Decision:
        plan = self._planned(phone, content, ip, context, now, challenge_passed)
        if isinstance(plan, Decision):
            return plan
        sent = False
        try:
            if self.breaker.pending:
                self._flush()
            sent = True
            outcome = self.backend.run(plan.job)
        except BackendUnavailable as exc:
            return self._failed(plan, exc, sent, now)
        return self._answered(plan, outcome, now)

    async def _acheck(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        now: float,
        challenge_passed: bool,
    ) -> Decision:
        plan = self._planned(phone, content, ip, context, now, challenge_passed)
        if isinstance(plan, Decision):
            return plan
        sent = False
        try:
            if self.breaker.pending:
                await self._aflush()
            sent = True
            outcome = await self.backend.arun(plan.job)
        except BackendUnavailable as exc:
            return self._failed(plan, exc, sent, now)
        return self._answered(plan, outcome, now)

    # What check and acheck do alike, around their one backend call.

    def _planned(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        now: float,
        challenge_passed: bool,
    ) -> Plan | Decision:
        """The plan for the backend, or the decision already made: a fixed list verdict, or the
        fail mode's while a recent failure is waited out."""
        plan = self.planner.plan(phone, content, ip, context, now, challenge_passed=challenge_passed)
        if isinstance(plan, Decision):
            return self._record(plan, now)
        if now < self.breaker.down_until:
            return self._record(stamped(self.breaker.degraded(plan), plan.attempt), now)
        return plan

    def _failed(self, plan: Plan, exc: BackendUnavailable, sent: bool, now: float) -> Decision:
        return self._record(stamped(self.breaker.failed(plan, exc, sent=sent), plan.attempt), now)

    def _answered(self, plan: Plan, outcome: Outcome, now: float) -> Decision:
        decision = stamped(self.breaker.answered(plan, outcome), plan.attempt)
        if self._alarms and decision.allowed:
            self._alarm(plan, outcome, now)
        return self._record(decision, now)

    def _tallies_due(self, now: float) -> bool:
        """Whether buffered statistics (and the first decision's fingerprint) are to be written
        after this decision (not while the backend is left alone)."""
        statistics = self.statistics
        due = self._note is not None or (statistics is not None and statistics.due(now))
        return due and now >= self.breaker.down_until

    def _reported(self, decision: Decision, ip: IPLike | None, now: float, started: float | None) -> Decision:
        reporter = self.reporter
        if reporter.wants(decision):
            reporter.decision(decision, ip, now, started, perf_counter())
        return decision

    def _alarm(self, plan: Plan, outcome: Outcome, now: float) -> None:
        """Tell of each budget this allowed decision brought to its alarm share (the decision
        that crosses it is one, however many workers count)."""
        for counter, owner, before in zip(
            plan.job.counters, plan.counter_owners, outcome.counts, strict=True
        ):
            if owner in self._alarms and not counter.shadow:
                detail = owner.crossed(counter, before)  # type: ignore[attr-defined]
                if detail is not None:
                    self.reporter.alarm(owner.name, detail, now)

    def _record(self, decision: Decision, now: float) -> Decision:
        """``decision``, its statistics buffered (for those its backend did not write with it)."""
        if self._unsigned:  # the first decision: the fingerprint goes with the write after it
            self._unsigned = False
            self._note = Note(KEY, self.fingerprint)
        if self.statistics is not None:
            self.statistics.record(decision, now)
        return decision

    def enforce(self, phone: str, **attempt: Any) -> Decision:
        """``check``, raising ``Denied`` (which carries the decision) instead of returning a denial."""
        decision = self.check(phone, **attempt)
        if not decision.allowed:
            raise Denied(decision)
        return decision

    async def aenforce(self, phone: str, **attempt: Any) -> Decision:
        """``enforce`` for async code."""
        decision = await self.acheck(phone, **attempt)
        if not decision.allowed:
            raise Denied(decision)
        return decision

    # -- writes: refunds, the switch, shared lists -----------------------------------------
    # Every write goes through the breaker's queue of writes owed to the backend, so that
    # writes reach it in the order they were made, including those made during an outage.

    def refund(self, decision: Decision) -> None:
        """Give back what an allowed attempt consumed (call it when the SMS was not sent).

        A receipt is spent once: refunding the same decision again gives nothing more. A refund
        that cannot reach the backend is sent when it answers again.
        """
        if self._refunded(decision):
            self._flush_or_defer("refund")

    async def arefund(self, decision: Decision) -> None:
        """``refund`` for async code."""
        if self._refunded(decision):
            await self._aflush_or_defer("refund")

    def verified(self, phone: str, *, ip: IPLike | None = None) -> None:
        """The user entered a correct code sent to ``phone``: call it then. The number is known
        (``UnverifiedCap`` no longer holds it) for its trust period, its scopes earn room, and
        the statistics count a verification. One backend write; if the backend cannot be
        reached it is sent when it answers again. Raises InvalidPhone for a bad number."""
        if self._verified(phone, ip):
            self._flush_or_defer("verification")

    async def averified(self, phone: str, *, ip: IPLike | None = None) -> None:
        """``verified`` for async code."""
        if self._verified(phone, ip):
            await self._aflush_or_defer("verification")

    def _verified(self, phone: str, ip: IPLike | None) -> bool:
        """Note a verification; True when there is something to send the backend."""
        now = self.clock()
        attempt, record = self.planner.verified(phone, ip, now)
        if record.counters:
            self.breaker.local.apply((record,))  # the fallback knows the number too
            self.breaker.owe(record)
        if self.statistics is not None:
            self.statistics.add(now, stats.VERIFIED)
        self.reporter.verified(attempt.region, attempt.phone_id, now)
        return bool(record.counters) or self.statistics is not None

    def _refunded(self, decision: Decision) -> bool:
        """Note the refund of ``decision``; True when there is something to send the backend."""
        now = self.clock()
        self.reporter.refund(decision, now)
        if decision.receipt is not None and self.statistics is not None:
            self.statistics.add(now, stats.REFUNDED)
        return self.breaker.refund(decision.receipt) or (
            self.statistics is not None and self.statistics.due(now) and now >= self.breaker.down_until
        )

    # The switch and shared lists. A change holds in this guard at once. If the backend cannot
    # be reached it is sent when the backend answers again, and BackendUnavailable tells the
    # caller that other workers do not see it yet.

    def suspend(self) -> None:
        """Turn the emergency switch on: the ``Suspend`` policy then denies every attempt."""
        self._write(SetFlag(self.planner.switch().KEY, True))

    async def asuspend(self) -> None:
        """``suspend`` for async code."""
        await self._awrite(SetFlag(self.planner.switch().KEY, True))

    def resume(self) -> None:
        """Turn the emergency switch off."""
        self._write(SetFlag(self.planner.switch().KEY, False))

    async def aresume(self) -> None:
        """``resume`` for async code."""
        await self._awrite(SetFlag(self.planner.switch().KEY, False))

    def add_number(self, policy: str, phone: str) -> None:
        """Add ``phone`` to the shared list of the Whitelist/Blacklist named ``policy``."""
        self._write(self._list_entry(policy, phone, True))

    async def aadd_number(self, policy: str, phone: str) -> None:
        """``add_number`` for async code."""
        await self._awrite(self._list_entry(policy, phone, True))

    def remove_number(self, policy: str, phone: str) -> None:
        """Take ``phone`` out of the shared list of the policy named ``policy``."""
        self._write(self._list_entry(policy, phone, False))

    async def aremove_number(self, policy: str, phone: str) -> None:
        """``remove_number`` for async code."""
        await self._awrite(self._list_entry(policy, phone, False))

    # -- one number: its counters read, or forgotten ---------------------------------------

    def status(self, phone: str, *, content: str | None = None, ip: IPLike | None = None) -> list[Usage]:
        """The counters that hold ``phone`` now (and ``content``'s and ``ip``'s, where given):
        used, limit, remaining, and when a full one frees a slot. Nothing is consumed; the
        DailyCap's ``used`` is today's sends. Raises BackendUnavailable if the backend is down."""
        plan = self.planner.peek(phone, content, ip, self.clock())
        return _usage(plan, self.backend.run(plan.job))

    async def astatus(
        self, phone: str, *, content: str | None = None, ip: IPLike | None = None
    ) -> list[Usage]:
        """``status`` for async code."""
        plan = self.planner.peek(phone, content, ip, self.clock())
        return _usage(plan, await self.backend.arun(plan.job))

    def reset(self, phone: str) -> None:
        """Forget every counter of ``phone`` (a support agent unblocking a user); its list
        entries stay. Like a flag change, it holds here at once and, if the backend cannot be
        reached, is sent when it answers again (BackendUnavailable says so)."""
        self._write(self._forget(phone))

    async def areset(self, phone: str) -> None:
        """``reset`` for async code."""
        await self._awrite(self._forget(phone))

    def _forget(self, phone: str) -> Forget:
        forget = Forget(self.identify(phone)[1])
        self.breaker.local.apply((forget,))
        return forget

    def identify(self, phone: str) -> tuple[str, str]:
        """(E.164, keyed hash) of ``phone``; raises InvalidPhone."""
        e164, phone_id, *_ = self.planner.identify(phone)
        return e164, phone_id

    def _list_entry(self, policy: str, phone: str, on: bool) -> SetFlag:
        return SetFlag(self.planner.shared_list(policy).flag_key(self.identify(phone)[1]), on)

    def _write(self, change: SetFlag | Forget) -> None:
        if isinstance(change, SetFlag):
            self.breaker.written(change)
        self.breaker.owe(change)
        self._flush()

    async def _awrite(self, change: SetFlag | Forget) -> None:
        if isinstance(change, SetFlag):
            self.breaker.written(change)
        self.breaker.owe(change)
        await self._aflush()

    def _flush(self) -> None:
        """Send the writes owed to the backend, in order, and the statistics buffered;
        raises BackendUnavailable."""
        owed, tallies = self._owed()
        try:
            self.backend.apply(owed + tallies)
        except BackendUnavailable:
            self._unsent(tallies)
            raise
        self.breaker.flushed(owed)

    async def _aflush(self) -> None:
        owed, tallies = self._owed()
        try:
            await self.backend.aapply(owed + tallies)
        except BackendUnavailable:
            self._unsent(tallies)
            raise
        self.breaker.flushed(owed)

    def _flush_or_defer(self, what: str) -> None:
        """``_flush``; if the backend cannot be reached, what is owed stays owed (and is sent with
        the next write that reaches it)."""
        try:
            self._flush()
        except BackendUnavailable as exc:
            log.warning("smsguard: %s deferred until the backend answers (%s)", what, exc)

    async def _aflush_or_defer(self, what: str) -> None:
        try:
            await self._aflush()
        except BackendUnavailable as exc:
            log.warning("smsguard: %s deferred until the backend answers (%s)", what, exc)

    def _owed(self) -> tuple[tuple[Change, ...], tuple[Tallied | Note, ...]]:
        """The writes owed, and what this guard buffered: statistics, the fingerprint (taken at
        once, so that concurrent decisions do not each send it)."""
        statistics = self.statistics
        buffered: tuple[Tallied | Note, ...] = (
            statistics.drain(self.clock()) if statistics is not None else ()
        )
        note, self._note = self._note, None
        return tuple(self.breaker.pending), buffered if note is None else (*buffered, note)

    def _unsent(self, buffered: tuple[Tallied | Note, ...]) -> None:
        """Buffer again what a failed write carried, for the next."""
        tallies = [t for t in buffered if isinstance(t, Tallied)]
        if tallies and self.statistics is not None:
            self.statistics.restore(tallies)
        self._note = next((n for n in buffered if isinstance(n, Note)), self._note)

    # -- statistics ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the statistics this guard holds (it writes them with its next write, at most
        ``flush_interval`` after a decision; an idle worker holds its last ones until then), and
        any write owed since an outage. For a shutdown hook, or before reading them elsewhere.
        Raises BackendUnavailable if the backend is down."""
        self._flush()

    async def aflush(self) -> None:
        """``flush`` for async code."""
        await self._aflush()

    def stats(self, day: date | str | None = None) -> Day:
        """The statistics of ``day`` (a date, ``"YYYY-MM-DD"``, or None for today), in the
        statistics' time zone. Raises BackendUnavailable if the backend is down."""
        now, days = self._days(day, 0)
        self._flush()
        return Day.from_hashes(days[0], self.backend.read(Statistics.keys(days[0]), now))

    async def astats(self, day: date | str | None = None) -> Day:
        """``stats`` for async code."""
        now, days = self._days(day, 0)
        await self._aflush()
        return Day.from_hashes(days[0], await self.backend.aread(Statistics.keys(days[0]), now))

    def report(self, day: date | str | None = None) -> Report:
        """The daily review of ``day`` (None: today): its totals against the day before and the
        same weekday a week before, conversion, top reasons and countries, and anomalies."""
        now, days = self._days(day, 3)
        self._flush()
        return _report(days, self.backend.read(_keys(days), now))

    async def areport(self, day: date | str | None = None) -> Report:
        """``report`` for async code."""
        now, days = self._days(day, 3)
        await self._aflush()
        return _report(days, await self.backend.aread(_keys(days), now))

    def _days(self, day: date | str | None, n: int) -> tuple[float, tuple[date, ...]]:
        if self.statistics is None:
            raise ConfigError("this guard keeps no statistics (statistics=False)")
        now = self.clock()
        wanted = self.statistics.day(day, now)
        return now, around(wanted) if n else (wanted,)


def _keys(days: Iterable[date]) -> list[str]:
    return [key for day in days for key in Statistics.keys(day)]


def _report(days: tuple[date, ...], hashes: list[dict[str, int]]) -> Report:
    day, previous, week_before = (
        Day.from_hashes(d, hashes[24 * i : 24 * i + 24]) for i, d in enumerate(days)
    )
    return Report(day, previous, week_before)


def _usage(plan: Plan, out: Outcome) -> list[Usage]:
    """Each counter of a read-only plan, as its owner, used, limit, remaining, frees-in."""
    waits = out.waits or (0.0,) * len(out.counts)
    return [
        usage(owner, counter, n, wait or None)
        for counter, owner, n, wait in zip(
            plan.job.counters, plan.counter_owners, out.counts, waits, strict=True
        )
        if n >= 0  # not one passed over (a verified number's UnverifiedCap)
    ]
