"""The Guard: the public face of the guard's operations.

Each operation is one flow (``smsguard.flows``): a generator with no I/O of its own that
yields what it needs of the backend. A method here is one line: the flow, run by ``drive``
with the backend's sync calls, or by ``adrive`` with its async ones for the ``a`` twin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any

from smsguard import checks, denials
from smsguard.attempt import Decision, Usage
from smsguard.backends.base import Backend
from smsguard.backends.memory import MemoryBackend
from smsguard.code_flows import CodeFlows
from smsguard.codes import CodeCheck, CodeRules, Codes, Issued
from smsguard.drive import adrive, aio, drive, io
from smsguard.errors import Denied
from smsguard.events import Listener, Reporter
from smsguard.failover import FailMode
from smsguard.fingerprint import fingerprint
from smsguard.from_settings import guard_options
from smsguard.lifecycle import warn_if_split
from smsguard.phone import Digest, Number, check_region
from smsguard.planner import IPLike, Planner
from smsguard.policies import DailyCap, IPThrottle, Policy, SameContent
from smsguard.stats import Day, Report, Statistics

__all__ = ["FailMode", "Guard"]


class Guard:
    """Policies + backend + settings: turns attempts into decisions.

    ``fail_mode`` says what happens while the backend is unreachable: ``"open"`` allows
    (and logs), ``"closed"`` denies with reason ``backend_unavailable``, ``"local"`` counts in
    an in-process MemoryBackend. In every mode the flags last read from the backend (the
    switch, shared list entries) stay in force. After a failure the backend is left alone for
    ``retry_interval`` seconds, then tried again, so recovery needs no restart.

    ``listeners`` are called with an ``Event`` after every decision, refund, and change of the
    backend's state (see ``smsguard.events``); each denial is also logged at INFO.

    ``code_rules`` (a ``CodeRules``) say how ``issue_code`` makes codes and ``check_code`` checks them.

    ``statistics`` (a ``Statistics``; True for the default one, False for none) says how the
    per-hour counts that ``stats()`` and ``report()`` read are kept. ``dry_run=True`` runs every
    policy in shadow: counted and reported (``Decision.shadowed``), never denying.

    ``deny_cache`` (seconds; True for 1.0, False or 0 for none) keeps the counters the backend
    found full, so that a flood's denials need no round trip (``smsguard.denials``); a reset,
    refund or list change made through another worker reaches this one within that many
    seconds. On by default (1 s) on a shared backend (Redis), off on the memory backend.
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
        code_rules: CodeRules | None = None,
        deny_cache: float | bool | None = None,
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
        self.statistics = _statistics(statistics, self.policies)
        """Where and how statistics are kept (``guard.stats()``); None when they are off."""
        throttle = next((p for p in self.policies if isinstance(p, IPThrottle)), None)
        self.reporter = Reporter(listeners, fail_mode, throttle.network if throttle else str)
        """The listeners (``reporter.listeners``, a list: append to it) and the denial log."""
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
        self.flows = CodeFlows(
            self.planner,
            fail_mode=fail_mode,
            retry_interval=retry_interval,
            clock=clock or time.time,
            reporter=self.reporter,
            statistics=self.statistics,
            fingerprint=self.fingerprint if self.backend.shared else None,
            codes=Codes(code_rules or CodeRules(), self.planner.digest),
            denials=denials.deny_cache(deny_cache, self.backend.shared),
        )
        self.io, self.aio = io(self.backend), aio(self.backend)
        """What does a flow's steps on the backend, sync and async (``smsguard.drive``)."""
        self.outage, self.outbox = self.flows.outage, self.flows.outbox
        """The fail mode (``outage.down_until``: until when the backend is left alone) and the
        writes owed to the backend (``outbox.pending``)."""

    @property
    def clock(self) -> Callable[[], float]:
        """The clock every operation reads once (epoch seconds); set it to move the guard in time."""
        return self.flows.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.flows.clock = clock

    @property
    def fail_mode(self) -> str:
        """``"open"``, ``"closed"`` or ``"local"``: what the guard answers while the backend is down."""
        return self.outage.mode

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any],
        prefix: str = "SMSGUARD_",
        *,
        backend: Backend | None = None,
        warn: bool = True,
    ) -> Guard:
        """A guard from flat settings (a Flask ``app.config``, environment variables, a TOML
        table), each given as a value or as a string. See the README's settings table.

        ``backend`` is taken instead of the one ``STORAGE_URI`` names (Django's ``CACHE``).
        Without ``COUNTRIES`` it texts any country, and says so: a WARNING in the log and an
        ``AnyCountry`` warning (``smsguard.checks``, W005), once; unless ``warn=False``, for
        those that say it their own way (``smsguard check``, Django's system checks)."""
        guard = cls(**guard_options(settings, prefix, backend))
        anywhere = checks.no_countries(guard)
        if warn and anywhere is not None:  # said loudly, once: it texts any country
            checks.announce(guard, [anywhere])
        return guard

    # -- deciding --------------------------------------------------------------------------

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
        flows = self.flows
        now = flows.quick(phone, content, ip, context, challenge_passed)  # a flood's denial, at once
        if isinstance(now, Decision):
            return now
        return drive(flows.check(phone, content, ip, context, challenge_passed, now), self.io)

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
        flows = self.flows
        now = flows.quick(phone, content, ip, context, challenge_passed)
        if isinstance(now, Decision):
            return now
        return await adrive(flows.check(phone, content, ip, context, challenge_passed, now), self.aio)

    def enforce(self, phone: str, **attempt: Any) -> Decision:
        """``check``, raising ``Denied`` (which carries the decision) instead of returning a denial."""
        return _enforced(self.check(phone, **attempt))

    async def aenforce(self, phone: str, **attempt: Any) -> Decision:
        """``enforce`` for async code."""
        return _enforced(await self.acheck(phone, **attempt))

    # -- verification codes: issued with the send's decision, checked with bounded guesses ----

    def issue_code(self, phone: str, **attempt: Any) -> Issued:
        """``check`` the send of a code (``ip``, ``context``, ``challenge_passed`` as there) and, if
        allowed, issue it in the same backend step: ``Issued(decision, code)``, the code None when
        denied. While the number's code is live (neither spent, dead nor expired) it is the same."""
        return drive(self.flows.issue_code(phone, **attempt), self.io)

    async def aissue_code(self, phone: str, **attempt: Any) -> Issued:
        """``issue_code`` for async code."""
        return await adrive(self.flows.issue_code(phone, **attempt), self.aio)

    def check_code(self, phone: str, code: object, *, ip: IPLike | None = None) -> CodeCheck:
        """Check ``code`` for ``phone`` (one backend step); a right one is spent and the number
        recorded as ``verified``. A malformed code is a wrong guess. Raises InvalidPhone."""
        return drive(self.flows.check_code(phone, code, ip), self.io)

    async def acheck_code(self, phone: str, code: object, *, ip: IPLike | None = None) -> CodeCheck:
        """``check_code`` for async code."""
        return await adrive(self.flows.check_code(phone, code, ip), self.aio)

    # -- writes: refunds, verifications, the switch, shared lists ---------------------------
    # A change holds in this guard at once. If the backend cannot be reached it is sent when
    # the backend answers again, and BackendUnavailable tells the caller that other workers do
    # not see it yet (a refund or a verification is only logged as deferred).

    def refund(self, decision: Decision) -> None:
        """Give back what an allowed attempt consumed (call it when the SMS was not sent).

        A receipt is spent once: refunding the same decision again gives nothing more. A refund
        that cannot reach the backend is sent when it answers again.
        """
        drive(self.flows.refund(decision), self.io)

    async def arefund(self, decision: Decision) -> None:
        """``refund`` for async code."""
        await adrive(self.flows.refund(decision), self.aio)

    def verified(self, phone: str, *, ip: IPLike | None = None) -> None:
        """The user entered a correct code sent to ``phone``: call it then. The number is known
        (``UnverifiedCap`` no longer holds it) for its trust period, its scopes earn room, and
        the statistics count a verification. One backend write; if the backend cannot be
        reached it is sent when it answers again. Raises InvalidPhone for a bad number."""
        drive(self.flows.verified(phone, ip), self.io)

    async def averified(self, phone: str, *, ip: IPLike | None = None) -> None:
        """``verified`` for async code."""
        await adrive(self.flows.verified(phone, ip), self.aio)

    def suspend(self) -> None:
        """Turn the emergency switch on: the ``Suspend`` policy then denies every attempt."""
        drive(self.flows.switch(True), self.io)

    async def asuspend(self) -> None:
        """``suspend`` for async code."""
        await adrive(self.flows.switch(True), self.aio)

    def resume(self) -> None:
        """Turn the emergency switch off."""
        drive(self.flows.switch(False), self.io)

    async def aresume(self) -> None:
        """``resume`` for async code."""
        await adrive(self.flows.switch(False), self.aio)

    def add_number(self, policy: str, phone: str) -> None:
        """Add ``phone`` to the shared list of the Whitelist/Blacklist named ``policy``."""
        drive(self.flows.list_entry(policy, phone, True), self.io)

    async def aadd_number(self, policy: str, phone: str) -> None:
        """``add_number`` for async code."""
        await adrive(self.flows.list_entry(policy, phone, True), self.aio)

    def remove_number(self, policy: str, phone: str) -> None:
        """Take ``phone`` out of the shared list of the policy named ``policy``."""
        drive(self.flows.list_entry(policy, phone, False), self.io)

    async def aremove_number(self, policy: str, phone: str) -> None:
        """``remove_number`` for async code."""
        await adrive(self.flows.list_entry(policy, phone, False), self.aio)

    # -- one number: its counters read, or forgotten ---------------------------------------

    def status(self, phone: str, *, content: str | None = None, ip: IPLike | None = None) -> list[Usage]:
        """The counters that hold ``phone`` now (and ``content``'s and ``ip``'s, where given):
        used, limit, remaining, and when a full one frees a slot. Nothing is consumed; the
        DailyCap's ``used`` is today's sends. Raises BackendUnavailable if the backend is down."""
        return drive(self.flows.status(phone, content, ip), self.io)

    async def astatus(
        self, phone: str, *, content: str | None = None, ip: IPLike | None = None
    ) -> list[Usage]:
        """``status`` for async code."""
        return await adrive(self.flows.status(phone, content, ip), self.aio)

    def reset(self, phone: str) -> None:
        """Forget every counter of ``phone`` (a support agent unblocking a user); its list
        entries stay. Like a flag change, it holds here at once and, if the backend cannot be
        reached, is sent when it answers again (BackendUnavailable says so)."""
        drive(self.flows.reset(phone), self.io)

    async def areset(self, phone: str) -> None:
        """``reset`` for async code."""
        await adrive(self.flows.reset(phone), self.aio)

    def identify(self, phone: str) -> Number:
        """The ``Number`` of ``phone``: E.164 first, its keyed hash second, then its region (and,
        where a policy needs them, its type and network); raises InvalidPhone."""
        return self.planner.identify(phone)

    # -- statistics ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the statistics this guard holds (it writes them with its next write, at most
        ``flush_interval`` after a decision; an idle worker holds its last ones until then), and
        any write owed since an outage. For a shutdown hook, or before reading them elsewhere.
        Raises BackendUnavailable if the backend is down."""
        drive(self.flows.flush(), self.io)

    async def aflush(self) -> None:
        """``flush`` for async code."""
        await adrive(self.flows.flush(), self.aio)

    def stats(self, day: date | str | None = None) -> Day:
        """The statistics of ``day`` (a date, ``"YYYY-MM-DD"``, or None for today), in the
        statistics' time zone. Raises BackendUnavailable if the backend is down."""
        return drive(self.flows.stats(day), self.io)

    async def astats(self, day: date | str | None = None) -> Day:
        """``stats`` for async code."""
        return await adrive(self.flows.stats(day), self.aio)

    def report(self, day: date | str | None = None) -> Report:
        """The daily review of ``day`` (None: today): its totals against the day before and the
        same weekday a week before, conversion, top reasons and countries, and anomalies."""
        return drive(self.flows.report(day), self.io)

    async def areport(self, day: date | str | None = None) -> Report:
        """``report`` for async code."""
        return await adrive(self.flows.report(day), self.aio)


def _enforced(decision: Decision) -> Decision:
    if not decision.allowed:
        raise Denied(decision)
    return decision


def _statistics(statistics: Statistics | bool, policies: tuple[Policy, ...]) -> Statistics | None:
    """The statistics a guard keeps (True: the default ones), in the first DailyCap's time zone
    unless they name their own; None when they are off."""
    if statistics is True:
        statistics = Statistics()
    if isinstance(statistics, Statistics) and statistics.zone is None:
        statistics.zone = next((p.tz for p in policies if isinstance(p, DailyCap)), None)
    return statistics or None
