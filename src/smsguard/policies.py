"""The policy objects. Each looks at an attempt and answers with a Review.

A policy is anything with a ``name``, a ``reason`` and a ``review(attempt, now)`` method
(see ``Policy``); no base class is needed. ``review`` returns one of:

- ``EXEMPT``: allow the attempt without counting it anywhere (a whitelist);
- ``Deny(reason)``: refuse it outright (a blacklist);
- a sequence of ``Counter`` and ``Flag`` items for the backend (empty: no opinion).

Every built-in takes ``shadow=True`` (and ``Shadow`` wraps a policy of your own): the policy is
then asked, counted and reported (``Decision.shadowed``) but never denies: to try a new limit
on real traffic before it blocks anyone.

The guard asks every policy in order. The first list verdict in that order wins, whether
the list is fixed in code (EXEMPT, Deny) or kept in the backend (a Flag): ``Suspend`` placed
first stops everything, whitelisted numbers included. Counters are consumed only after every
policy has spoken, all or none.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from socket import AF_INET, inet_ntop
from typing import Final, Protocol, Union, runtime_checkable

from limits import RateLimitItem, parse_many

from smsguard import attempt as codes
from smsguard.attempt import Attempt, Usage
from smsguard.days import LocalDays
from smsguard.errors import ConfigError, InvalidPhone, MissingSubject
from smsguard.phone import normalize
from smsguard.plan import Counter, Flag, built, key, key_parts


class Exempt:
    """The verdict that lets an attempt through uncounted. Use the ``EXEMPT`` instance."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXEMPT"


EXEMPT: Final = Exempt()


@dataclass(frozen=True, slots=True)
class Deny:
    """The verdict that refuses an attempt outright, with a stable reason code.

    ``kind`` says what the refusal is (``forbidden`` by default; ``limit`` when waiting
    ``retry_after`` helps, ``unavailable``, ``challenge``): adapters pick the status from it.
    """

    reason: str
    retry_after: float | None = None
    kind: str = codes.FORBIDDEN

    def __post_init__(self) -> None:
        if self.kind not in codes.KINDS:
            raise ConfigError(f"Deny kind must be one of {codes.KINDS}, not {self.kind!r}")


Review = Union[Exempt, Deny, Sequence[Union[Counter, Flag]]]  # noqa: UP007 (a runtime alias)


@runtime_checkable
class Policy(Protocol):
    """What the guard needs of a policy."""

    @property
    def name(self) -> str:
        """Unique within a guard; shown in ``Decision.policy`` and used in counter keys."""
        ...

    @property
    def reason(self) -> str:
        """The reason code of a denial by one of this policy's counters."""
        ...

    def review(self, attempt: Attempt, now: float) -> Review:
        """Judge ``attempt`` at ``now`` (epoch seconds). Must not do I/O."""
        ...


# What a policy may offer beyond ``Policy``: the guard asks for each by its protocol (once, when
# it is built), so a user's policy opts in by having the attribute, no base class needed.


@runtime_checkable
class Kinded(Protocol):
    """A policy whose counters refuse with another kind than ``limit`` (``unavailable`` for
    the switch and a budget, ``challenge`` for a cap a CAPTCHA lifts)."""

    @property
    def kind(self) -> str: ...


@runtime_checkable
class Shadowing(Protocol):
    """A policy that may run in shadow (``shadow=True``): counted and reported, never denying."""

    @property
    def shadow(self) -> bool: ...


@runtime_checkable
class Learning(Protocol):
    """A policy that only records (in shadow) until ``learn_until`` (epoch seconds; None: it
    enforces from the start)."""

    @property
    def learn_until(self) -> float | None: ...


NUMBER: Final = "number"
"""``counted_by`` of a policy whose review is counters only, keyed and limited by the number
alone (and ``now``): it reads no attempt field but the number's (phone, phone_id, digest, region,
number_type, network)."""
ATTEMPT: Final = "attempt"
"""``counted_by`` of a policy whose review is counters only, never a verdict nor a flag, and
raises only for a missing content or IP (whatever it reads of the attempt)."""
JUDGED: Final = "judged"
"""``counted_by`` of a policy whose verdicts (exempt, deny) and flags come from the number's fields,
the content's text (``content``, never ``content_id``), ``context`` and ``challenge_passed``
alone (and ``now``), never from ``ip``: a list, the switch, a country allow-list, rules on the
text. Its counters, if it gives any, may be keyed by anything (as ``ATTEMPT``'s)."""


