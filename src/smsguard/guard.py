"""The Guard: attempt -> plan -> backend -> Decision.

Planning and deciding are pure; ``check`` and ``acheck`` differ only in how they call the
backend, so every rule below serves both.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any, Final, Literal, NamedTuple

from smsguard import attempt as codes
from smsguard.attempt import Attempt, Decision
from smsguard.backends.base import Backend, Counter, Flag, Job, Outcome, Receipt
from smsguard.backends.memory import MemoryBackend
from smsguard.errors import BackendUnavailable, ConfigError, Denied, InvalidInput
from smsguard.phone import Digest, canonical, check_region, normalize
from smsguard.policies import EXEMPT, DailyCap, Deny, NumberList, Policy, SameContent, Suspend, Whitelist

log = logging.getLogger("smsguard")

FailMode = Literal["open", "closed", "local"]
FAIL_MODES: Final = ("open", "closed", "local")
IPLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address
_ADDRESS: Final = (ipaddress.IPv4Address, ipaddress.IPv6Address)
_NO_CONTEXT: Final[Mapping[str, Any]] = MappingProxyType({})


class _Plan(NamedTuple):
    """A job for the backend, and who owns each of its flags and counters."""

    attempt: Attempt
    job: Job
    flag_owners: tuple[Policy, ...]
    counter_owners: tuple[Policy, ...]

    def decide(self, out: Outcome) -> Decision:
        """Turn the backend's outcome into the decision (pure)."""
        phone = self.attempt.phone
        if out.flag >= 0:
            flag, owner = self.job.flags[out.flag], self.flag_owners[out.flag]
            if flag.reason is None:
                return Decision(True, phone, owner.name, codes.EXEMPT)
            return Decision(False, phone, owner.name, flag.reason)
        remaining = _Remaining(self, out)
        if out.denied >= 0:
            owner, limit = self.counter_owners[out.denied], self.job.counters[out.denied].limit
            return Decision(False, phone, owner.name, owner.reason, out.retry_after, remaining, limit)
        return Decision(
            True, phone, None, None, None, remaining, None, Receipt(self.job.token, self.job.counters)
        )


class _Remaining(Mapping[str, int]):
    """``Decision.remaining``: hits left per policy, the least over its counters. Worked out
    when first read, since most callers never read it."""

    __slots__ = ("_out", "_plan", "_values")

    def __init__(self, plan: _Plan, out: Outcome) -> None:
        self._plan, self._out = plan, out
        self._values: dict[str, int] | None = None

    def _dict(self) -> dict[str, int]:
        if self._values is None:
            plan, out = self._plan, self._out
            allowed = out.denied < 0
            values: dict[str, int] = {}
            for counter, owner, n in zip(plan.job.counters, plan.counter_owners, out.counts, strict=True):
                left = max(counter.limit - n - allowed, 0)
                values[owner.name] = min(left, values.get(owner.name, left))
            self._values = values
        return self._values

    def __getitem__(self, name: str) -> int:
        return self._dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return repr(self._dict())


