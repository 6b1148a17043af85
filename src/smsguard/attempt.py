"""What the guard judges (Attempt), what it answers (Decision), and the reason codes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Any, Final, NamedTuple

# What kind of refusal a reason is; adapters pick the status from it (429, 403, 503, 429).
LIMIT: Final = "limit"
"""A quota is spent: waiting ``retry_after`` helps."""
FORBIDDEN: Final = "forbidden"
"""This attempt is not allowed at all (a blacklisted number)."""
UNAVAILABLE: Final = "unavailable"
"""The service cannot send now (backend down, sending suspended); not the client's doing."""
CHALLENGE: Final = "challenge"
"""Allowed once the client passes a challenge (a CAPTCHA)."""
KINDS: Final = (LIMIT, FORBIDDEN, UNAVAILABLE, CHALLENGE)

# Stable reason codes. Denials carry one of the first group; allowed decisions carry
# None, or one of the second group when they skipped the limits.
SAME_CONTENT: Final = "same_content"
DAILY_CAP: Final = "daily_cap"
PHONE_RATE: Final = "phone_rate"
IP_THROTTLE: Final = "ip_throttle"
BLACKLISTED: Final = "blacklisted"
SUSPENDED: Final = "suspended"
BACKEND_UNAVAILABLE: Final = "backend_unavailable"
# Against pumping (smsguard.pumping).
COUNTRY_NOT_ALLOWED: Final = "country_not_allowed"
NUMBER_TYPE: Final = "number_type"
COUNTRY_CAP: Final = "country_cap"
UNVERIFIED_CAP: Final = "unverified_cap"
SCOPE_CAP: Final = "scope_cap"
CHALLENGE_CAP: Final = "challenge_cap"
BUDGET: Final = "budget"
CONTENT_LINK: Final = "content_link"
CONTENT_CODE: Final = "content_code"
EXEMPT: Final = "exempt"
FAIL_OPEN: Final = "fail_open"
# A code's check (smsguard.codes): CodeCheck.reason, None when the code was right.
WRONG_CODE: Final = "wrong_code"
CODE_EXPIRED: Final = "code_expired"
NO_CODE: Final = "no_code"
CHECK_ATTEMPTS: Final = "check_attempts"
TOO_MANY_CHECKS: Final = "too_many_checks"

KIND_OF: Final = {
    SAME_CONTENT: LIMIT,
    DAILY_CAP: LIMIT,
    PHONE_RATE: LIMIT,
    IP_THROTTLE: LIMIT,
    BLACKLISTED: FORBIDDEN,
    SUSPENDED: UNAVAILABLE,
    BACKEND_UNAVAILABLE: UNAVAILABLE,
    COUNTRY_NOT_ALLOWED: FORBIDDEN,
    NUMBER_TYPE: FORBIDDEN,
    COUNTRY_CAP: LIMIT,
    UNVERIFIED_CAP: LIMIT,
    SCOPE_CAP: LIMIT,
    CHALLENGE_CAP: LIMIT,
    BUDGET: UNAVAILABLE,
    CONTENT_LINK: FORBIDDEN,
    CONTENT_CODE: FORBIDDEN,
}
"""The kind of each built-in reason (for a Decision built by hand without one)."""

OPAQUE: Final = frozenset({UNVERIFIED_CAP, SCOPE_CAP, CHALLENGE_CAP, COUNTRY_CAP})
"""The anti-fraud reasons a client is not told (DESIGN.md semantics 18): it sees ``REFUSED`` and
a coarse wait, so it cannot learn which scope caught it or exactly when to come back."""
REFUSED: Final = "refused"
"""The one reason a client is shown for an ``OPAQUE`` refusal."""
COARSE: Final = 900
"""An opaque refusal's Retry-After is rounded up to a whole multiple of this many seconds."""


def kind_of(decision: Decision) -> str:
    """The kind of a denial: its own, else its reason's, else ``limit`` if waiting helps."""
    if decision.kind is not None:
        return decision.kind
    default = LIMIT if decision.retry_after is not None else FORBIDDEN
    return KIND_OF.get(decision.reason or "", default)