@runtime_checkable
class Counted(Protocol):
    """A policy that says what its counters are keyed by and what it judges from (``NUMBER``,
    ``ATTEMPT`` or ``JUDGED``), on its own class (a subclass must say so again): a guard whose
    policies all say so, none in shadow, denies a flood's attempts from its deny cache before
    planning them, once none learns (see ``Planner.number_plan``)."""

    @property
    def counted_by(self) -> str: ...


@runtime_checkable
class Steady(Protocol):
    """A ``NUMBER`` or ``JUDGED`` policy whose part in a number's early plan (a ``NUMBER`` policy's
    counters; a ``JUDGED`` one's verdict and flags) is the same at any time, for any content and
    context, but for its counters' ``expires_at`` and ``since`` (``steady = True``, on its own
    class, as ``counted_by``): the deny cache then keeps a number's early denial, once planned,
    until something it rests on changes (``DenyCache.recall``), and its next denials skip
    planning. A ``JUDGED`` policy that is not steady (one that reads the text) is asked again
    each time."""

    @property
    def steady(self) -> bool: ...


@runtime_checkable
class NeedsDetails(Protocol):
    """A policy that reads an attempt's ``number_type`` and ``network`` (when ``needs_details``
    is true): the guard then works them out, about 20 µs a new number."""

    @property
    def needs_details(self) -> bool: ...


@runtime_checkable
class OnVerified(Protocol):
    """A policy that learns from verifications: ``Guard.verified`` records the hits it gives."""

    def on_verified(self, attempt: Attempt, now: float) -> Sequence[Counter]:
        """The hits to record (unconditionally) when ``attempt``'s number was verified."""
        ...


@runtime_checkable
class Alarming(Protocol):
    """A policy that tells when an allowed attempt brings one of its counters to an alarm."""

    def crossed(self, counter: Counter, before: int) -> str | None:
        """What to report (a budget alarm's detail) if one more hit on ``counter``, which held
        ``before``, crosses the alarm; else None."""
        ...


MAX_SECONDS: Final = 100 * 365 * 86400
"""The longest window, ttl or trust period: a century. Longer ones (``inf``, ``1e300``, a rate
per a billion years) would pass as positive and fail every check on the backend."""


def positive(what: str, value: float) -> None:
    """A ConfigError unless ``value`` is above 0 and finite."""
    if not value > 0 or value == math.inf:
        raise ConfigError(f"{what} must be positive and finite, got {value!r}")


def seconds(what: str, value: float) -> None:
    """A ConfigError unless ``value`` is a duration above 0 and within ``MAX_SECONDS``."""
    positive(what, value)
    if value > MAX_SECONDS:
        raise ConfigError(f"{what} must be at most a century ({MAX_SECONDS} s), got {value!r}")


def parse_rates(rates: str) -> tuple[RateLimitItem, ...]:
    """Parse a ``limits`` rate string (``"5/minute;20/hour"``) or raise ConfigError."""
    try:
        items = tuple(parse_many(rates))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{rates!r} is not a rate string such as '5/minute;20/hour': {exc}") from None
    if not items:
        raise ConfigError(f"{rates!r} holds no rate")
    for item in items:
        if item.amount < 1:
            raise ConfigError(f"{rates!r}: a rate allows at least 1 per window, not {item.amount}")
        if item.get_expiry() > MAX_SECONDS:
            raise ConfigError(f"{rates!r}: a rate's window is at most a century")
    return items


def usage(policy: Policy, counter: Counter, used: int, frees_in: float | None) -> Usage:
    """``counter`` of ``policy`` as ``Guard.status`` shows it: in hits, or in the unit the
    policy names for it (``unit(counter)``: a SpendCap's dollars)."""
    unit: Callable[[Counter], tuple[str, int]] | None = getattr(policy, "unit", None)
    name, per = ("", 1) if unit is None else unit(counter)
    limit, remaining = counter.limit, max(counter.limit - used, 0)
    if per == 1:
        return Usage(policy.name, used, limit, remaining, frees_in, name)
    return Usage(policy.name, used / per, limit / per, remaining / per, frees_in, name)