class Guard:
    """Policies + backend + settings: turns attempts into decisions.

    ``fail_mode`` says what happens while the backend is unreachable: ``"open"`` allows
    (and logs), ``"closed"`` denies with reason ``backend_unavailable``, ``"local"`` counts in
    an in-process MemoryBackend. After a failure the backend is left alone for
    ``retry_interval`` seconds, then tried again, so recovery needs no restart.
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
    ) -> None:
        self.policies: tuple[Policy, ...] = (
            tuple(policies) if policies is not None else (SameContent(), DailyCap())
        )
        for p in self.policies:
            if not isinstance(p, Policy):
                raise ConfigError(f"{p!r} is not a policy: it needs name, reason and review()")
        names = [p.name for p in self.policies]
        for p in self.policies:
            if names.count(p.name) > 1:
                raise ConfigError(f"two policies are named {p.name!r}: give one a name=")
        if fail_mode not in FAIL_MODES:
            raise ConfigError(f"fail_mode must be one of {FAIL_MODES}, not {fail_mode!r}")
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self.default_region = check_region(default_region)
        self.fail_mode = fail_mode
        self.clock: Callable[[], float] = clock or time.time
        self.retry_interval = retry_interval
        self.fallback = MemoryBackend()
        self._digest = Digest.from_settings(secret, shared=self.backend.shared)
        self._down_until = 0.0
        self._tokens = map(f"{secrets.token_hex(6)}-{{:x}}".format, itertools.count())
        # Caches for what repeats in a flood: the victim's number, the attackers' addresses.
        self._identify = functools.lru_cache(maxsize=phone_cache)(self._identify_uncached)
        self._ip = functools.lru_cache(maxsize=phone_cache)(ipaddress.ip_address)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], prefix: str = "SMSGUARD_") -> Guard:
        """A guard from flat settings (a Flask ``app.config``, environment variables), with
        the Tencent defaults for what is not set:

        ``STORAGE_URI`` (``memory://``), ``SECRET``, ``DEFAULT_REGION``, ``FAIL_MODE`` (``local``),
        ``SAME_CONTENT_WINDOW`` (30; 0 turns it off), ``DAILY_CAP`` (10; 0 off), ``TIMEZONE``
        (``UTC``), ``PHONE_RATE`` (``1/minute;5/hour``; empty off), ``IP_RATE`` (``20/hour``; empty
        off), ``WHITELIST`` and ``BLACKLIST`` (lists of numbers), ``SUSPENDABLE`` (True: add the
        emergency switch).
        """

        def get(name: str, default: Any) -> Any:
            value = settings.get(prefix + name)
            return default if value is None else value

        def listed(name: str) -> list[str]:  # a list, or "a,b" from an environment variable
            value = get(name, ())
            return (
                [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
            )

        from smsguard.backends import backend_from_url
        from smsguard.policies import Blacklist, IPThrottle, PhoneRate

        region = get("DEFAULT_REGION", None)
        policies: list[Policy] = []
        if str(get("SUSPENDABLE", True)).lower() not in ("0", "false", "no", "off"):
            policies.append(Suspend())
        if whitelist := listed("WHITELIST"):
            policies.append(Whitelist(whitelist, region=region))
        if blacklist := listed("BLACKLIST"):
            policies.append(Blacklist(blacklist, region=region))
        if window := float(get("SAME_CONTENT_WINDOW", 30)):
            policies.append(SameContent(window))
        if cap := int(get("DAILY_CAP", 10)):
            policies.append(DailyCap(cap, tz=get("TIMEZONE", "UTC")))
        if rates := get("PHONE_RATE", "1/minute;5/hour"):
            policies.append(PhoneRate(rates))
        if rates := get("IP_RATE", "20/hour"):
            policies.append(IPThrottle(rates))
        return cls(
            policies,
            backend=backend_from_url(get("STORAGE_URI", "memory://")),
            default_region=region,
            fail_mode=get("FAIL_MODE", "local"),
            secret=get("SECRET", None),
        )

    # -- the two shells -------------------------------------------------------------------

    def check(
        self,
        phone: str,
        *,
        content: str | None = None,
        ip: IPLike | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Judge one attempt. Raises InvalidInput (InvalidPhone, MissingSubject) on bad input."""
        plan = self._plan(phone, content, ip, context)
        if isinstance(plan, Decision):
            return plan
        if plan.job.now >= self._down_until:  # not waiting out a recent failure
            try:
                outcome = self.backend.run(plan.job)
            except BackendUnavailable as exc:
                self._mark_down(plan.job.now, exc)
            else:
                return self._decide(plan, outcome)
        return self._degraded(plan)

    async def acheck(
        self,
        phone: str,
        *,
        content: str | None = None,
        ip: IPLike | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """``check`` for async code: the backend is awaited, never blocking the loop."""
        plan = self._plan(phone, content, ip, context)
        if isinstance(plan, Decision):
            return plan
        if plan.job.now >= self._down_until:
            try:
                outcome = await self.backend.arun(plan.job)
            except BackendUnavailable as exc:
                self._mark_down(plan.job.now, exc)
            else:
                return self._decide(plan, outcome)
        return self._degraded(plan)

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

    def refund(self, decision: Decision) -> None:
        """Give back what an allowed attempt consumed (call it when the SMS was not sent).

        A refund that cannot reach the backend is logged and dropped: the number merely
        keeps one hit it could have had back.
        """
        receipt = decision.receipt
        if receipt is not None:
            try:
                (self.fallback if receipt.fallback else self.backend).refund(receipt)
            except BackendUnavailable as exc:
                log.warning("smsguard refund dropped: backend unavailable (%s)", exc)

    async def arefund(self, decision: Decision) -> None:
        """``refund`` for async code."""
        receipt = decision.receipt
        if receipt is not None:
            try:
                await (self.fallback if receipt.fallback else self.backend).arefund(receipt)
            except BackendUnavailable as exc:
                log.warning("smsguard refund dropped: backend unavailable (%s)", exc)

    # -- operations -------------------------------------------------------------------

    def add_number(self, policy: str, phone: str) -> None:
        """Add ``phone`` to the shared list of the Whitelist/Blacklist named ``policy``."""
        self.backend.set_flag(self._shared_list(policy).flag_key(self.identify(phone)[1]))

    def remove_number(self, policy: str, phone: str) -> None:
        """Take ``phone`` out of the shared list of the policy named ``policy``."""
        self.backend.clear_flag(self._shared_list(policy).flag_key(self.identify(phone)[1]))

    def suspend(self) -> None:
        """Turn the emergency switch on: a ``Suspend`` policy then denies every attempt."""
        self.backend.set_flag(Suspend.KEY)

    def resume(self) -> None:
        """Turn the emergency switch off."""
        self.backend.clear_flag(Suspend.KEY)

    # -- the pure core -----------------------------------------------------------------

    def _identify_uncached(self, phone: str) -> tuple[str, str]:
        e164 = normalize(phone, self.default_region)
        return e164, self._digest.hash(e164)  # this cache holds it: keep it out of the digest's

    def identify(self, phone: str) -> tuple[str, str]:
        """(E.164, keyed hash) of ``phone``; raises InvalidPhone. Cached on a canonical form,
        so that the formats an attacker rotates through share one entry."""
        return self._identify(canonical(phone))

    def _plan(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
    ) -> _Plan | Decision:
        """Build the attempt and ask every policy; a list verdict decides at once."""
        now = self.clock()
        if not isinstance(phone, str):
            raise InvalidInput(f"phone must be a string, not {type(phone).__name__}")
        if content is not None and not isinstance(content, str):
            raise InvalidInput(f"content must be a string, not {type(content).__name__}")
        e164, phone_id = self._identify(canonical(phone))
        if ip is not None and not isinstance(ip, _ADDRESS):
            try:
                ip = self._ip(ip)
            except ValueError:
                raise InvalidInput(f"{ip!r} is not an IPv4 or IPv6 address") from None
        attempt = Attempt(
            e164,
            phone_id,
            self._digest,
            content,
            None if content is None else self._digest(content),
            ip,
            _NO_CONTEXT if context is None else context,
        )
        flags: list[Flag] = []
        counters: list[Counter] = []
        flag_owners: list[Policy] = []
        counter_owners: list[Policy] = []
        for policy in self.policies:
            review = policy.review(attempt, now)
            if review is EXEMPT:
                return Decision(True, e164, policy.name, codes.EXEMPT)
            if isinstance(review, Deny):
                return Decision(False, e164, policy.name, review.reason, review.retry_after)
            for item in review:  # type: ignore[union-attr]
                if isinstance(item, Counter):
                    counters.append(item)
                    counter_owners.append(policy)
                elif isinstance(item, Flag):
                    flags.append(item)
                    flag_owners.append(policy)
                else:
                    raise TypeError(f"{policy.name}.review() gave {item!r}: expected Counter or Flag items")
        job = Job(now, next(self._tokens), tuple(flags), tuple(counters))
        return _Plan(attempt, job, tuple(flag_owners), tuple(counter_owners))

    # -- fail modes --------------------------------------------------------------------

    def _decide(self, plan: _Plan, outcome: Outcome) -> Decision:
        if self._down_until:
            log.warning("smsguard backend reachable again")
            self._down_until = 0.0
        return plan.decide(outcome)

    def _mark_down(self, now: float, exc: BackendUnavailable) -> None:
        if self._down_until == 0.0:
            log.warning("smsguard backend unavailable (%s); fail mode %r", exc, self.fail_mode)
        self._down_until = now + self.retry_interval

    def _degraded(self, plan: _Plan) -> Decision:
        """The decision while the backend is down, by fail mode."""
        phone = plan.attempt.phone
        if self.fail_mode == "open":
            return Decision(True, phone, None, codes.FAIL_OPEN)
        if self.fail_mode == "closed":
            retry = max(self._down_until - plan.job.now, 1.0)
            return Decision(False, phone, None, codes.BACKEND_UNAVAILABLE, retry)
        decision = plan.decide(self.fallback.run(plan.job))
        if decision.receipt is None:
            return decision
        return replace(decision, receipt=decision.receipt._replace(fallback=True))

    def _shared_list(self, policy: str) -> NumberList:
        for p in self.policies:
            if p.name == policy and isinstance(p, NumberList) and p.shared:
                return p
        raise ConfigError(f"no Whitelist/Blacklist named {policy!r} with shared=True in this guard")
