"""The local deny cache: a flood's denials decided in process, with no round trip.

A counter the backend found full stays full until it frees (its exact time is in the reply:
``now + wait``), unless hits are taken away: a refund, a reset. Other workers cannot make it
less full (they are denied too), so an attempt that needs it is denied here, with the exact
``retry_after``, and nothing is consumed (all or nothing, as before). It never admits: an
attempt the cache cannot deny goes to the backend as always.

Bound: what this guard knows expires after ``horizon`` seconds of the guard's clock (1 s by
default), so a reset, a refund or a list change (a whitelist entry, the emergency switch) made
through another worker reaches this one within ``horizon``. Changes made through this guard
reach its cache at once. A short horizon rather than pub/sub or a version key: it needs no
connection of its own, no listener thread, nothing to fail over on a Cluster, and a version key
would only be read on a round trip, which a cached denial does not make; a flood still costs
one round trip per victim per ``horizon``, whatever its size.

A counter known full a while ago (past ``horizon``) that has not freed yet sends its jobs to the
backend: it may still be full, with a longer wait than the counters known now, which the backend
would name.

Before planning (``early``): where every policy says what its counters are keyed by and what it
judges from (``smsguard.policies.Counted``), the cache is asked first with a plan of the
number's counters alone and the flags of the policies that judge by the number
(``Planner.number_plan``), and answers only while no other policy's counter may be full as far
as this guard knows (found full, until it frees; or filled here: ``others_until``;
``number_until`` for those under the number's own hash tag, its same-content counters): the
whole plan's other counters would then read -1 and wait 0, so its Decision is this one's. A
flood's denial then costs no content hash, no IP counter, no plan.

A number planned once (``recall``): where every policy counted by the number is ``Steady`` (its
part in the number's early plan the same at any time, but for its counters' times), the early
denial of a number is kept, by its hash: until the first full counter or unset flag it rests on
is known no longer (the earliest ``until``: at most ``horizon``, and never past the moment that
counter frees, such as a calendar day's local midnight), or until a change that may undo it (the
backend's answer about one of the number's counters, a refund, a reset, a flag written, an
outage) drops it. The next attempts for that number are then denied from it with no plan: the
same Decision, ``retry_after`` exact, its ``remaining`` worked out only when read. The
``JUDGED`` policies that are not steady (``ContentRules``, which reads the text) are asked again
each time, and any verdict or flag from them sends the attempt to be planned.

Policy order (semantics 11): a job is decided here only if every flag it reads (the switch,
shared list entries) was read off within ``horizon``; jobs with shadow items (whose report
needs the backend) and read-only jobs always go to the backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from smsguard.attempt import Decision
from smsguard.errors import ConfigError
from smsguard.plan import Change, Counter, Forget, Job, Later, Outcome, Owner, Plan, Receipt, SetFlag, built

# A denial's Outcome built as a plain tuple (smsguard.plan.built).
_new = built(Outcome, "flag", "counts", "waits", "shadowed", "code")

_PRUNE_EVERY = 4096  # entries learnt between sweeps of the expired ones
_MAX_ENTRIES = 100_000  # past this after a sweep, everything goes (only costs round trips)
_MAX_KEPT = 4096  # numbers whose early denial is kept, at most (past it, all go)


class _Kept(NamedTuple):
    """A number's early denial, kept (``DenyCache.recall``): what does not change while it holds."""

    since: float  # when it was planned: it holds from then
    until: float  # until the first thing it rests on may change (a full counter's or a flag's ``until``)
    frees: tuple[float, ...]  # each counter's ``_Full.frees`` (0.0: not known here)
    counts: tuple[int, ...]
    last: float  # ``frees`` of the counter that frees last: the one named
    phone: str
    policy: str
    reason: str
    limit: int
    kind: str
    region: str | None
    again: Callable[[float], Plan | None]  # the number's plan at a time (for ``remaining``)


class _Full(NamedTuple):
    frees: float  # when it frees a slot (the guard's clock)
    until: float  # when this knowledge expires: min(frees, learnt + horizon)
    limit: int
    hits: int