def _missing(policy: str, what: str, skip: bool) -> Sequence[Counter]:
    if skip:
        return ()
    raise MissingSubject(
        f"{policy} needs {what}: pass it to check(), or build the policy with skip_missing=True",
        subject=what.rstrip("="),
    )


_SENT_HEAD, _SENT_TAIL = key_parts("sent")


def sent_log(phone_id: str) -> str:
    """The log of a number's sends (``sent:{number hash}``): SameContent, DailyCap and PhoneRate
    count from it, so that a backend keeping hit times (Redis) holds one key per number."""
    return _SENT_HEAD + phone_id + _SENT_TAIL


# The built-in policies build their counters as plain tuples, in this order: a NamedTuple's own
# __new__ binds its thirteen arguments in Python, three times the cost (a decision makes several).
_new = built(
    Counter, "key", "limit", "expires_at", "shadow", "unless", "earn", "per_earned", "amount", "window",
    "since", "log", "match", "member", "gate", "gate_at",
)  # fmt: skip


class SameContent:
    """At most ``limit`` messages with the same content to one number per ``window`` seconds.

    The default is the SMS providers' rule: one identical message per number per 30 s.
    """

    reason = codes.SAME_CONTENT
    counted_by = ATTEMPT

    def __init__(
        self,
        window: float = 30,
        *,
        limit: int = 1,
        name: str = "same_content",
        skip_missing: bool = False,
        shadow: bool = False,
    ) -> None:
        seconds("window", window)
        positive("limit", limit)
        self.name, self.window, self.limit, self.skip_missing = name, window, limit, skip_missing
        self.shadow = shadow
        self._key = key_parts(name)

    def review(self, attempt: Attempt, now: float) -> Review:
        phone_id, content_id, window = attempt.phone_id, attempt.content_id, self.window
        if content_id is None:
            return _missing(self.name, "content=", self.skip_missing)
        head, tail = self._key  # key(name, phone_id, content_id), spelled out
        return (
            _new(
                Counter,
                (
                    f"{head}{phone_id}{tail}:{content_id}",
                    self.limit, now + window, 0, None, None, 0.0, 0, window, None,
                    _SENT_HEAD + phone_id + _SENT_TAIL,
                    content_id,
                    None, None, 0,
                ),
            ),
        )  # fmt: skip


class DailyCap:
    """At most ``limit`` messages to one number per calendar day in time zone ``tz``.

    The day is the real local day: it resets at local midnight, on 23- and 25-hour DST days
    too. The default zone is UTC; set the one your SMS provider counts days in
    (``"Asia/Shanghai"`` for the mainland Chinese providers).
    """

    reason = codes.DAILY_CAP
    counted_by = NUMBER
    steady = True

    def __init__(
        self, limit: int = 10, *, tz: str = "UTC", name: str = "daily_cap", shadow: bool = False
    ) -> None:
        positive("limit", limit)
        self.days = LocalDays(tz)
        self.tz = self.days.tz
        self.name, self.limit, self.shadow = name, limit, shadow
        self._key = key_parts(name)

    def review(self, attempt: Attempt, now: float) -> Review:
        head, tail = self._key
        phone_id = attempt.phone_id
        start, end, _ = self.days._day  # self.days(now), its usual case inlined
        if not start <= now < end:
            start, end, _ = self.days(now)
        return (
            _new(
                Counter,
                (
                    head + phone_id + tail, self.limit, end, 0, None, None, 0.0, 0, None, start,
                    _SENT_HEAD + phone_id + _SENT_TAIL, None, None, None, 0,
                ),
            ),
        )  # fmt: skip


class _Rates:
    """Shared by the rate policies: one sliding-window counter per item of a rate string."""

    def __init__(self, rates: str, name: str, shadow: bool) -> None:
        self.name = name
        self.rates = rates
        self.shadow = shadow
        # Per rate: its key around the subject ("phone_rate:{", "}:5/3600"), amount, window.
        self._items = tuple(
            (*key_parts(name, f"{i.amount}/{i.get_expiry()}"), i.amount, float(i.get_expiry()))
            for i in parse_rates(rates)
        )

    def counters(self, subject: str, now: float, log: str) -> tuple[Counter, ...]:
        """One counter per rate, all of them on ``log``."""
        counters = []
        for head, tail, amount, window in self._items:  # a loop, not a comprehension: no extra frame
            c = (
                head + subject + tail,
                amount,
                now + window,
                0,
                None,
                None,
                0.0,
                0,
                window,
                None,
                log,
                None,
                None,
                None,
                0,
            )
            counters.append(_new(Counter, c))
        return tuple(counters)


