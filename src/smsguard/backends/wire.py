"""The Redis wire format, written once for both clients (sans-I/O, as h11 is).

``Wire`` turns what the guard asks of the backend into Redis requests and Redis's replies
into answers: a Job as one EVALSHA of ``consume.lua`` (or, on a Cluster, one per slot), the
script's reply as an Outcome, writes as pipeline commands. Each backend call is a generator
of requests (``run``, ``apply``, ``read``) that ``RedisBackend`` drives with ``smsguard.drive``:
the sync and async clients differ only in how a request is sent.

A request: ("eval", keys, args) -> reply list; ("exists", keys) -> [0 | 1, ...]; ("scan",
pattern) -> [key, ...]; ("types", keys) -> [type, ...]; ("read", keys) -> [hash, ...]; ("get",
keys) -> [value, ...];
("apply", changes, keys) -> None (one pipeline: DEL per key, ZREM per refunded hit, SET or DEL
per flag, SET per note, statistics and recorded hits).
"""

from __future__ import annotations

import itertools
import math
import secrets
from collections.abc import Generator, Sequence
from importlib import resources
from typing import Any

from redis.crc import key_slot

from smsguard.errors import BackendError, BackendUnavailable
from smsguard.plan import (
    UNRECORDED,
    Change,
    CodeState,
    Counter,
    Flag,
    Forget,
    Guess,
    Issue,
    Job,
    Note,
    Outcome,
    Receipt,
    Record,
    Tallied,
    built,
    taken,
)
from smsguard.plan import key as _key

Request = tuple[Any, ...]
_new = built(Outcome, "flag", "counts", "waits", "shadowed", "code")  # a reply's, on the hot path
Steps = Generator[Request, Any, Outcome]

TALLY = resources.files("smsguard.backends").joinpath("lua/tally.lua").read_text()

# How long a write sent again is told from a new one where nothing else tells it: the mark of a
# statistics write, and the tokens a decision's script admitted when none of its logs is one
# every admitted attempt writes to (a call of sums alone: a Cluster slot of country caps, say).
# Beyond what any client's retries take (a Cluster client's ten, with their timeouts, take
# seconds).
_RESENT_WITHIN = 60.0
_RESENT_WITHIN_MS = math.ceil(_RESENT_WITHIN * 1000)