class DenyCache:
    """Full counters and unset flags, as the backend last answered them (see the module)."""

    def __init__(self, horizon: float = 1.0) -> None:
        if not horizon > 0:
            raise ValueError(f"the deny cache's horizon must be positive, got {horizon!r}")
        self.horizon = horizon
        self.full: dict[str, _Full] = {}
        self.unset: dict[str, float] = {}  # flag key -> until when it is known unset
        # Counters this guard filled itself (an admission that took the last slot) -> until when
        # they may be full: a job that has one goes to the backend, so that a denial here never
        # names a counter that frees sooner than one this guard knows to be full too.
        self.filled: dict[str, float] = {}
        self.by_number: frozenset[str] = frozenset()
        """The policies whose counters are keyed by the number alone (``Planner.by_number``)."""
        self.others_until = 0.0
        """Until when a counter of another policy (one that reads more than the number: the
        content, the IP) may be known full here, or filled by this guard (for ``early``); those
        keyed under a number's hash tag (its same content) in ``number_until`` instead."""
        self.number_until: dict[str, float] = {}
        self.mine: dict[str, float] = {}
        """Until when a counter of a number's own (``by_number``) may be known full here, by the
        number's hash; ``mine_unnamed`` for those learnt with no number. With ``others_until``
        and ``number_until``, an exact and cheap test (``may_deny``) that nothing is known of a
        number: an unseen one's attempt then skips its early plan and ``_known`` altogether."""
        self.mine_unnamed = 0.0
        self._lock = threading.Lock()
        self._kept: tuple[dict[str, _Kept], dict[str, _Kept]] = ({}, {})
        # A number's early denial kept (``recall``), by its hash, without and with a challenge
        # passed. A change that may undo one drops it (``_drop``): ``_version`` moves on, so that
        # a denial worked out before the change is not kept after it.
        self._version = 0
        self.denied = 0
        """Denials decided here (for benchmarks and tests)."""
        self._learnt = 0

    def answer(self, job: Job, number: str | None = None) -> Outcome | None:
        """The backend's answer to ``job``, if known here: a denial; else None (ask it).
        ``number``: the hash of the job's attempt's number, if known (``may_deny`` then first)."""
        if not job.commit or not job.counters or (number is not None and not self.may_deny(number, job.now)):
            return None
        known = self._known(job)
        if known is None:
            return None
        self.denied += 1
        return _new(Outcome, (-1, known[0], known[1], (), None))

    def early(self, plan: Plan, again: Callable[[float], Plan | None] | None = None) -> Decision | None:
        """The denial of any attempt whose counters of the number are ``plan``'s
        (``Planner.number_plan``), if known here before the whole attempt is planned; else None
        (plan it whole). The very Decision of ``answer`` on the whole plan: while no other
        policy's counter is known full or filled (``others_until``, ``number_until``), the
        others' counts would read -1 and their waits 0, which a denial's Decision passes over.
        ``again``, where the plan is its number's steady one (``Planner.steady``): the number's
        plan at another time; the denial is then kept for ``recall``."""
        now, phone_id = plan.job.now, plan.attempt.phone_id
        if now < self.others_until or now < self.number_until.get(phone_id, 0.0):
            return None
        version = self._version  # before reading: a change from here on drops what is kept
        known = self._known(plan.job)
        if known is None:
            return None
        counts, waits, index, longest, frees, until = known
        self.denied += 1
        decision = plan.denied_by(_new(Outcome, (-1, counts, waits, (), None)), index, longest)
        if again is not None:
            attempt, owner = plan.attempt, plan.counter_owners[index]
            kept = _new(
                _Kept,
                (now, until, frees, counts, frees[index], attempt.phone, owner.name, owner.reason,
                 decision.limit, owner.kind, attempt.region, again),
            )  # fmt: skip
            with self._lock:
                if self._version == version:
                    table = self._kept[attempt.challenge_passed]
                    if len(table) >= _MAX_KEPT:
                        table.clear()
                    table[phone_id] = kept
        return decision

    def may_deny(self, number: str, now: float) -> bool:
        """Whether a counter of an attempt for the number ``number`` (its hash) may be known full
        here at ``now``; False: ``early`` and ``answer`` would give None, with nothing to walk.
        Exact, not a guess: every counter learnt full has one of these bounds at its ``frees``
        or later (``learn``)."""
        return (
            now < self.mine.get(number, 0.0)
            or now < self.others_until
            or now < self.number_until.get(number, 0.0)
            or now < self.mine_unnamed
        )

    def recall(self, phone_id: str, challenge_passed: bool, now: float) -> Decision | None:
        """The early denial ``early`` kept for the number ``phone_id``, at ``now``, if it still
        holds (nothing it rests on changed since, none of its full counters known longer ago
        than ``horizon``): the Decision ``early`` would give, with no plan. Its ``remaining`` is
        worked out from the number's plan at ``now`` when first read. Else None."""
        kept = self._kept[challenge_passed].get(phone_id)
        if kept is None:
            return None
        since, until, frees, counts, last, phone, policy, reason, limit, kind, region, again = kept
        if not since <= now < until:
            return None
        self.denied += 1
        remaining = Later(partial(_again, again, now, counts, frees))
        return Decision(
            False,
            phone,
            policy,
            reason,
            last - now,
            remaining,
            limit,
            None,
            kind,
            False,
            region,
            phone_id,
            (),
        )

    def _known(
        self, job: Job
    ) -> tuple[tuple[int, ...], tuple[float, ...], int, float, tuple[float, ...], float] | None:
        """What is known here of ``job``'s counters: their counts and waits (-1 and 0 for those
        not known), the index and wait of the one that frees last (``plan.frees_last``), when
        each known one frees (0.0 for the others) and until when all of this holds at least
        (unless changed); None unless one is known full, none is filled here, and every flag is
        known unset."""
        now, full, filled = job.now, self.full, self.filled
        counts: list[int] = []
        waits: list[float] = []
        frees: list[float] = []
        index, longest, until = -1, 0.0, float("inf")
        for c in job.counters:  # one pass: what is known, or a reason to ask the backend
            if c.shadow:
                return None
            f = full.get(c.key)
            if f is not None and f.frees > now:
                if f.until <= now:
                    return None  # known full a while ago, maybe still: it may name a longer wait
                if f.until < until:
                    until = f.until  # past it, this counter is known no longer
                if f.limit == c.limit:
                    wait = f.frees - now  # exact: frees is now + wait of the reply
                    if wait > longest:
                        index, longest = len(waits), wait
                    counts.append(f.hits)
                    waits.append(wait)
                    frees.append(f.frees)
                    continue
            if filled and filled.get(c.key, 0.0) > now:
                return None
            counts.append(-1)  # not known here: left out of ``remaining``
            waits.append(0.0)
            frees.append(0.0)
        if index < 0:
            return None
        if job.flags:
            unset = self.unset
            for flag in job.flags:
                known = unset.get(flag.key, 0.0)
                if flag.shadow or known <= now:
                    return None
                if known < until:
                    until = known
        return tuple(counts), tuple(waits), index, longest, tuple(frees), until

    def learn(
        self, job: Job, out: Outcome, owners: tuple[Owner, ...] | None = None, number: str = ""
    ) -> None:
        """What the backend answered to ``job`` (``owners``: its counters' policies, ``number``
        its attempt's number hash; None: all counted as other than the number's, see
        ``others_until``)."""
        # Unpacked once: each field read off a NamedTuple by name costs a generic lookup.
        now, _, flags, counters, commit, _ = job
        found, counts, waits, _, _ = out
        if not commit:
            return
        until = now + self.horizon
        if flags and not any(f.shadow for f in flags):
            seen = flags if found < 0 else flags[:found]
            for flag in seen:
                self.unset[flag.key] = until
        if found >= 0:
            return
        full, filled, by_number = self.full, self.filled, self.by_number
        # Whether a counter is the number's own (``_mine_at``) is looked up only for those that
        # change: an admission changes one of its counters or none, so no list per job.
        dropped = False  # whether what a kept denial of ``number`` rests on changed
        if waits:
            for i, (c, n, wait) in enumerate(zip(counters, counts, waits, strict=True)):
                if wait > 0 and _cacheable(c):
                    full[c.key] = _Full(now + wait, min(now + wait, until), c.limit, n)
                    filled.pop(c.key, None)
                    if not _mine_at(owners, i, by_number):
                        self._other(c.key, now + wait, number)  # known then, maybe full until it frees
                    else:
                        self._mine(now + wait, number)
                        dropped = True
                elif wait == 0:  # not full now
                    if full.pop(c.key, None) is not None and _mine_at(owners, i, by_number):
                        dropped = True
                    filled.pop(c.key, None)
        else:  # admitted: the counters it took the last slot of are full, until unknown
            for i, (c, n) in enumerate(zip(counters, counts, strict=True)):
                if n >= 0 and n + (c.amount or 1) >= c.limit:
                    filled[c.key] = c.expires_at
                    if not _mine_at(owners, i, by_number):
                        self._other(c.key, c.expires_at, number)
                    else:
                        dropped = True
        if dropped:  # after the change: a denial worked out before it is not kept
            self._drop(number or None)
        self._learnt += 1
        if self._learnt >= _PRUNE_EVERY:
            self._prune(now)

    def _other(self, key: str, until: float, number: str) -> None:
        """A counter of another policy than the number's, full or filled until ``until``
        (under a lock: two threads' read and write of a bound must not undo the later one)."""
        with self._lock:
            if number and "{" + number + "}" in key:
                if until > self.number_until.get(number, 0.0):
                    self.number_until[number] = until
                    self._version += 1
                    self._pop(number)
            elif until > self.others_until:
                self.others_until = until
                self._version += 1
                self._kept[0].clear()
                self._kept[1].clear()

    def _mine(self, until: float, number: str) -> None:
        """A counter of ``number``'s own known full until ``until`` (for ``may_deny``; under the
        lock, as ``_other``)."""
        with self._lock:
            if not number:
                self.mine_unnamed = max(self.mine_unnamed, until)
            elif until > self.mine.get(number, 0.0):
                self.mine[number] = until

    def _drop(self, number: str | None) -> None:
        """What is kept (``recall``) of ``number`` (None: of every number) goes, and nothing
        worked out before now will be kept: called after a change that may undo it."""
        with self._lock:
            self._version += 1
            if number is None:
                self._kept[0].clear()
                self._kept[1].clear()
            else:
                self._pop(number)

    def _pop(self, number: str) -> None:
        self._kept[0].pop(number, None)
        self._kept[1].pop(number, None)

    def changed(self, changes: tuple[Change, ...] | list[Change]) -> None:
        """Writes made through this guard: what they touch is no longer known here."""
        for change in changes:
            if isinstance(change, Receipt):
                for c in change.counters:
                    self.full.pop(c.key, None)
                self._drop(None)  # a refund names no number: every kept denial goes
            elif isinstance(change, SetFlag):
                self.unset.pop(change.key, None)
                self._drop(None)
            elif isinstance(change, Forget):
                tag = "{" + change.subject + "}"
                for table in (self.full, self.filled):
                    for key in [k for k in table if tag in k]:
                        del table[key]
                self._drop(change.subject)

    def clear(self) -> None:
        """Forget everything (the backend failed: what it holds is no longer known)."""
        self.full.clear()
        self.unset.clear()
        self.mine, self.mine_unnamed = {}, 0.0  # no counter known full: none of a number's
        # ``filled`` stays: it only sends jobs to the backend
        self._drop(None)

    def _prune(self, now: float) -> None:
        self._learnt = 0
        self.full = {k: f for k, f in self.full.items() if f.frees > now}  # stale ones say: ask
        self.unset = {k: t for k, t in self.unset.items() if t > now}
        self.filled = {k: t for k, t in self.filled.items() if t > now}
        with self._lock:
            kept = {k: t for k, t in self.number_until.items() if t > now}
            if len(kept) > _MAX_ENTRIES:  # too many to keep: one bound for every number instead
                self.others_until, kept = max(self.others_until, *kept.values()), {}
            self.number_until = kept
            mine = {k: t for k, t in self.mine.items() if t > now}
            if len(mine) > _MAX_ENTRIES:  # as above
                self.mine_unnamed, mine = max(self.mine_unnamed, *mine.values()), {}
            self.mine = mine
        if len(self.full) + len(self.unset) > _MAX_ENTRIES:
            self.full, self.unset = {}, {}
        if len(self.filled) > _MAX_ENTRIES:  # more full counters than this: trust no cached denial
            self.full, self.filled = {}, {}
        self._drop(None)