class PhoneRate(_Rates):
    """Sliding-window rates per number, in ``limits``' vocabulary: ``"1/minute;5/hour"``."""

    reason = codes.PHONE_RATE
    counted_by = NUMBER
    steady = True

    def __init__(
        self, rates: str = "1/minute;5/hour", *, name: str = "phone_rate", shadow: bool = False
    ) -> None:
        super().__init__(rates, name, shadow)

    def review(self, attempt: Attempt, now: float) -> Review:
        phone_id = attempt.phone_id
        return self.counters(phone_id, now, _SENT_HEAD + phone_id + _SENT_TAIL)


class IPThrottle(_Rates):
    """Sliding-window rates per client network: ``"20/hour"``.

    IPv4 addresses count one by one (``ipv4_prefix=32``); IPv6 ones by /64, since anyone
    holding one IPv6 address holds its whole /64. IPv4-mapped IPv6 addresses count as IPv4.
    An attempt without an IP raises MissingSubject unless ``skip_missing=True``.

    An address earns room for the codes entered from it (a campus, an office, a carrier NAT):
    each number verified from it (``Guard.verified(phone, ip=...)``) adds ``per_verified`` to
    each of its rates for that rate's window, once per number. With ``challenge=True`` its
    refusal is of kind ``challenge`` (a CAPTCHA lifts it) instead of ``limit``.
    """

    reason = codes.IP_THROTTLE
    counted_by = ATTEMPT

    def __init__(
        self,
        rates: str = "20/hour",
        *,
        ipv4_prefix: int = 32,
        ipv6_prefix: int = 64,
        name: str = "ip_throttle",
        skip_missing: bool = False,
        per_verified: float = 0.0,
        challenge: bool = False,
        shadow: bool = False,
    ) -> None:
        if not (0 <= ipv4_prefix <= 32 and 0 <= ipv6_prefix <= 128):
            raise ConfigError("ipv4_prefix must be within 0..32 and ipv6_prefix within 0..128")
        if per_verified < 0:
            raise ConfigError(f"IPThrottle per_verified must not be negative, not {per_verified!r}")
        super().__init__(rates, name, shadow)
        self.per_verified = per_verified
        self.kind = codes.CHALLENGE if challenge else codes.LIMIT
        self.ipv4_prefix, self.ipv6_prefix, self.skip_missing = ipv4_prefix, ipv6_prefix, skip_missing
        self._log = key_parts(name)  # one log of hit times per network, for all its rates
        self._subject = functools.lru_cache(maxsize=4096)(self._hashed_network)  # clients repeat

    def network(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        """The network ``ip`` is counted under, as text."""
        if ip.__class__ is ipaddress.IPv4Address and self.ipv4_prefix == 32:
            return inet_ntop(AF_INET, ip.packed)  # str(ip), by the C library
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        prefix = self.ipv4_prefix if ip.version == 4 else self.ipv6_prefix
        if prefix == ip.max_prefixlen:
            return str(ip)
        return str(ipaddress.ip_network((ip, prefix), strict=False))

    def _hashed_network(
        self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, digest: Callable[[str], str]
    ) -> str:
        return digest(self.network(ip))

    def review(self, attempt: Attempt, now: float) -> Review:
        if attempt.ip is None:
            return _missing(self.name, "ip=", self.skip_missing)
        subject = self._subject(attempt.ip, attempt.digest)
        head, tail = self._log
        found = self.counters(subject, now, head + subject + tail)
        if not self.per_verified:
            return found
        return tuple(
            c._replace(earn=key(self.name, subject, "earned", f"{c.window:g}"), per_earned=self.per_verified)
            for c in found
        )

    def on_verified(self, attempt: Attempt, now: float) -> Sequence[Counter]:
        """A number verified from an address earns it room in each window, once per number."""
        if not self.per_verified or attempt.ip is None:
            return ()
        subject = self._subject(attempt.ip, attempt.digest)
        return tuple(
            Counter(
                key(self.name, subject, "earned", f"{window:g}"), 1, now + window, member=attempt.phone_id
            )
            for _, _, _, window in self._items
        )


class NumberList:
    """Numbers fixed at construction, plus (``shared=True``) a set kept in the backend that
    every worker reads in the same round trip, changed at runtime with ``Guard.add_number``."""

    verdict: Exempt | Deny

    def __init__(
        self, numbers: Iterable[str], region: str | None, name: str, shared: bool, shadow: bool
    ) -> None:
        try:
            self.numbers = frozenset(normalize(n, region) for n in numbers)
        except InvalidPhone as exc:
            raise ConfigError(f"{name}: {exc}") from None
        self.name, self.shared, self.shadow = name, shared, shadow

    def flag_key(self, phone_id: str) -> str:
        """The backend flag that holds ``phone_id`` on this shared list."""
        return key(self.name, phone_id)

    def review(self, attempt: Attempt, now: float) -> Review:
        if attempt.phone in self.numbers:
            return self.verdict
        if self.shared:
            reason = None if isinstance(self.verdict, Exempt) else self.verdict.reason
            return (Flag(self.flag_key(attempt.phone_id), reason),)
        return ()


class Whitelist(NumberList):
    """Numbers exempt from every limit (test and alarm numbers)."""

    reason = codes.EXEMPT
    counted_by = JUDGED
    steady = True
    verdict = EXEMPT

    def __init__(
        self,
        numbers: Iterable[str] = (),
        *,
        region: str | None = None,
        name: str = "whitelist",
        shared: bool = False,
        shadow: bool = False,
    ) -> None:
        super().__init__(numbers, region, name, shared, shadow)


class Blacklist(NumberList):
    """Numbers always denied; ``prefixes`` deny whole E.164 ranges (``"+8819"``) against pumping."""

    reason = codes.BLACKLISTED
    counted_by = JUDGED
    steady = True
    verdict = Deny(codes.BLACKLISTED)

    def __init__(
        self,
        numbers: Iterable[str] = (),
        *,
        prefixes: Iterable[str] = (),
        region: str | None = None,
        name: str = "blacklist",
        shared: bool = False,
        shadow: bool = False,
    ) -> None:
        super().__init__(numbers, region, name, shared, shadow)
        self.prefixes = tuple(prefixes)
        for p in self.prefixes:
            if not (p.startswith("+") and p[1:].isdigit()):
                raise ConfigError(f"{name}: prefix {p!r} must be '+' and digits, as in '+8819'")

    def review(self, attempt: Attempt, now: float) -> Review:
        if self.prefixes and attempt.phone.startswith(self.prefixes):
            return self.verdict
        return super().review(attempt, now)


class Suspend:
    """The emergency switch: while on (``Guard.suspend()``), every attempt is denied.

    The switch lives in the backend, so on Redis one call silences every worker; it is read
    in the same round trip as the counters. Its refusal is of kind ``unavailable`` (a 503):
    sending is off, through no doing of the client's. Policies before it in the guard still
    decide first: put it first to stop everything, whitelisted numbers included.
    """

    reason = codes.SUSPENDED
    counted_by = JUDGED
    steady = True
    kind = codes.UNAVAILABLE
    KEY: Final = "switch:suspended"

    def __init__(self, *, name: str = "suspend", shadow: bool = False) -> None:
        self.name, self.shadow = name, shadow

    def review(self, attempt: Attempt, now: float) -> Review:
        return (Flag(self.KEY, self.reason, self.kind),)


class Shadow:
    """``policy`` in shadow: asked, counted and reported (``Decision.shadowed``), never denying,
    and its counters are its own, so it takes no quota from the enforcing policies. For a
    policy of your own; the built-ins take ``shadow=True``."""

    shadow: Final = True

    def __init__(self, policy: Policy) -> None:
        if not isinstance(policy, Policy):
            raise ConfigError(f"{policy!r} is not a policy: it needs name, reason and review()")
        self.policy = policy

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def reason(self) -> str:
        return self.policy.reason

    @property
    def kind(self) -> str:
        return self.policy.kind if isinstance(self.policy, Kinded) else codes.LIMIT

    def review(self, attempt: Attempt, now: float) -> Review:
        return self.policy.review(attempt, now)

    def __repr__(self) -> str:
        return f"Shadow({self.policy!r})"
