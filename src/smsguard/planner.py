"""Planning: an attempt in, a Plan (or an immediate Decision) out. Pure: no I/O, no clock."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import secrets
from collections.abc import Iterable, Mapping
from socket import AF_INET, inet_ntop, inet_pton
from types import MappingProxyType
from typing import Any, Final

from smsguard import attempt as codes
from smsguard.attempt import Attempt, Decision
from smsguard.errors import ConfigError, InvalidInput, MissingSubject
from smsguard.phone import Digest, Number, canonical, identify
from smsguard.plan import Counter, Flag, Job, Owner, Plan, Record, Verdict, built
from smsguard.policies import (
    ATTEMPT,
    EXEMPT,
    JUDGED,
    NUMBER,
    Deny,
    Kinded,
    Learning,
    NeedsDetails,
    NumberList,
    OnVerified,
    Policy,
    Shadowing,
    Suspend,
)

IPLike = str | ipaddress.IPv4Address | ipaddress.IPv6Address
ADDRESS: Final = (ipaddress.IPv4Address, ipaddress.IPv6Address)
"""The types of an address already parsed (an adapter's): taken as given."""
_NO_CONTEXT: Final[Mapping[str, Any]] = MappingProxyType({})

# A decision's Attempt, Job and Plan are built here as plain tuples, in these field orders.
built(Attempt, "phone", "phone_id", "digest", "content", "content_id", "ip", "context", "region",
      "number_type", "network", "challenge_passed")  # fmt: skip
built(Job, "now", "token", "flags", "counters", "commit", "code")
_new = built(Plan, "attempt", "job", "flag_owners", "counter_owners", "final", "shadowed")


class Planner:
    """Asks every policy, in order, about an attempt; collects what the backend must do.

    Caches what repeats in a flood: the victim's number (on a canonical form, so that the
    formats an attacker rotates through share one entry) and the attackers' addresses.
    """

    def __init__(
        self,
        policies: Iterable[Policy],
        *,
        region: str | None,
        digest: Digest,
        cache: int,
        dry_run: bool = False,
    ) -> None:
        self.policies = tuple(policies)
        for p in self.policies:
            if not isinstance(p, Policy):
                raise ConfigError(f"{p!r} is not a policy: it needs name, reason and review()")
        names = [p.name for p in self.policies]
        for p in self.policies:
            if names.count(p.name) > 1:
                raise ConfigError(f"two policies are named {p.name!r}: give one a name=")
        self.shadows = frozenset(
            p.name for p in self.policies if dry_run or (isinstance(p, Shadowing) and p.shadow)
        )
        """The names of the policies in shadow: counted and reported, never denying."""
        self.owners = {p.name: Owner(p.name, p.reason, _kind(p)) for p in self.policies}
        """Each policy's name, reason and kind: what a plan keeps of it."""
        # Each policy; its shadow group (0 for an enforcing one, else its own number); whether it
        # can challenge (passed over once the client passed one); until when it only learns; its
        # group number; its owner.
        self._asked = tuple(
            (
                p,
                (i + 1) * (p.name in self.shadows),
                self.owners[p.name].kind == codes.CHALLENGE,
                (p.learn_until if isinstance(p, Learning) else None) or 0.0,
                i + 1,
                self.owners[p.name],
            )
            for i, p in enumerate(self.policies)
        )
        counted = {p.name: vars(type(p)).get("counted_by") for p in self.policies}
        early = not self.shadows and all(by in (NUMBER, ATTEMPT, JUDGED) for by in counted.values())
        self.by_number = (
            tuple((a[0], a[2], a[5]) for a in self._asked if counted[a[0].name] == NUMBER) if early else None
        )
        """The policies counted by the number alone (each with whether it challenges, and its
        owner), when every policy says what it counts by (``Counted``) and none is in shadow;
        else None. Their counters are all of an attempt's that a flood can fill (see
        ``number_plan``)."""
        self._early = tuple(
            (a[0], a[2], a[5], counted[a[0].name] == JUDGED)
            for a in self._asked
            if counted[a[0].name] in (NUMBER, JUDGED)
        )
        # The policies number_plan asks, in order: those counted by the number, and those that
        # judge from the number and the content's text (``JUDGED``), each with whether it does.
        steady = {p.name: vars(type(p)).get("steady") is True for p in self.policies}
        self.steady = self.by_number is not None and all(
            steady[policy.name] or judged for policy, _, _, judged in self._early
        )
        """Whether a number's early plan is the same at any time but for its counters' times
        (every policy counted by the number is ``Steady``): the deny cache may then keep a
        number's early denial (``DenyCache.recall``), asking again only the ``JUDGED`` policies
        that are not steady (``settled``)."""
        self._unsteady = tuple(
            (policy, challenges)
            for policy, challenges, _, judged in self._early
            if judged and not steady[policy.name]
        )
        self.early_from = max((asked[3] for asked in self._asked), default=0.0)
        """From when no policy learns (in shadow until its ``learn_until``): ``number_plan``
        plans nothing before."""
        self.details = any(isinstance(p, NeedsDetails) and p.needs_details for p in self.policies)
        """Whether attempts carry the number's type and network (about 20 µs a new number)."""
        self._learners = tuple(p for p in self.policies if isinstance(p, OnVerified))
        self.region = region
        self.digest = digest
        self._tokens = map(f"{secrets.token_hex(6)}-{{:x}}".format, itertools.count())
        self._number = functools.lru_cache(maxsize=cache)(self._number_uncached)
        self._ip = functools.lru_cache(maxsize=cache)(address)
        # For number_plan: the Number of a number as typed (a flood repeats its spellings too).
        self._typed = functools.lru_cache(maxsize=cache)(lambda phone: self._number(canonical(phone)))
        # For number_plan: addresses seen valid, as typed (a flood's come back), ``cache`` at most.
        self._addresses: set[str] = set()
        self._cache = cache

    def _number_uncached(self, phone: str) -> Number:
        return identify(phone, self.region, digest=self.digest.hash, details=self.details)

    def identify(self, phone: str) -> Number:
        """The ``Number`` of ``phone`` (its type and network None unless a policy needs them);
        raises InvalidPhone. Cached: a flood repeats its victims."""
        if not isinstance(phone, str):
            raise InvalidInput(f"phone must be a string, not {type(phone).__name__}")
        return self._number(canonical(phone))

    def plan(
        self,
        phone: str,
        content: str | None,
        ip: IPLike | None,
        context: Mapping[str, Any] | None,
        now: float,
        lenient: bool = False,
        challenge_passed: bool = False,
    ) -> Plan | Decision:
        """Build the attempt and ask every policy. A fixed list verdict with no shared flag
        before it decides at once, with no backend call. ``lenient`` (for reading, not
        deciding) passes over list verdicts and policies whose subject is missing."""
        attempt = self.attempt(phone, content, ip, context, challenge_passed)
        flags: list[Flag] = []
        counters: list[Counter] = []
        flag_owners: list[Owner] = []
        counter_owners: list[Owner] = []
        shadowed: list[str] = []  # shadow policies whose fixed verdict would deny
        enforcing_flags = False
        final: Verdict | None = None
        for policy, shadow, challenges, learn_until, group, owner in self._asked:
            if challenges and challenge_passed:
                continue  # the client passed the challenge: the remaining policies judge it
            learning = now < learn_until
            if learning:
                shadow = group  # still learning: it records only
            if lenient:
                try:
                    review = policy.review(attempt, now)
                except MissingSubject:
                    continue
                if review is EXEMPT or isinstance(review, Deny):
                    continue
            else:
                review = policy.review(attempt, now)
            if shadow:  # counted and reported, never deciding: an exemption does nothing
                if isinstance(review, Deny):
                    shadowed.append(policy.name)
                elif review is not EXEMPT:
                    for item in review:  # type: ignore[union-attr]
                        if isinstance(item, Counter):
                            # Its hits its own: off a log that enforcing counters may share
                            # (while learning it keeps its log, which it counts on later).
                            counters.append(item._replace(shadow=shadow, log=item.log if learning else None))
                            counter_owners.append(owner)
                        elif isinstance(item, Flag):
                            if item.reason is not None:
                                flags.append(item._replace(shadow=True))
                                flag_owners.append(owner)
                        else:
                            raise _not_an_item(policy, item)
                continue
            if review is EXEMPT:
                final = Verdict(True, policy.name, codes.EXEMPT)
            elif isinstance(review, Deny):
                final = Verdict(False, policy.name, review.reason, review.retry_after, review.kind)
            else:
                for item in review:  # type: ignore[union-attr]
                    if isinstance(item, Counter):
                        counters.append(item)
                        counter_owners.append(owner)
                    elif isinstance(item, Flag):
                        flags.append(item)
                        flag_owners.append(owner)
                        enforcing_flags = True
                    else:
                        raise _not_an_item(policy, item)
                continue
            # A fixed verdict ends the asking. It stands unless a shared flag before it is set:
            # then only those flags need reading, and nothing is counted.
            if not enforcing_flags:
                return final.decision(attempt, tuple(shadowed))
            counters, counter_owners = [], []
            break
        job = _new(Job, (now, next(self._tokens), tuple(flags), tuple(counters), True, None))
        return _new(Plan, (attempt, job, tuple(flag_owners), tuple(counter_owners), final, tuple(shadowed)))

    def number_plan(
        self,
        phone: str,
        content: str,
        ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
        now: float,
        challenge_passed: bool,
        context: Mapping[str, Any] | None = None,
    ) -> Plan | None:
        """A plan of only the counters ``by_number`` gives ``phone`` at ``now``, and the flags of
        the policies that judge by the number (``JUDGED``), for the deny cache to answer before
        the whole attempt is planned: ``plan_number`` of ``early_attempt``. None where either
        gives None. Raises InvalidPhone as ``plan`` does."""
        attempt = self.early_attempt(phone, content, ip, now, challenge_passed, context)
        return None if attempt is None else self.plan_number(attempt, now)

    def early_attempt(
        self,
        phone: str,
        content: str,
        ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
        now: float,
        challenge_passed: bool,
        context: Mapping[str, Any] | None = None,
    ) -> Attempt | None:
        """The attempt an early plan reads: the number's fields, the content's text and the
        context, no ``content_id`` nor ``ip`` (a denial's Decision reads no other). None if
        ``ip`` is no address (the whole plan raises) or before ``early_from``. Raises
        InvalidPhone as ``plan`` does."""
        if now < self.early_from or not (
            (ip in self._addresses or self._seen(ip)) if type(ip) is str else isinstance(ip, ADDRESS)
        ):
            return None
        e164, phone_id, region, kind, network = self._typed(phone)
        given = _NO_CONTEXT if context is None else context
        number = (e164, phone_id, self.digest, content, None, None, given, region, kind, network)
        return _new(Attempt, (*number, challenge_passed))

    def plan_number(self, attempt: Attempt, now: float) -> Plan | None:
        """``number_plan`` of an ``early_attempt``: None if a ``JUDGED`` policy gives a verdict
        (the whole plan gives it)."""
        counters: list[Counter] = []
        owners: list[Owner] = []
        flags: list[Flag] = []
        flag_owners: list[Owner] = []
        challenge_passed = attempt.challenge_passed
        for policy, challenges, owner, judged in self._early:
            if challenges and challenge_passed:
                continue
            review = policy.review(attempt, now)
            if not judged:
                for item in review:  # type: ignore[union-attr]
                    counters.append(item)  # type: ignore[arg-type]
                    owners.append(owner)
                continue
            if review is EXEMPT or isinstance(review, Deny):
                return None
            for item in review:  # type: ignore[union-attr]
                if isinstance(item, Flag):
                    flags.append(item)
                    flag_owners.append(owner)
                # its counters are left to the whole plan, as those of ATTEMPT's
        job = _new(Job, (now, "", tuple(flags), tuple(counters), True, None))
        return _new(Plan, (attempt, job, tuple(flag_owners), tuple(owners), None, ()))

    def settled(self, attempt: Attempt, now: float) -> bool:
        """Whether ``attempt``'s early plan (an ``early_attempt``) is its number's steady one
        (``steady``): the ``JUDGED`` policies that are not steady (rules on the text) give
        neither a verdict nor a flag. Else ``plan_number`` judges."""
        challenge_passed = attempt.challenge_passed
        for policy, challenges in self._unsteady:
            if challenges and challenge_passed:
                continue
            review = policy.review(attempt, now)
            if review is EXEMPT or isinstance(review, Deny):
                return False
            for item in review:  # type: ignore[union-attr]
                if isinstance(item, Flag):
                    return False
        return True

    def _seen(self, ip: str) -> bool:
        """Whether ``ip`` is an address (kept among those seen valid, ``cache`` at most)."""
        if not is_address(ip):
            try:
                self._ip(ip)
            except ValueError:
                return False
        if len(self._addresses) >= self._cache:
            self._addresses.clear()
        self._addresses.add(ip)
        return True

    def attempt(
        self,
        phone: str,
        content: str | None = None,
        ip: IPLike | None = None,
        context: Mapping[str, Any] | None = None,
        challenge_passed: bool = False,
    ) -> Attempt:
        """The attempt the policies see; raises InvalidInput (InvalidPhone) on bad input."""
        if not isinstance(phone, str):
            raise InvalidInput(f"phone must be a string, not {type(phone).__name__}")
        if content is not None and not isinstance(content, str):
            raise InvalidInput(f"content must be a string, not {type(content).__name__}")
        e164, phone_id, region, kind, network = self._number(canonical(phone))  # identify(), inlined
        if ip is not None and not isinstance(ip, ADDRESS):
            try:
                ip = self._ip(ip)
            except ValueError:
                raise InvalidInput(f"{ip!r} is not an IPv4 or IPv6 address") from None
        digest = self.digest
        return _new(
            Attempt,
            (
                e164,
                phone_id,
                digest,
                content,
                None if content is None else digest(content),
                ip,
                _NO_CONTEXT if context is None else context,
                region,
                kind,
                network,
                challenge_passed,
            ),
        )

    def verified(self, phone: str, ip: IPLike | None, now: float) -> tuple[Attempt, Record]:
        """The attempt of a verified number, and what its verification records (each policy's
        ``on_verified``), as one write. The record is named by the number's hash: a number
        verified again moves its marks on, so that it earns its scopes room once per window."""
        attempt = self.attempt(phone, None, ip)
        counters: list[Counter] = []
        for policy in self._learners:
            counters += policy.on_verified(attempt, now)
        return attempt, Record(attempt.phone_id, tuple(counters), now)

    def token(self) -> str:
        """A token no other job of this process has."""
        return next(self._tokens)

    def peek(self, phone: str, content: str | None, ip: IPLike | None, now: float) -> Plan:
        """A read-only plan of the counters that hold ``phone`` (and ``content`` and ``ip``
        where given): the policies whose subject is missing, and list verdicts, are passed over."""
        plan = self.plan(phone, content, ip, None, now, lenient=True)
        if isinstance(plan, Decision):  # lenient plans never decide at once
            raise AssertionError(plan)
        counters = tuple(c._replace(shadow=0) for c in plan.job.counters)  # read all alike
        job = plan.job._replace(flags=(), counters=counters, commit=False)
        return plan._replace(job=job, flag_owners=(), final=None, shadowed=())

    def shared_list(self, name: str) -> NumberList:
        """The Whitelist/Blacklist named ``name`` that keeps a shared list in the backend."""
        for p in self.policies:
            if p.name == name and isinstance(p, NumberList) and p.shared:
                return p
        raise ConfigError(f"no Whitelist/Blacklist named {name!r} with shared=True in this guard")

    def switch(self) -> Suspend:
        """The guard's emergency switch; a ConfigError if it has none (turning on a switch that
        no policy reads would silently change nothing)."""
        for p in self.policies:
            if isinstance(p, Suspend):
                return p
        raise ConfigError("this guard has no Suspend policy: add Suspend() (first, to stop everything)")


def address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address(text)``, an IPv4 address in its usual dotted form read by the C
    library (a third of the cost, for every new client): the same address, and the same
    ValueError for what is none."""
    try:
        packed = inet_pton(AF_INET, text)
    except (OSError, TypeError, ValueError):
        return ipaddress.ip_address(text)
    if inet_ntop(AF_INET, packed) != text:  # another spelling of it: ipaddress judges that
        return ipaddress.ip_address(text)
    return ipaddress.IPv4Address(packed)


def is_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 address in its usual dotted form, by the C library alone (a
    flood's addresses are new, and building each one's ``IPv4Address`` costs five times this).
    False says nothing: ``address`` judges the other spellings, and IPv6."""
    try:
        return inet_ntop(AF_INET, inet_pton(AF_INET, text)) == text
    except (OSError, TypeError, ValueError):
        return False


def _kind(policy: Policy) -> str:
    """The kind of a refusal by ``policy``'s counters: its own, else ``limit``."""
    return policy.kind if isinstance(policy, Kinded) else codes.LIMIT


def _not_an_item(policy: Policy, item: object) -> TypeError:
    return TypeError(f"{policy.name}.review() gave {item!r}: expected Counter or Flag items")
