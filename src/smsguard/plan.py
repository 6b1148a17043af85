"""What a decision asks of a backend and what the backend answers: the plan layer.

The guard turns an attempt into a ``Plan``: a ``Job`` for the backend (flags to read, counters
to consume all or none) and who owns each item. The backend runs the job atomically and answers
an ``Outcome``; ``Plan.decide`` turns that into the ``Decision``, a pure function. Writes (a
refund, a flag turned on or off) are ``Change`` values a backend applies in one batch.

These values are NamedTuples rather than frozen dataclasses: just as immutable, and a decision
makes several of them, where a NamedTuple costs less than half as much to build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol, TypeVar, Union, cast

from smsguard import attempt as codes
from smsguard.attempt import Attempt, Decision
from smsguard.attempt import Receipt as Receipt  # beside the Decision that holds it

_T = TypeVar("_T")


class Builder(Protocol):
    """``tuple.__new__`` as ``built`` gives it: ``new(cls, values)`` is a ``cls``."""

    def __call__(self, cls: type[_T], values: Iterable[Any], /) -> _T: ...


def built(cls: Any, *fields: str) -> Builder:
    """``tuple.__new__``, for building ``cls`` (a NamedTuple) on a decision's hot path as a plain
    tuple of ``fields`` in that order: its own ``__new__`` binds its arguments in Python, at
    twice the cost or more. An ImportError at once if ``cls`` has other fields (a change of the
    type not followed where it is built)."""
    if cls._fields != fields:  # pragma: no cover - a change of the type not followed here
        raise ImportError(f"{cls.__name__} is built as {fields}, not {cls._fields}")
    return cast(Builder, tuple.__new__)


_new = built(Receipt, "token", "counters", "fallback")


def key(name: str, subject: str, *detail: str) -> str:
    """The storage key of ``name``'s item for ``subject``: ``name:{subject}:detail...``.

    The braces are a Redis Cluster hash tag: every key of one subject (a number's hash) lands
    in one slot, so one script call can read and write them all. Build every key with this.
    """
    if detail:
        return f"{name}:{{{subject}}}:" + ":".join(detail)
    return f"{name}:{{{subject}}}"


def key_parts(name: str, *detail: str) -> tuple[str, str]:
    """(head, tail) such that ``head + subject + tail == key(name, subject, *detail)``: for a
    policy that builds the same key around many subjects, on the hot path."""
    head, tail = key(name, "\x00", *detail).split("\x00")
    return head, tail


class Counter(NamedTuple):
    """A quota: at most ``limit`` live hits under ``key``.

    A hit taken now stops counting at ``expires_at`` (epoch seconds): ``now + window`` for a
    sliding window, the next local midnight for a calendar day. ``limit`` is at least 1.
    """

    key: str
    limit: int
    expires_at: float
    shadow: int = 0
    """0 for an enforcing counter. Else a shadow policy's (semantics 15), numbered per policy: it
    never denies, and a shadow policy's counters take their hits all or none, as if it enforced
    (none if one of them is full)."""
    unless: str | None = None
    """A key of live hits (a ``Record``, such as a verified number's mark; or another counter's
    own key, of one window, earlier in the same job: then a hit within that window, as that
    counter counts it): while it has one, this counter is passed over (neither checked nor
    taken; its count reads -1)."""
    earn: str | None = None
    """A key of live hits that raise the limit: ``limit + int(per_earned * live hits)``."""
    per_earned: float = 0.0
    # unless and earn must share the counter key's hash tag (a Cluster script sees one slot).
    amount: int = 0
    """0 for a log of hits (each expiring on its own). Else a sum: each attempt adds ``amount``
    (cents spent, say), at most ``limit`` in all, and every addition expires at ``expires_at``,
    so give it a key per period (a calendar day). A refund does not give a sum back."""
    window: float | None = None
    """A sliding window's length: a hit taken at t counts while ``t + window > now``. None for
    ``expires_at - now`` (give it: that difference is ``window`` only up to rounding)."""
    since: float | None = None
    """For a fixed period (a calendar day) instead of a sliding window: its start. Hits taken at
    or after it count, and all of them stop counting at ``expires_at``."""
    log: str | None = None
    """A key of the subject's hit times that several counters share, for a backend that keeps
    one per subject (Redis): a number's log answers its minute, hour and day alike. Counters of
    one job that name the same log must take their hits alike (the same policies, enforcing).
    None: the counter keeps its own, under ``key``."""
    match: str | None = None
    """With ``log``: count only the hits tagged ``match`` (a content's hash; no ``:`` in it).
    The attempt's hit in the log carries the tag, so every counter of that log still counts it."""
    member: str | None = None
    """For a mark a ``Record`` writes: its name within ``key`` (a number's hash, say). A mark
    written again under the same member replaces the first (it lives on to the new expiry), so
    a key counts each member once: a verification earns once per number. None: the Record's
    token, a new mark each time."""
    gate: str | None = None
    """Another counter's own key, earlier in the same job and alone in its group (a sum: the
    day's spend): this counter is checked only once that one counts ``gate_at`` or more before
    this attempt. Below it, it is taken all the same, never full: a budget that sheds, past a
    share of the day's spend, the sends a scope's own count holds."""
    gate_at: int = 0


class Flag(NamedTuple):
    """A key read with the counters: if it is set, the attempt stops there, consuming nothing.

    ``reason`` None exempts the attempt, else denies it with that reason, of ``kind``.
    """

    key: str
    reason: str | None = None
    kind: str = codes.FORBIDDEN
    shadow: bool = False
    """A shadow policy's: read, and reported if set, but never stops the attempt."""


class Tallied(NamedTuple):
    """Statistics added to the hash ``key`` as a write: ``counts`` of (field, n). ``now`` is
    the guard's clock when it was made: a backend sets expiry relative to it, as for hits."""

    key: str
    expires_at: float
    counts: tuple[tuple[str, int], ...]
    now: float


class Issue(NamedTuple):
    """Issue a code with an allowed attempt: the number's live code (``key``) if it has one that
    is neither spent nor dead, else a new one, ``nonce`` with ``hashed`` (the code's keyed hash),
    live until ``expires_at`` and kept until ``keep_until`` (so that a late check is told
    ``code_expired``). ``if_exempt``: only if an exempting flag is set (a fixed denial follows)."""

    key: str
    nonce: str
    hashed: str
    expires_at: float
    keep_until: float
    attempts: int
    """Wrong checks the new code takes (``max_attempts``)."""
    if_exempt: bool = False


class Guess(NamedTuple):
    """Check a code: ``hashed`` is the guess's keyed hash ("" for a malformed guess: it matches
    nothing). First the ``limits`` on wrong checks: one full, and nothing is compared (``waits``
    say which). A wrong guess takes a hit of each limit and one of the code's ``max_attempts``;
    the right one spends the code and writes ``verified`` (a number's verification marks).
    ``charge``: a Cluster's first step, the limits of another slot alone, each hit taken at once
    (given back with a Receipt when the guess was right)."""

    key: str
    hashed: str
    max_attempts: int
    limits: tuple[Counter, ...]
    verified: Record | None = None
    charge: bool = False
    peek: bool = False
    """Only read the code: its state ("live" while it takes checks), nothing compared or taken."""


class CodeState(NamedTuple):
    """A backend's answer about a code. For an issue: ``status`` "new" or "live" and the code's
    ``nonce``. For a check: ``status`` one of ``smsguard.codes``' reasons, "ok", or "" (a limit
    refused: nothing compared). ``attempts_left``: wrong checks the code still takes (-1: no
    code); ``issued_at``: when it was issued."""

    status: str
    nonce: str = ""
    attempts_left: int = -1
    issued_at: float = 0.0


UNRECORDED = "unrecorded"
"""A right check's ``CodeState.nonce`` when its verification marks could not be written with it
(on a Cluster, another slot down): the guard owes them to the backend."""


class Job(NamedTuple):
    """Everything one decision asks of a backend, run as one atomic step."""

    now: float
    token: str
    """Unique per attempt: names its hits, so that a refund removes exactly them."""
    flags: tuple[Flag, ...]
    counters: tuple[Counter, ...]
    commit: bool = True
    """False to only read: counts and waits, nothing taken (``Guard.status``)."""
    code: Issue | Guess | None = None
    """A verification code's part of the job (``smsguard.codes``): a code issued if the job's
    attempt is allowed, in the same atomic step; or a check of a code, the whole job then."""


class Outcome(NamedTuple):
    """A backend's answer to a Job.

    ``flag`` is the index of the first flag found set (then nothing was read or taken further),
    else -1. ``counts`` are each counter's live hits before this attempt (-1 for one passed over:
    its ``unless`` key held a hit); ``waits`` the seconds until each full counter frees a slot (0
    for a counter with room, and for shadow counters). The attempt was taken (every counter
    consumed one hit, but those passed over and full shadow ones) exactly when no flag was set
    and no counter was full. ``shadowed`` are the indexes, over the job's flags
    then its counters, of the shadow items that would have denied (a flag set, a counter full).
    """

    flag: int = -1
    counts: tuple[int, ...] = ()
    waits: tuple[float, ...] = ()
    shadowed: tuple[int, ...] = ()
    code: CodeState | None = None
    """The answer to the job's ``code`` part (None when it had none, or a denial issued none)."""

    @property
    def denied(self) -> int:
        """Index of the full counter that frees a slot last (-1 if none): the one a denial
        names, since waiting for any other would not be enough."""
        return frees_last(self.waits)[0]


def frees_last(waits: tuple[float, ...]) -> tuple[int, float]:
    """(index, wait) of the longest wait among full counters, or (-1, 0.0) if none is full.

    The one rule every backend's denial follows, written once: single node, memory and each
    slot of a cluster report waits, and this picks.
    """
    index, longest = -1, 0.0
    for i, wait in enumerate(waits):
        if wait > longest:
            index, longest = i, wait
    return index, longest


def taken(
    counters: tuple[Counter, ...], nflags: int, shadowed: tuple[int, ...], counts: tuple[int, ...]
) -> tuple[Counter, ...]:
    """The counters an allowed job took a hit of: all but those passed over (a count of -1) and
    those of a shadow policy with a full counter (``shadowed``: item indexes, flags first, as in
    an Outcome)."""
    full = {counters[i - nflags].shadow for i in shadowed if i >= nflags} if shadowed else ()
    if not full and min(counts, default=0) >= 0:
        return counters
    return tuple(c for c, n in zip(counters, counts, strict=True) if c.shadow not in full and n >= 0)


class Record(NamedTuple):
    """Hits taken unconditionally, named by ``token``: a verification's marks and what it earns.
    ``now`` is the guard's clock: a backend sets expiry relative to it, as for hits."""

    token: str
    counters: tuple[Counter, ...]
    now: float


class SetFlag(NamedTuple):
    """Turn the flag ``key`` on or off (a shared list entry, the emergency switch)."""

    key: str
    on: bool = True


class Forget(NamedTuple):
    """Drop every counter of ``subject`` (a number's hash): ``Guard.reset``. Flags (list entries)
    stay."""

    subject: str


class Note(NamedTuple):
    """Keep ``text`` under ``key``, for other processes to read: the app's fingerprint
    (``smsguard.fingerprint``), which the ``smsguard`` command checks its settings against."""

    key: str
    text: str


Change = Union[Receipt, SetFlag, Forget, Tallied, Record, Note]  # noqa: UP007 (a runtime alias)
"""A write a backend applies: a refund (a Receipt, applied once however often it is given), a
flag change, a subject's counters forgotten, statistics, hits recorded, or a note."""


class Owner(NamedTuple):
    """Who owns a flag or a counter of a plan, as plain values: the policy's name, the reason
    and kind of a denial by it."""

    name: str
    reason: str
    kind: str = codes.LIMIT


class Verdict(NamedTuple):
    """A fixed list verdict (an exemption, or a Deny), before it is a Decision."""

    allowed: bool
    policy: str
    reason: str
    retry_after: float | None = None
    kind: str | None = None

    def decision(self, attempt: Attempt, shadowed: tuple[str, ...], degraded: bool = False) -> Decision:
        """This verdict on ``attempt``, as its Decision."""
        return Decision(
            self.allowed,
            attempt.phone,
            self.policy,
            self.reason,
            self.retry_after,
            {},
            None,
            None,
            self.kind,
            degraded,
            attempt.region,
            attempt.phone_id,
            shadowed,
        )


class Plan(NamedTuple):
    """A job for the backend, and who owns each of its flags and counters.

    ``final`` is a fixed list verdict that stands after the job's flags in policy order: it
    applies only if none of those flags is set (semantics 11); the job then has no counters.
    ``shadowed`` names the shadow policies whose fixed verdict would have denied.

    Every Decision of an attempt that reached a plan is built here, once and complete, by
    ``decide`` (from the backend's outcome, or the fallback's) or ``unanswered``.
    """

    attempt: Attempt
    job: Job
    flag_owners: tuple[Owner, ...]
    counter_owners: tuple[Owner, ...]
    final: Verdict | None = None
    shadowed: tuple[str, ...] = ()

    def decide(self, out: Outcome, degraded: bool = False, fallback: bool = False) -> Decision:
        """The decision from ``out`` (pure); ``degraded`` when the fail mode decided, on the
        in-process ``fallback`` backend or from the flags mirrored there."""
        # Unpacked once: each field read off a NamedTuple by name costs a generic lookup.
        attempt, job, flag_owners, _, final, shadowed = self
        found, counts, waits, out_shadowed, _ = out
        if out_shadowed:
            shadowed += self._shadowed(out)
        if found >= 0:
            flag, owner = job.flags[found], flag_owners[found]
            if flag.reason is None:
                return Decision(
                    True,
                    attempt.phone,
                    owner.name,
                    codes.EXEMPT,
                    None,
                    {},
                    None,
                    None,
                    None,
                    degraded,
                    attempt.region,
                    attempt.phone_id,
                    shadowed,
                )
            return Decision(
                False,
                attempt.phone,
                owner.name,
                flag.reason,
                None,
                {},
                None,
                None,
                flag.kind,
                degraded,
                attempt.region,
                attempt.phone_id,
                shadowed,
            )
        if final is not None:
            return final.decision(attempt, shadowed, degraded)
        denied, wait = frees_last(waits) if waits else (-1, 0.0)
        if denied >= 0:
            return self.denied_by(out, denied, wait, degraded, shadowed)
        remaining = _Remaining(self, out)
        counters = taken(job.counters, len(job.flags), out_shadowed, counts)
        return Decision(
            True,
            attempt.phone,
            None,
            None,
            None,
            remaining,
            None,
            _new(Receipt, (job.token, counters, fallback)),
            None,
            degraded,
            attempt.region,
            attempt.phone_id,
            shadowed,
        )

    def denied_by(
        self, out: Outcome, index: int, wait: float, degraded: bool = False, shadowed: tuple[str, ...] = ()
    ) -> Decision:
        """The denial by the job's counter ``index``, full for ``wait`` more seconds: the one
        ``frees_last`` picks of ``out``'s waits (``decide``, and the deny cache's early answer)."""
        attempt, owner = self.attempt, self.counter_owners[index]
        return Decision(
            False,
            attempt.phone,
            owner.name,
            owner.reason,
            wait,
            _Remaining(self, out),
            self.job.counters[index].limit,
            None,
            owner.kind,
            degraded,
            attempt.region,
            attempt.phone_id,
            shadowed,
        )

    def unanswered(self, allowed: bool, retry_after: float) -> Decision:
        """The fail mode's own decision, with no counting: allowed (``open``) or refused
        (``closed``, ``retry_after`` the wait until the backend is tried again)."""
        attempt = self.attempt
        if allowed:
            return Decision(
                True,
                attempt.phone,
                None,
                codes.FAIL_OPEN,
                None,
                {},
                None,
                None,
                None,
                True,
                attempt.region,
                attempt.phone_id,
            )
        return unavailable(attempt.phone, attempt.region, attempt.phone_id, retry_after)

    def _shadowed(self, out: Outcome) -> tuple[str, ...]:
        """The names of the shadow policies whose items ``out`` says would have denied."""
        owners = self.flag_owners + self.counter_owners
        names: list[str] = []
        for i in out.shadowed:
            if owners[i].name not in names:
                names.append(owners[i].name)
        return tuple(names)

    def flags_only(self) -> Plan:
        """This plan without its counters: what can still be decided with no counting."""
        return self._replace(job=self.job._replace(counters=(), code=None), counter_owners=())


class _Remaining(Mapping[str, int]):
    """``Decision.remaining``: hits left per enforcing policy, the least over its counters. Worked out
    when first read, since most callers never read it."""

    __slots__ = ("_out", "_plan", "_values")

    def __init__(self, plan: Plan, out: Outcome) -> None:
        self._plan, self._out = plan, out
        self._values: dict[str, int] | None = None

    def _dict(self) -> dict[str, int]:
        if self._values is None:
            plan, out = self._plan, self._out
            allowed = out.denied < 0
            values: dict[str, int] = {}
            for counter, owner, n in zip(plan.job.counters, plan.counter_owners, out.counts, strict=True):
                if counter.shadow or n < 0:
                    continue  # not a limit this attempt is held to
                left = max(counter.limit - n - allowed * (counter.amount or 1), 0)
                values[owner.name] = min(left, values.get(owner.name, left))
            self._values = values
        return self._values

    def quotas(self) -> list[codes.Quota]:
        """``Decision.quotas``: per enforcing policy, its tightest counter of hits (the fewest
        left, then the longest to reset)."""
        plan, out = self._plan, self._out
        allowed, now = out.denied < 0, plan.job.now
        tightest: dict[str, codes.Quota] = {}
        for counter, owner, n in zip(plan.job.counters, plan.counter_owners, out.counts, strict=True):
            if counter.shadow or n < 0 or counter.amount:
                continue
            left, reset = max(counter.limit - n - allowed, 0), max(counter.expires_at - now, 0.0)
            window = None if counter.since is not None else counter.window or reset
            quota = codes.Quota(owner.name, owner.reason, counter.limit, left, reset, window)
            known = tightest.get(owner.name)
            if known is None or (left, -quota.reset) < (known.remaining, -known.reset):
                tightest[owner.name] = quota
        return list(tightest.values())

    def __getitem__(self, name: str) -> int:
        return self._dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return repr(self._dict())


class Later(_Remaining):
    """``Decision.remaining`` of a plan and outcome made when first read (``make``): for a denial
    kept by the deny cache (``DenyCache.recall``), which most callers never read."""

    __slots__ = ("_make",)

    def __init__(self, make: Callable[[], tuple[Plan, Outcome]]) -> None:
        self._make: Callable[[], tuple[Plan, Outcome]] | None = make
        self._values = None

    def _made(self) -> None:
        if self._make is not None:
            self._plan, self._out = self._make()
            self._make = None

    def _dict(self) -> dict[str, int]:
        self._made()
        return super()._dict()

    def quotas(self) -> list[codes.Quota]:
        self._made()
        return super().quotas()


def unavailable(phone: str, region: str | None, phone_id: str, retry_after: float) -> Decision:
    """The closed fail mode's refusal of ``phone``, complete: ``backend_unavailable``, degraded,
    ``retry_after`` the wait until the backend is tried again."""
    return Decision(
        False,
        phone,
        None,
        codes.BACKEND_UNAVAILABLE,
        retry_after,
        {},
        None,
        None,
        codes.UNAVAILABLE,
        True,
        region,
        phone_id,
    )