class Wire:
    """The requests of each backend call for keys under ``prefix`` (on a Cluster: slot by
    slot), and what their replies mean."""

    def __init__(self, prefix: str, cluster: bool) -> None:
        self.prefix, self.cluster = prefix, cluster

    def one(self, job: Job) -> tuple[Request, list[int]] | None:
        """The one EVALSHA of a decision that needs no other step (every job on a single node
        but a code's check), and the order ``outcome`` reads its reply in; None for the others,
        which ``run`` takes step by step."""
        if isinstance(job.code, Guess):
            return None
        if not self.cluster or (job.code is not None and not job.flags and not job.counters):
            return self.eval(job, job.flags, job.counters, commit=job.commit)
        return None

    def outcome(self, job: Job, reply: Any, order: list[int]) -> Outcome:
        """The Outcome of ``job`` in the reply to its ``one`` request."""
        return _outcome(reply, len(job.flags), job.counters, order, job.now, job.code is not None)

    def run(self, job: Job) -> Steps:
        if isinstance(job.code, Guess):
            return (yield from self.check(job, job.code))
        one = self.one(job)
        if one is not None:
            return self.outcome(job, (yield one[0]), one[1])
        # A cluster script may touch one slot only. Flags are read first; then the
        # counters go slot by slot, each slot all-or-none, and a later slot's denial
        # refunds the earlier ones: a hit may be held for a moment, never over-admitted.
        shadowed: list[int] = []
        if job.flags:
            found = yield ("exists", [self.prefix + f.key for f in job.flags])
            for i, hit in enumerate(found):
                if hit:
                    if not job.flags[i].shadow:
                        state = None
                        if job.code is not None and job.flags[i].reason is None:  # exempt: a code
                            request, _ = self.eval(job._replace(flags=(), counters=()), (), (), commit=True)
                            state = _outcome((yield request), 0, (), [], job.now, True).code
                        return Outcome(i, shadowed=tuple(shadowed), code=state)
                    shadowed.append(i)
        nflags = len(job.flags)
        plain = job._replace(code=None)  # the code goes in its own slot, last
        counts = [0] * len(job.counters)
        waits = [0.0] * len(job.counters)
        took: list[Counter] = []
        full = False
        for indexes in _by_slot(job.counters):
            group = tuple(job.counters[i] for i in indexes)
            # Once one is full, the other slots are only checked (nothing written), so that
            # the denial names the counter that frees last, as on a single node.
            request, order = self.eval(plain, (), group, commit=job.commit and not full)
            reply = yield request
            out = _outcome(reply, 0, group, order, job.now)
            for k, i in enumerate(indexes):
                counts[i] = out.counts[k]
                if out.waits:
                    waits[i] = out.waits[k]
            shadowed += (nflags + indexes[k] for k in out.shadowed)
            if out.waits:
                full = True
            elif not full and job.commit:
                took.extend(taken(group, 0, out.shadowed, out.counts))
        if full and took:
            yield from self.apply((Receipt(job.token, tuple(took)),))
        state = None
        issue = job.code
        if issue is not None and not full and not issue.if_exempt:
            # Allowed: the code, in its own slot (the number's), once every counter took its hit.
            request, _ = self.eval(job._replace(flags=(), counters=()), (), (), commit=True)
            reply = yield request
            state = _outcome(reply, 0, (), [], job.now, True).code
        return Outcome(-1, tuple(counts), tuple(waits) if full else (), tuple(sorted(shadowed)), state)

    def apply(self, changes: Sequence[Change]) -> Steps:
        # A forgotten subject's keys are found first (a scan, every node of a cluster), then
        # deleted with the other changes, counters only: its list entries are not counters.
        forgotten: list[Any] = []
        for change in changes:
            if isinstance(change, Forget):
                keys = yield ("scan", f"{_glob_escape(self.prefix)}*{{{_glob_escape(change.subject)}}}*")
                if keys:
                    types = yield ("types", keys)
                    forgotten += [
                        key for key, kind in zip(keys, types, strict=True) if kind in (b"zset", "zset")
                    ]
        if changes:
            yield ("apply", changes, forgotten)
        return Outcome()

    def read(self, keys: Sequence[str]) -> Generator[Request, Any, list[dict[str, int]]]:
        replies = yield ("read", [self.prefix + key for key in keys])
        return [{_text(name): int(n) for name, n in reply.items()} for reply in replies]

    def note(self, key: str) -> Generator[Request, Any, str | None]:
        (text,) = yield ("get", [self.prefix + key])
        return None if text is None else _text(text)

    def eval(
        self, job: Job, flags: Sequence[Flag], counters: Sequence[Counter], *, commit: bool = True
    ) -> tuple[Request, list[int]]:
        """The EVALSHA arguments for one script call, built once for either client, and the
        order the script sees ``counters`` in (grouped by the key that holds their hits).

        A call that commits names where the script finds this attempt's hit once it was
        admitted, so that the call sent again answers as it did (see consume.lua): first the
        log that every admitted attempt writes to, if there is one; else a set of tokens."""
        prefix = self.prefix
        now = job.now
        keys = [prefix + f.key for f in flags] if flags else []
        groups, always = _grouped(counters)
        witness = 0  # only a call that commits needs one
        if commit and groups:
            witness = 2 if always is None else 1
            if always:  # first, where the script looks
                groups.insert(0, groups.pop(always))
        args: list[Any] = [repr(now), job.token, len(flags), len(groups), witness, _score(now)]
        issue = job.code if isinstance(job.code, Issue) else None
        if flags and issue is None:
            args += (int(f.shadow) for f in flags)
        elif flags:  # an exempting flag issues the code
            args += ("1" if f.shadow else "e" if f.reason is None else "0" for f in flags)
        extras: list[Any] = []  # keys the counters refer to, after the groups' keys
        firsts: dict[float, float] = {}  # a window -> the first hit time it counts
        scores: dict[float, str] = {}  # a bound -> its score
        order: list[int] = []
        alone: dict[str, int] = {}  # the key of a counter alone in its group -> its place (from 1)
        sums: dict[str, int] = {}  # the key of a sum -> its place (from 1): a gate
        place = 0  # a counter's place in the script's order, from 1
        for name, tag, members in groups:
            keys.append(prefix + name)
            head = len(args)
            args += (len(members), 0, "", tag + ":" if isinstance(tag, str) else "")
            least, least_score, last = math.inf, "", now  # the least bound, and its score
            for i in members:
                place += 1
                # Unpacked at once: each field read by name costs a lookup (the hot loop).
                (key, limit, expires_at, shadow, unless, earn, per_earned, amount, window, since, _, match,
                 _, gate, gate_at) = counters[i]  # fmt: skip
                if amount or since is not None:  # a fixed period (see _window): negative
                    bound, limit = (0.0 if since is None else since), -limit
                else:  # windows and bounds recur in a job (an hour per number and per network)
                    if window is None:
                        window = expires_at - now
                    bound = firsts.get(window)  # type: ignore[assignment]
                    if bound is None:
                        bound = firsts[window] = _first_counted(now, window)
                score = scores.get(bound)
                if score is None:
                    score = scores[bound] = _score(bound)
                if bound < least:
                    least, least_score = bound, score
                if expires_at > last:
                    last = expires_at
                if shadow or amount or unless is not None or earn is not None or gate:
                    marks = []
                    for mark in (unless, earn):
                        if mark is None:
                            marks.append(0)
                        elif mark is unless and mark in alone:  # a counter's own key, counted before
                            marks.append(-alone[mark])  # read as that count, by its window
                        else:
                            extras.append(prefix + mark)
                            marks.append(len(flags) + len(groups) + len(extras))  # its index in KEYS
                    matched = int(match is not None)
                    spec: Any = f"{limit} {shadow} {matched} {marks[0]} {marks[1]} {per_earned!r} {amount}"
                    if gate is not None:  # checked from the gate's count on: 'g<place>:<count>'
                        at = sums.get(gate, alone.get(gate))
                        if at is None:
                            raise BackendError(f"{key!r}: its gate {gate!r} is no earlier counter alone")
                        spec += f" g{at}:{gate_at}"
                elif match is not None:
                    spec = limit + (0.5 if limit > 0 else -0.5)  # a half more: it counts by the tag
                else:
                    spec = limit
                args += (spec, score)
                if amount:
                    sums[name] = place
                elif len(members) == 1 and name == key:
                    alone[name] = place
            args[head + 1] = math.ceil((last - now) * 1000) + 1000
            args[head + 2] = least_score  # the very string of that counter's bound: the script compares them
            order += members
        if witness == 2:
            extras.append(prefix + _tokens(groups[0][0]))
            args += (_score(now - _RESENT_WITHIN), _RESENT_WITHIN_MS)
        if issue is not None:
            extras.append(prefix + issue.key)
            keep = math.ceil((issue.keep_until - now) * 1000)
            args += (
                issue.nonce,
                issue.hashed,
                repr(issue.expires_at),
                keep,
                issue.attempts,
                int(issue.if_exempt),
            )
            args.append("code")
        return ("eval", keys + extras, _packed(args)), order

    def check(self, job: Job, guess: Guess) -> Steps:
        """One check of a code: one script call on a single node. On a Cluster, the limits of
        other slots than the number's (a client's) are taken first, each in its slot, and given
        back if the check then takes none (a right code, or a full limit of the number): a guess
        is compared only once every limit holds its hit, so none is ever over-admitted. A right
        code's verification marks in other slots follow it, as a write."""
        now, limits = job.now, guess.limits
        if not self.cluster:
            reply = yield self._check_eval(job, guess, limits, guess.verified)
            return _checked(reply, limits, now)
        slot = key_slot(_tag(guess.key).encode())
        mine = [i for i, c in enumerate(limits) if key_slot(_tag(c.key).encode()) == slot]
        others = [i for i in range(len(limits)) if i not in mine]
        counts, waits = [0] * len(limits), [0.0] * len(limits)
        charged: list[Counter] = []
        full = False
        for group in _slots(limits, others):
            sub = tuple(limits[i] for i in group)
            out = _checked((yield self._check_eval(job, guess._replace(charge=True), sub, None)), sub, now)
            for k, i in enumerate(group):
                counts[i] = out.counts[k]
                if out.waits:
                    waits[i] = out.waits[k]
            if out.waits:
                full = True
                break
            charged += sub
        if not full:
            sub = tuple(limits[i] for i in mine)
            out = _checked((yield self._check_eval(job, guess, sub, None)), sub, now)
            for k, i in enumerate(mine):
                counts[i] = out.counts[k]
                if out.waits:
                    waits[i] = out.waits[k]
            state = out.code
            full = bool(out.waits)
        else:
            state = CodeState("")
        assert state is not None
        if charged and (full or state.status == "ok"):
            yield from self.apply((Receipt(job.token, tuple(charged)),))
        if state.status == "ok" and guess.verified is not None and guess.verified.counters:
            try:
                yield from self.apply((guess.verified,))
            except BackendUnavailable:
                state = state._replace(nonce=UNRECORDED)
        return Outcome(-1, tuple(counts), tuple(waits) if full else (), (), state)

    def _check_eval(
        self, job: Job, guess: Guess, limits: Sequence[Counter], record: Record | None
    ) -> Request:
        prefix, now = self.prefix, job.now
        keys = [] if guess.charge else [prefix + guess.key]
        keys += (prefix + c.key for c in limits)
        mode = 2 if guess.peek else int(guess.charge)
        args: list[Any] = ["check", repr(now), job.token, guess.hashed, mode, len(limits)]
        for c in limits:
            window = c.window if c.window is not None else c.expires_at - now
            args += (c.limit, repr(now - window), math.ceil(window * 1000) + 1000)
        if record is not None and record.counters:
            args.append(record.token)
            for c in record.counters:
                keys.append(prefix + c.key)
                args += (repr(c.expires_at), math.ceil((c.expires_at - now) * 1000) + 1000, c.member or "")
        return ("eval", keys, _packed(args))

    def pipeline(self, pipe: Any, request: Request) -> Any:
        """Queue an "exists" or "apply" request on ``pipe`` (sync or async alike)."""
        kind, items, *forgotten = request
        if kind in ("exists", "types", "read", "get"):
            command = {"exists": pipe.exists, "types": pipe.type, "read": pipe.hgetall, "get": pipe.get}[kind]
            for key in items:
                command(key)
            return pipe
        for key in forgotten[0]:  # the counters of forgotten subjects, found by a scan
            pipe.delete(key)
        for change in items:
            if isinstance(change, Forget):
                continue
            if isinstance(change, Record):
                # A mark's score is when it expires; the script counts those after now. The ones
                # up to now go as the set is written, so a set written again and again (a
                # country's earnings) holds its live marks, and its TTL drops the last of them.
                for counter in change.counters:
                    key = self.prefix + counter.key
                    pipe.zremrangebyscore(key, "-inf", repr(change.now))
                    pipe.zadd(key, {counter.member or change.token: counter.expires_at})
                    pipe.pexpire(key, math.ceil((counter.expires_at - change.now) * 1000) + 1000)
            elif isinstance(change, Tallied):  # added once, if sent again (see tally.lua)
                key = self.prefix + change.key
                added = f"{key}:added:{secrets.token_hex(8)}"
                ttl = math.ceil((change.expires_at - change.now) * 1000)
                counts = itertools.chain(*change.counts)  # (execute_command: a Cluster pipeline has no eval)
                pipe.execute_command("EVAL", TALLY, 2, key, added, ttl, _RESENT_WITHIN_MS, *counts)
            elif isinstance(change, Note):
                pipe.set(self.prefix + change.key, change.text)
            elif isinstance(change, Receipt):
                for name, tag, _ in _groups(change.counters):
                    if tag is not False:  # a sum is not given back
                        member = change.token if tag is None else f"{tag}:{change.token}"
                        pipe.zrem(self.prefix + name, member)
            elif change.on:
                pipe.set(self.prefix + change.key, 1)
            else:
                pipe.delete(self.prefix + change.key)
        return pipe


