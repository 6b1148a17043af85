"""The in-process backend: exact, thread- and asyncio-safe, bounded by expiry alone."""

from __future__ import annotations

import heapq
import hmac
import math
import threading
from bisect import bisect_right, insort
from collections.abc import Sequence
from typing import Final

from smsguard import attempt as codes
from smsguard.plan import (
    Change,
    CodeState,
    Counter,
    Forget,
    Guess,
    Issue,
    Job,
    Note,
    Outcome,
    Receipt,
    Record,
    SetFlag,
    Tallied,
    built,
    taken,
)

OK: Final = "ok"
_new = built(Outcome, "flag", "counts", "waits", "shadowed", "code")
_SPENT = "\x00spent:"
"""Prefix of the marker of a refunded receipt (no policy key starts with a NUL)."""


class MemoryBackend:
    """Counters in a dict of expiry times, guarded by one lock.

    A key holds the expiry of its one hit as a bare float, or a sorted list of them once it
    has two; most keys never get a second hit, and a float costs a fraction of a list to
    keep and nothing for the garbage collector to scan.

    Memory is bounded by expiry only: every key is filed under the whole second its hits may
    all have expired by (a timing wheel: filing is an append, and a heap orders the seconds,
    not the keys), and each decision, and each verification recorded, sweeps a bounded slice of
    the keys filed under seconds now past; a key written to drops its own expired hits. No live
    key is ever evicted to make room, so a flood of fresh numbers cannot erase a victim's count.
    """

    shared = False

    def __init__(self, *, sweep_batch: int = 64) -> None:
        self._lock = threading.Lock()
        self._hits: dict[str, float | list[float]] = {}
        self._due: dict[int, list[str]] = {}  # second -> keys that may be empty by then
        self._seconds: list[int] = []  # a heap of the seconds in _due
        self._flags: set[str] = set()
        self._spent: dict[str, float] = {}  # marker of a refunded receipt -> when it may go
        self._tallies: dict[str, tuple[float, dict[str, int]]] = {}  # statistics: (expiry, fields)
        self._sums: dict[str, tuple[float, int]] = {}  # a sum counter: (expiry, total)
        self._notes: dict[str, str] = {}
        self._codes: dict[str, _Code] = {}
        self._marks: dict[str, dict[str, float]] = {}  # a Record's key: member -> its mark's expiry
        self._sweep_batch = sweep_batch

    def run(self, job: Job) -> Outcome:
        now = job.now
        with self._lock:
            seconds = self._seconds
            if seconds and seconds[0] <= now:  # sweep a bounded slice now due
                self._sweep(now, self._sweep_batch)
            code = job.code
            if isinstance(code, Guess):
                return self._check(code, job.token, now)
            shadowed: list[int] = []
            flags = job.flags
            for i, flag in enumerate(flags):
                if flag.key in self._flags:
                    if not flag.shadow:
                        issued = None
                        if code is not None and flag.reason is None:
                            issued = self._issue(code, now)
                        return Outcome(i, shadowed=tuple(shadowed), code=issued)
                    shadowed.append(i)
            counters = job.counters
            hits = self._hits
            counts: list[int] = []
            waits: list[float] = []
            plain = True  # every counter a log of hits, none passed over: all are taken
            for i, counter in enumerate(counters):
                limit = counter.limit
                checked = True
                if (
                    counter.amount
                    or counter.unless is not None
                    or counter.earn is not None
                    or counter.gate is not None
                ):
                    plain = False
                    if counter.unless is not None and self._live(counter.unless, now):
                        counts.append(-1)  # passed over
                        continue
                    if counter.earn is not None:
                        limit += int(counter.per_earned * len(self._live(counter.earn, now)))
                    if counter.gate is not None:
                        checked = _gate(counters, counts, counter) >= counter.gate_at
                    if counter.amount:  # a sum: all of it expires at the end of its period
                        total = self._sums.get(counter.key)
                        n = total[1] if total is not None and total[0] > now else 0
                        if checked and n + counter.amount > limit:
                            if counter.shadow:
                                shadowed.append(len(flags) + i)
                            else:
                                if not waits:
                                    waits = [0.0] * len(counters)
                                waits[i] = counter.expires_at - now
                        counts.append(n)
                        continue
                entries = hits.get(counter.key)  # _live, inlined
                if entries is None:
                    counts.append(0)
                    continue
                if entries.__class__ is list:
                    live: Sequence[float] = _trimmed(entries, now)
                elif entries > now:  # type: ignore[operator]
                    live = (entries,)  # type: ignore[assignment]
                else:
                    counts.append(0)
                    continue
                n = len(live)
                if checked and n >= limit:
                    if counter.shadow:
                        shadowed.append(len(flags) + i)
                    else:
                        if not waits:
                            waits = [0.0] * len(counters)
                        # The slot frees when the (n - limit + 1)-th oldest live hit expires.
                        waits[i] = live[n - limit] - now
                counts.append(n)
            if waits or not job.commit:
                return Outcome(-1, tuple(counts), tuple(waits), tuple(shadowed))
            found = tuple(counts)
            if shadowed or not plain:
                counters = taken(counters, len(flags), tuple(shadowed), found)
            for counter in counters:
                if counter.amount:
                    total = self._sums.get(counter.key)
                    if total is None or total[0] <= now:
                        self._file(counter.key, counter.expires_at)
                        total = (counter.expires_at, 0)
                    self._sums[counter.key] = (total[0], total[1] + counter.amount)
                elif counter.key in hits:
                    self._add(counter.key, counter.expires_at, now)
                else:  # a new key (_add, inlined): most of a flood of fresh numbers
                    hits[counter.key] = counter.expires_at
                    self._file(counter.key, counter.expires_at)
            issued = self._issue(code, now) if code is not None and not code.if_exempt else None
            return _new(Outcome, (-1, found, (), tuple(shadowed), issued))  # Outcome(...), cheaper

    def _issue(self, issue: Issue, now: float) -> CodeState:
        """The number's live code, else a new one (``Issue``)."""
        entry = self._codes.get(issue.key)
        if entry is not None and entry.live(now):
            return CodeState("live", entry.nonce, entry.left, entry.issued_at)
        self._codes[issue.key] = _Code(issue, now)
        self._file(issue.key, issue.keep_until)
        return CodeState("new", issue.nonce, issue.attempts, now)

    def _check(self, guess: Guess, token: str, now: float) -> Outcome:
        """One check of a code (``Guess``), as consume.lua does it."""
        counts, waits = [], [0.0] * len(guess.limits)
        for i, counter in enumerate(guess.limits):
            live = self._live(counter.key, now)
            counts.append(len(live))
            if len(live) >= counter.limit:
                waits[i] = live[len(live) - counter.limit] - now
        if any(waits):
            return Outcome(-1, tuple(counts), tuple(waits), (), CodeState(""))
        if guess.charge:
            state = CodeState("")
        else:
            entry = self._codes.get(guess.key)
            if guess.peek:  # what a status shows: the live code's attempts left, if any
                state = entry.peeked(now) if entry is not None else CodeState(codes.NO_CODE)
                return Outcome(-1, tuple(counts), (), (), state)
            state, spent = (
                (CodeState(codes.NO_CODE), False) if entry is None else entry.judge(guess, token, now)
            )
            if spent and guess.verified is not None:
                self._record(guess.verified)
        if state.status != OK:
            for counter in guess.limits:
                self._add(counter.key, counter.expires_at, now)
        return Outcome(-1, tuple(counts), (), (), state)

    def _live(self, key: str, now: float) -> Sequence[float]:
        """The expiry times of ``key``'s live hits, oldest first (expired ones dropped)."""
        entries = self._hits.get(key)
        if entries is None:
            return ()
        if isinstance(entries, list):
            return _trimmed(entries, now)
        return (entries,) if entries > now else ()

    async def arun(self, job: Job) -> Outcome:
        # No await inside: the whole step runs without yielding to the event loop.
        return self.run(job)

    def apply(self, changes: Sequence[Change]) -> None:
        with self._lock:
            for change in changes:
                if isinstance(change, SetFlag):
                    (self._flags.add if change.on else self._flags.discard)(change.key)
                elif isinstance(change, Tallied):
                    if _tally(self._tallies, change):
                        self._file(change.key, change.expires_at)
                elif isinstance(change, Record):
                    # Verifications may be all a store sees (the fallback store of a guard whose
                    # backend answers): they sweep, as decisions do.
                    if self._seconds and self._seconds[0] <= change.now:
                        self._sweep(change.now, self._sweep_batch)
                    self._record(change)
                elif isinstance(change, Note):
                    self._notes[change.key] = change.text
                elif isinstance(change, Forget):
                    tag = "{" + change.subject + "}"
                    for key in [key for key in self._hits if tag in key]:  # an operator's call: a scan
                        del self._hits[key]  # the sweep finds it gone
                        self._marks.pop(key, None)
                elif change.counters:
                    self._refund(change)

    async def aapply(self, changes: Sequence[Change]) -> None:
        self.apply(changes)

    def read(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        """The statistics hashes ``keys`` (an empty dict for one that is absent or expired)."""
        with self._lock:
            found = []
            for key in keys:
                entry = self._tallies.get(key)
                found.append(dict(entry[1]) if entry is not None and entry[0] > now else {})
            return found

    async def aread(self, keys: Sequence[str], now: float) -> list[dict[str, int]]:
        return self.read(keys, now)

    def note(self, key: str) -> str | None:
        """The text a ``Note`` left under ``key``, or None."""
        return self._notes.get(key)

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()
            self._due.clear()
            self._seconds.clear()
            self._flags.clear()
            self._spent.clear()
            self._tallies.clear()
            self._sums.clear()
            self._notes.clear()
            self._codes.clear()
            self._marks.clear()

    def sweep(self, now: float) -> int:
        """Drop every key whose hits have all expired by ``now``, to the whole second (a hit
        expiring at 12.3 goes from 13); return how many went.

        Works in batches, letting go of the lock between them, so that decisions in other
        threads wait for one batch at most, not for the whole sweep.
        """
        dropped = 0
        while True:
            with self._lock:
                if not self._seconds or self._seconds[0] > now:
                    return dropped
                dropped += self._sweep(now, 10_000)

    def __len__(self) -> int:
        """Number of counter keys held (live or awaiting the sweep)."""
        return len(self._hits)

    def _add(self, key: str, at: float, now: float) -> None:
        """Take one hit under ``key`` that counts until ``at``, dropping its hits expired by ``now``
        (a key written to again and again is never swept whole)."""
        entries = self._hits.get(key)
        if entries is None:
            self._hits[key] = at
            self._file(key, at)
        elif not isinstance(entries, list):
            self._hits[key] = at if entries <= now else sorted((entries, at))
        elif not _trimmed(entries, now) or entries[-1] <= at:
            entries.append(at)
        else:
            insort(entries, at)

    def _record(self, record: Record) -> None:
        """Mark each key of ``record`` for its ``Counter.member``, else ``record.token`` (a
        verified number's hash): one mark per member, its expiry moved on when the same member
        is recorded again (as Redis's ZADD does), so that a number verified again and again
        counts once."""
        now = record.now
        for counter in record.counters:
            key, at = counter.key, counter.expires_at
            marks = self._marks.get(key)
            if marks is None or key not in self._hits:
                marks = self._marks[key] = {}
            member = counter.member or record.token
            old = marks.get(member)
            if old is not None and old > now:
                _take_back(self._hits, key, old)
            marks[member] = at
            self._add(key, at, now)
            if len(marks) > 16 and len(marks) > 2 * len(self._live(key, now)):
                self._marks[key] = {t: e for t, e in marks.items() if e > now}  # the expired go

    def _refund(self, receipt: Receipt) -> None:
        """Give back one hit per counter of ``receipt``, the first time only.

        Hits are stored as bare expiry times, so two hits with the same expiry are one and the
        same to remove; what tells a first refund from a second is a marker for the token, kept
        until the receipt's last counter expires, and swept by the same wheel as the hits.
        """
        spent = _SPENT + receipt.token
        if spent in self._spent:
            return
        for counter in receipt.counters:
            if counter.amount:
                continue  # a sum is not given back
            _take_back(self._hits, counter.key, counter.expires_at)
        last = max(counter.expires_at for counter in receipt.counters)
        self._spent[spent] = last
        self._file(spent, last)

    def _file(self, key: str, at: float) -> None:
        """File ``key`` under the second its hit expiring ``at`` is gone by."""
        second = math.ceil(at)
        keys = self._due.get(second)
        if keys is None:
            self._due[second] = [key]
            heapq.heappush(self._seconds, second)
        else:
            keys.append(key)

    def _sweep(self, now: float, budget: int) -> int:
        """Drop keys filed under seconds up to ``now`` whose hits are all gone; re-file the rest."""
        dropped = 0
        due, seconds, hits = self._due, self._seconds, self._hits
        while seconds and seconds[0] <= now and budget > 0:
            keys = due[seconds[0]]
            while keys and budget > 0:
                budget -= 1
                key = keys.pop()
                entries = hits.get(key)
                if entries is None:
                    # A refund's marker or a statistics hash (each filed once: its time is up),
                    # or a key refunded, or filed twice.
                    self._spent.pop(key, None)
                    self._tallies.pop(key, None)
                    self._marks.pop(key, None)
                    code = self._codes.get(key)
                    if code is not None:
                        if code.keep_until > now:
                            self._file(key, code.keep_until)  # issued again since
                        else:
                            del self._codes[key]
                    total = self._sums.get(key)
                    if total is not None and total[0] <= now:
                        del self._sums[key]
                    continue
                last = (entries[-1] if entries else now) if isinstance(entries, list) else entries
                if last > now:
                    self._file(key, last)  # a later second, since last > now >= this one
                else:
                    del hits[key]
                    self._marks.pop(key, None)
                    dropped += 1
            if not keys:
                del due[heapq.heappop(seconds)]
        return dropped


class _Code:
    """A number's code, as the memory backend keeps it (see ``Issue``)."""

    __slots__ = ("expires_at", "hashed", "issued_at", "keep_until", "left", "nonce", "spent")

    def __init__(self, issue: Issue, now: float) -> None:
        self.nonce, self.hashed, self.issued_at = issue.nonce, issue.hashed, now
        self.expires_at, self.keep_until = issue.expires_at, issue.keep_until
        self.left = issue.attempts  # wrong checks it still takes
        self.spent: str | None = None  # the token of the check that spent it

    def live(self, now: float) -> bool:
        """Whether it may still be checked: unexpired, unspent, attempts left."""
        return self.expires_at > now and self.spent is None and self.left > 0

    def peeked(self, now: float) -> CodeState:
        """What a status shows of it."""
        if not self.live(now):
            return CodeState(codes.NO_CODE)
        return CodeState("live", "", self.left, self.issued_at)

    def judge(self, guess: Guess, token: str, now: float) -> tuple[CodeState, bool]:
        """One check of it, as consume.lua judges it (spent by a right guess, an attempt taken by
        a wrong one), and whether this check spent it."""
        if self.keep_until <= now:
            return CodeState(codes.NO_CODE), False
        if self.spent is not None:
            # Spent: told no code, but to the very check that spent it, sent again (a lost reply).
            return CodeState(OK if self.spent == token else codes.NO_CODE), False
        if self.expires_at <= now:
            return CodeState(codes.CODE_EXPIRED, "", self.left, self.issued_at), False
        if self.left <= 0:
            return CodeState(codes.CHECK_ATTEMPTS, "", 0, self.issued_at), False
        if guess.hashed and hmac.compare_digest(guess.hashed, self.hashed):
            self.spent = token
            return CodeState(OK, "", self.left, self.issued_at), True
        self.left -= 1
        return CodeState(codes.WRONG_CODE, "", self.left, self.issued_at), False


def _trimmed(entries: list[float], now: float) -> list[float]:
    """``entries`` (sorted expiry times) without those expired by ``now``, dropped in place."""
    if entries and entries[0] <= now:
        del entries[: bisect_right(entries, now)]
    return entries


def _gate(counters: Sequence[Counter], counts: list[int], counter: Counter) -> int:
    """The count (before this attempt) of the earlier counter whose key is ``counter.gate``."""
    for earlier, n in zip(counters, counts, strict=False):
        if earlier.key == counter.gate:
            return n
    raise ValueError(f"{counter.key!r}: its gate {counter.gate!r} is no earlier counter of the job")


def _take_back(hits: dict[str, float | list[float]], key: str, at: float) -> None:
    """Remove one hit expiring ``at`` from ``key`` in ``hits``, if it holds one."""
    entries = hits.get(key)
    if isinstance(entries, list):
        i = bisect_right(entries, at) - 1
        if i >= 0 and entries[i] == at:
            del entries[i]
    elif entries == at:
        del hits[key]  # the sweep finds it gone


def _tally(tallies: dict[str, tuple[float, dict[str, int]]], tallied: Tallied) -> bool:
    """Add ``tallied``'s counts to its statistics hash in ``tallies``; whether the hash is new
    (to be filed for the sweep)."""
    entry = tallies.get(tallied.key)
    new = entry is None
    if entry is None:
        entry = tallies[tallied.key] = (tallied.expires_at, {})
    fields = entry[1]
    for name, n in tallied.counts:
        fields[name] = fields.get(name, 0) + n
    return new