def _again(
    again: Callable[[float], Plan | None], now: float, counts: tuple[int, ...], frees: tuple[float, ...]
) -> tuple[Plan, Outcome]:
    """A kept denial's plan and outcome at ``now``, as ``early`` would have had them."""
    plan = again(now)
    if plan is None:  # pragma: no cover - a steady policy that changed its mind
        raise AssertionError("a steady number's early plan is gone")
    return plan, _new(Outcome, (-1, counts, tuple(f - now if f else 0.0 for f in frees), (), None))


def _mine_at(owners: tuple[Owner, ...] | None, i: int, by_number: frozenset[str]) -> bool:
    """Whether the job's counter ``i`` is of a policy counted by the number alone (``owners``
    None or empty: counted as another's)."""
    if not owners:
        return False
    return owners[i].name in by_number


def _cacheable(counter: Counter) -> bool:
    """Whether ``counter``, found full, stays full until it frees whatever other workers do: not
    a sum (another amount may fit), nor one whose limit moves with other keys (unless, earn)."""
    return not counter.amount and counter.unless is None and counter.earn is None and not counter.shadow


def deny_cache(horizon: float | bool | None, shared: bool) -> DenyCache | None:
    """The deny cache ``Guard(deny_cache=horizon)`` asks for (None: on for a ``shared``
    backend, off otherwise; True: 1 s); None for none."""
    if horizon is None:
        horizon = shared
    if horizon is True:
        horizon = 1.0
    if not horizon:
        return None
    if not horizon > 0:
        raise ConfigError(
            "deny_cache (SMSGUARD_DENY_CACHE) must be a positive number of seconds (or False), "
            f"got {horizon!r}"
        )
    return DenyCache(float(horizon))