def _packed(args: list[Any]) -> list[str]:
    """A script's arguments as the one argument consume.lua splits: their text, a line each.
    One argument is packed in one step, where two dozen go through a client's encoder one by
    one (redis-py's: a third of the client's work on a decision, before this)."""
    packed = "\n".join(map(str, args))
    if packed.count("\n") != len(args) - 1:  # a tag, token or member of a policy's own
        raise BackendError(f"a script argument holds a line break: {args!r}")
    return [packed]


def _checked(reply: Sequence[Any], limits: Sequence[Counter], now: float) -> Outcome:
    """The Outcome of a code's check (see consume.lua's check): the limits' counts and, if one
    is full, their waits; the code's state."""
    n = len(limits)
    try:
        status, left, issued_at = _text(reply[0]), int(reply[1]), float(reply[2])
        counts = tuple(int(c) for c in reply[3 : 3 + n])
        frees = reply[3 + n :]
        if len(counts) != n or len(frees) not in (0, n):
            raise ValueError(f"it does not fit {n} limits")
        waits = (
            tuple(
                0.0 if float(at) == -1 else max(float(at) + _limit_window(c, now) - now, _SOON)
                for c, at in zip(limits, frees, strict=True)
            )
            if frees
            else ()
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise BackendError(f"unreadable script reply {reply!r}: {exc}") from None
    return Outcome(-1, counts, waits, (), CodeState(status, "", left, issued_at))


def _limit_window(counter: Counter, now: float) -> float:
    return counter.window if counter.window is not None else counter.expires_at - now


def _tag(key: str) -> str:
    """The hash tag of ``key`` (``name:{subject}:...``), or the key."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1 : end] if 0 <= start < end - 1 else key


def _slots(counters: Sequence[Counter], indexes: Sequence[int]) -> list[list[int]]:
    """``indexes`` of ``counters`` grouped by cluster slot, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i in indexes:
        groups.setdefault(key_slot(_tag(counters[i].key).encode()), []).append(i)
    return list(groups.values())


def _outcome(
    reply: Sequence[Any],
    nflags: int,
    counters: Sequence[Counter],
    order: list[int],
    now: float,
    coded: bool = False,
) -> Outcome:
    """The Outcome in a script's reply for ``nflags`` flags and ``counters``, sent in ``order``
    (their indexes), with the code it issued if ``coded``; a reply of another shape is a bug."""
    n = len(order)
    try:
        flag, nshadowed = int(reply[0]), int(reply[1])
        end = len(reply) - nshadowed
        shadowed = tuple(map(int, reply[end:])) if nshadowed else ()
        state = None
        if coded:
            status, nonce, left, issued_at = reply[end - 4 : end]
            end -= 4
            if status:
                state = CodeState(_text(status), _text(nonce), int(left), float(issued_at))
        if flag >= 0:
            if end > 2:
                raise ValueError("it counts after a flag")
            counts: tuple[int, ...] = ()
            frees: Sequence[Any] = ()
        else:
            middle = reply[2:end]
            counts, frees = tuple(map(int, middle[:n])), middle[n:]
            if len(counts) != n or len(frees) not in (0, n):
                raise ValueError(f"it does not fit {n} counters")
        if nshadowed and (nshadowed < 0 or any(not 0 <= i < nflags + n for i in shadowed)):
            raise ValueError("its shadowed items do not fit the job")
        waits = (
            tuple(_wait(counters[i], at, now) for i, at in zip(order, frees, strict=True)) if frees else ()
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise BackendError(f"unreadable script reply {reply!r}: {exc}") from None
    if n > 1 and order != sorted(order):  # back to the job's order
        sent = {at: i for i, at in enumerate(order)}
        counts = tuple(counts[sent[i]] for i in range(n)) if counts else ()
        waits = tuple(waits[sent[i]] for i in range(n)) if waits else ()
        shadowed = tuple(sorted(i if i < nflags else nflags + order[i - nflags] for i in shadowed))
    return _new(Outcome, (flag, counts, waits, shadowed, state))


_SOON = 1e-6


def _window(counter: Counter, now: float) -> float | None:
    """``counter``'s sliding window in seconds, or None for a fixed period (a calendar day; and a
    sum, which is kept per period)."""
    if counter.amount or counter.since is not None:
        return None
    return counter.expires_at - now if counter.window is None else counter.window


def _held(counter: Counter) -> str:
    """The key that holds ``counter``'s hits: its log, shared with the other windows of its
    subject, or its own key (a sum's always)."""
    return counter.key if counter.amount or counter.log is None else counter.log


def _wait(counter: Counter, frees: Any, now: float) -> float:
    """Seconds until ``counter`` frees a slot, from what the script says frees it: -1 (it is not
    full), or the score of the hit whose window end frees a slot (a sliding window). A fixed
    period (and a sum) frees when it ends. Worked out as the memory backend does, to the bit;
    never 0 for a counter the script found full (it took nothing: the attempt must be denied),
    which a clock outside the years of exact scores could otherwise round to."""
    if frees == -1:
        return 0.0
    window = _window(counter, now)
    if window is None:
        return max(counter.expires_at - now, _SOON)
    return max((float(frees) / _TICKS + _EPOCH) + window - now, _SOON)


# A hit's score in a log is its time t (epoch seconds) as (t - _EPOCH) * _TICKS: exact for t
# from _EPOCH / 2 to 2 * _EPOCH (1995 to 2072: the subtraction is exact there), and an integer
# from 2**30 (2004), since doubles there lie 2**-22 s apart or more. Redis keeps an integer
# score as an integer and compares it without parsing text, where a fractional time such as
# 1772409600.1234567 costs a strtod at every read of every hit: the dearest part of a decision,
# before this. (A clock outside those years, a test's, is still right to within rounding.)
_EPOCH = 1610612736.0  # 2**30 + 2**29
_TICKS = 4194304.0  # 2**22


def _score(t: float) -> str:
    """The score of a hit taken at ``t``, as Redis is given it. (Outside the years of exact
    scores, rounding may merge two times, never reorder them: a window may count a hit taken
    just before its bound, never leave one out.)"""
    scaled = (t - _EPOCH) * _TICKS
    return str(int(scaled)) if scaled.is_integer() else repr(scaled)


def _first_counted(now: float, window: float) -> float:
    """The earliest hit time t that a sliding window of ``window`` seconds counts at ``now``:
    ``t + window > now`` in floating point, the memory backend's own test, to the last bit."""
    t = now - window
    if t + window > now:
        while (earlier := math.nextafter(t, -math.inf)) + window > now:
            t = earlier
        return t
    while t + window <= now:
        t = math.nextafter(t, math.inf)
    return t


def _grouped(
    counters: Sequence[Counter],
) -> tuple[list[tuple[str, str | bool | None, list[int]]], int | None]:
    """``counters`` by the key that holds their hits, in order of first appearance: (key, tag,
    indexes). A log shared by several counters; else a counter's own key. The tag of a log is
    the ``match`` of its counters (None: none has one), False for a sum, which is alone. And the
    index of the first group that is a log every admitted attempt takes a hit in (its counters
    enforcing, none passed over), or None."""
    groups: dict[str, tuple[str, str | bool | None, list[int]]] = {}
    passed: set[str] = set()  # logs with a counter that may not take the attempt's hit
    for i, c in enumerate(counters):
        key, _, _, shadow, unless, _, _, amount, _, _, log, match, _, _, _ = c
        if amount:
            groups[key] = (key, False, [i])
            continue
        name = key if log is None else log  # _held(c)
        if shadow or unless is not None:
            passed.add(name)
        group = groups.get(name)
        if group is None:
            groups[name] = (name, match, [i])
            continue
        if match is not None and group[1] != match:
            if group[1] is not None:
                raise BackendError(f"counters on the log {name!r} match two tags: {group[1]!r}, {match!r}")
            groups[name] = group = (name, match, group[2])
        group[2].append(i)
    found = list(groups.values())
    for k, (name, tag, _) in enumerate(found):
        if tag is not False and name not in passed:
            return found, k
    return found, None


def _groups(counters: Sequence[Counter]) -> list[tuple[str, str | bool | None, list[int]]]:
    """``counters`` by the key that holds their hits (see ``_grouped``)."""
    return _grouped(counters)[0]


def _tokens(held: str) -> str:
    """The key of the tokens admitted lately in ``held``'s slot (its hash tag)."""
    start = held.find("{")
    end = held.find("}", start + 1)
    return _key("tokens", held[start + 1 : end] if 0 <= start < end - 1 else held)


def _by_slot(counters: Sequence[Counter]) -> list[list[int]]:
    """Indexes of ``counters`` grouped by cluster slot, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(counters):
        groups.setdefault(key_slot(_held(c).encode()), []).append(i)
    return list(groups.values())


def _text(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)