class Attempt(NamedTuple):
    """One request to send an SMS, as the policies see it.

    ``phone`` is already E.164. ``phone_id`` and ``content_id`` are keyed hashes of the
    number and the content: build counter keys from them, never from the plain values.
    """

    phone: str
    phone_id: str
    digest: Callable[[str], str]
    """The guard's keyed hash, for policies that key on other values."""
    content: str | None = None
    content_id: str | None = None
    ip: IPv4Address | IPv6Address | None = None
    context: Mapping[str, Any] = MappingProxyType({})
    region: str | None = None
    """The number's ISO region (``"CN"``; ``"AI"`` for +1 264), None where phonenumbers has none."""
    number_type: str | None = None
    """``"mobile"``, ``"fixed_line"``, ``"premium_rate"``, ``"voip"``... (phonenumbers' types, in
    lower case). Worked out only for guards with a policy that ``needs_details``, else None."""
    network: str | None = None
    """The number's operator in phonenumbers' offline carrier data (``"China Mobile"``), else its
    country and area code (``"+1 202"``). Like ``number_type``, only where a policy needs it."""
    challenge_passed: bool = False
    """The client passed a challenge (a CAPTCHA) with this request: policies of kind
    ``challenge`` pass it over."""


class Receipt(NamedTuple):
    """What an allowed attempt consumed, so that ``Guard.refund`` can give it back once."""

    token: str
    """The job's token: the name of its hits."""
    counters: tuple[Any, ...]
    """The counters (``plan.Counter``) it took one hit of."""
    fallback: bool = False
    """Taken on the in-process fallback backend while the real one was down."""


class Usage(NamedTuple):
    """One counter of a number, as ``Guard.status`` reads it."""

    policy: str
    used: float
    """Live hits now (or, where ``unit`` says so, what they add up to)."""
    limit: float
    remaining: float
    frees_in: float | None
    """Seconds until a slot frees, when the counter is full; None while it has room."""
    unit: str = ""
    """What ``used``, ``limit`` and ``remaining`` count: ``""`` for hits, ``"$"`` for a
    ``SpendCap``'s dollars, ``"checks"`` for the number's live code (policy ``code``: its wrong
    checks made, allowed and left; never the code)."""
    age: float | None = None
    """For the live code: seconds since it was issued."""


class Quota(NamedTuple):
    """One enforcing policy's quota as an allowed attempt left it (``Decision.quotas``): what
    rate headers announce. The tightest of the policy's counters of hits (a sum, such as a
    ``SpendCap``'s cents, is no quota of attempts)."""

    policy: str
    reason: str
    """The reason it would deny with (an anti-fraud scope's is not shown to clients)."""
    limit: int
    remaining: int
    """Attempts left, this one counted."""
    reset: float
    """Seconds until every hit it counts now has expired: the window's length, or until the
    calendar day ends."""
    window: float | None
    """A sliding window's length; None for a calendar day."""


@dataclass(slots=True)  # not frozen: a frozen dataclass costs four times as much to build, on every decision
class Decision:
    """The guard's answer for one attempt. ``bool(decision)`` is ``decision.allowed``.

    Built once, complete, by the plan (``smsguard.plan.Plan.decide``), then only read (by
    events, statistics, the log, the adapters): treat it as read-only. ``Guard.refund`` trusts
    its ``receipt``.
    """

    allowed: bool
    phone: str
    policy: str | None = None
    """Name of the policy that denied (or exempted) the attempt."""
    reason: str | None = None
    """Stable reason code (see the README table)."""
    retry_after: float | None = None
    """Seconds until the denying counter frees a slot; None when waiting will not help."""
    remaining: Mapping[str, int] = field(default_factory=dict)
    """Hits left per policy name, where known."""
    limit: int | None = None
    """The limit of the denying counter (the quota a RateLimit-Policy header announces)."""
    receipt: Receipt | None = field(default=None, repr=False, compare=False)
    kind: str | None = None
    """What kind of refusal (``limit``, ``forbidden``, ``unavailable``, ``challenge``); None
    when allowed."""
    degraded: bool = False
    """Decided by the fail mode, the backend being unreachable."""
    country: str | None = None
    """The number's ISO region (``"CN"``)."""
    phone_hash: str | None = None
    """The keyed hash the number is stored under: what logs and events may show of it."""
    shadowed: tuple[str, ...] = ()
    """The shadow policies that would have denied this attempt, had they enforced."""

    def __bool__(self) -> bool:
        return self.allowed

    @property
    def quotas(self) -> tuple[Quota, ...]:
        """The quota each enforcing policy has left (see ``Quota``), where the decision counted
        (empty for a denial decided without counting, an exemption, or the fail mode)."""
        read = getattr(self.remaining, "quotas", None)
        return () if read is None else tuple(read())
