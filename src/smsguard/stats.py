"""Statistics: what the guard decided, per hour of a local day, kept in the backend.

One hash per local hour (``stats:{2026-11-26T14}``) holds counts by field:

- ``attempts``, and ``country:CN`` per number's country (``001`` where it has none: ``phone.NO_COUNTRY``);
- ``allowed``, or ``denied:<reason>`` (one of the two per attempt);
- ``shadow:<policy>`` for a shadow policy that would have denied;
- ``degraded`` for a decision the fail mode made, ``refunded``, ``verified``;
- ``event:<kind>:<policy>[ <country>]`` for a surge, conversion drop or budget alarm the guard
  told its listeners of.

Nothing in them names a number or a client (semantics 16). A day is the sum of its hours, so
one write per decision serves both; hashes expire ``days`` after their hour ends.

The guard buffers a decision's counts (one dict increment) and writes them with its next write
to the backend, at most ``flush_interval`` later while traffic flows: a pipeline a second, not
a command per decision, which in Redis would cost a decision about a sixth of its server time
(and on a Cluster, where one hour's hash lives in one slot, a round trip of its own). Reading
them, or ``Guard.flush()``, writes this guard's buffered counts first. In a served app (the
adapters call ``smsguard.lifecycle.serve``) a ``Flusher`` thread writes them every
``flush_interval`` instead, off the requests' path, so that an idle worker's last counts, which
no later decision would carry, arrive too; what is left is written at shutdown.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Protocol
from zoneinfo import ZoneInfo

from smsguard.attempt import Decision
from smsguard.days import zone
from smsguard.errors import BackendUnavailable, ConfigError
from smsguard.phone import NO_COUNTRY
from smsguard.plan import Tallied, key

ATTEMPTS: Final = "attempts"
ALLOWED: Final = "allowed"
REFUNDED: Final = "refunded"
VERIFIED: Final = "verified"
CHECKED: Final = "checked"
"""Codes checked (``Guard.check_code``); the right ones count as ``verified`` too."""
CHECK: Final = "check:"
"""A check refused, by reason (``check:wrong_code``)."""
LOCKOUTS: Final = "lockouts"
"""Codes killed by their last wrong check."""
DEGRADED: Final = "degraded"
DENIED: Final = "denied:"
COUNTRY: Final = "country:"
SHADOW: Final = "shadow:"
SENT_TO: Final = "sent:"
"""Codes let through per country (``sent:GB``) and per network (``sent:GB Vodafone``)."""
VERIFIED_IN: Final = "verified:"
"""Verifications per country and per network, named as ``SENT_TO``."""
EVENT: Final = "event:"
"""What the guard told its listeners of: ``event:surge:learned_country CN`` (a kind, the policy,
and the country of the attempt it refused, if any); see ``event``."""

log = logging.getLogger("smsguard")


class Statistics:
    """Where and how long a guard keeps its statistics: local hours in ``tz`` (default: the
    time zone of the guard's DailyCap, else UTC), for ``days`` days (default 35: a month, and
    the same weekday a month back)."""

    def __init__(self, tz: str | None = None, *, days: int = 35, flush_interval: float = 1.0) -> None:
        if not days >= 1:
            raise ConfigError(f"statistics are kept at least 1 day (SMSGUARD_STATS_DAYS), not {days!r}")
        if not flush_interval >= 0:
            raise ConfigError(
                f"flush_interval (SMSGUARD_STATS_INTERVAL) is 0 or more seconds, not {flush_interval!r}"
            )
        self.zone: ZoneInfo | None = None
        if tz is not None:
            self.zone = zone(tz)
        self.days = days
        self.flush_interval = flush_interval
        """Seconds between writes of buffered counts (reading them writes those of this guard
        first; 0 writes each decision's). Default 1."""
        self._hour = (0.0, 0.0, "", 0.0)  # start, end, key, expires_at of the last hour seen
        self._lock = threading.Lock()
        # hour key -> (expires_at, {field, or a decision's (reason, allowed, country, shadowed,
        # degraded): count})
        self._pending: dict[str, tuple[float, dict[Any, int]]] = {}
        self._flushed_at = float("-inf")
        self._timed = False  # a Flusher writes them: decisions leave them alone
        _buffers.add(self)

    @property
    def tz(self) -> ZoneInfo:
        return self.zone or ZoneInfo("UTC")

    # -- writing ---------------------------------------------------------------------

    def hour(self, now: float) -> tuple[str, float]:
        """(key, expires_at) of the hash of the local hour holding ``now``."""
        start, end, hour_key, expires_at = self._hour
        if start <= now < end:
            return hour_key, expires_at
        local = datetime.fromtimestamp(now, self.tz)
        start = now - (local.minute * 60 + local.second + local.microsecond / 1e6)
        end = start + 3600
        hour_key = key("stats", local.strftime("%Y-%m-%dT%H"))
        expires_at = end + self.days * 86400
        self._hour = (start, end, hour_key, expires_at)
        return hour_key, expires_at

    def record(self, decision: Decision, now: float) -> None:
        """Buffer +1 to each field ``decision`` counts in (see ``fields``). On the hot path:
        one dict increment, keyed by what tells the fields, spelled out when written."""
        self._bump(
            now, (decision.reason, decision.allowed, decision.country, decision.shadowed, decision.degraded)
        )

    def add(self, now: float, name: str) -> None:
        """Buffer +1 to the field ``name`` in the hour of ``now``."""
        self._bump(now, name)

    def _bump(self, now: float, what: str | tuple[Any, ...]) -> None:
        start, end, hour_key, expires_at = self._hour  # self.hour(now), its usual case inlined
        if not start <= now < end:
            hour_key, expires_at = self.hour(now)
        with self._lock:
            entry = self._pending.get(hour_key)
            if entry is None:
                entry = self._pending[hour_key] = (expires_at, {})
            counts = entry[1]
            counts[what] = counts.get(what, 0) + 1

    def held(self) -> bool:
        """Whether counts are buffered, not yet written."""
        return bool(self._pending)

    def due(self, now: float) -> bool:
        """Whether buffered counts are to be written now (never while a Flusher writes them)."""
        return bool(self._pending) and self.owes(now)

    def owes(self, now: float) -> bool:
        """Whether a count buffered at ``now`` is to be written then (``due``, once one is)."""
        return not self._timed and now - self._flushed_at >= (self.flush_interval or 0.0)

    def drain(self, now: float) -> tuple[Tallied, ...]:
        """The buffered counts, as writes, and an empty buffer."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed_at = now
        writes = []
        for hour_key, (expires_at, buffered) in pending.items():
            counts: dict[str, int] = {}
            for what, n in buffered.items():
                for name in fields(*what) if isinstance(what, tuple) else (what,):
                    counts[name] = counts.get(name, 0) + n
            writes.append(Tallied(hour_key, expires_at, tuple(counts.items()), now))
        return tuple(writes)

    def restore(self, writes: Iterable[Tallied]) -> None:
        """Put back counts whose write failed, to go with a later one."""
        with self._lock:
            for write in writes:
                entry = self._pending.setdefault(write.key, (write.expires_at, {}))
                for name, n in write.counts:
                    entry[1][name] = entry[1].get(name, 0) + n

    # -- reading ---------------------------------------------------------------------

    def day(self, day: date | str | None, now: float) -> date:
        """``day`` as a date (an ISO string is read; None is today in ``tz``)."""
        if day is None:
            return datetime.fromtimestamp(now, self.tz).date()
        if isinstance(day, str):
            try:
                return date.fromisoformat(day)
            except ValueError:
                raise ConfigError(f"{day!r} is not a day: use YYYY-MM-DD") from None
        return day

    @staticmethod
    def keys(day: date) -> list[str]:
        """The keys of ``day``'s 24 hours."""
        return [key("stats", f"{day.isoformat()}T{h:02d}") for h in range(24)]


_buffers: weakref.WeakSet[Statistics] = weakref.WeakSet()


def _empty_in_child() -> None:
    """A forked child starts with empty buffers (its parent writes what they held, once) and
    fresh locks (a thread of the parent's may have held one)."""
    for statistics in list(_buffers):
        statistics._lock = threading.Lock()
        statistics._pending = {}
        statistics._timed = False  # no thread crosses a fork


os.register_at_fork(after_in_child=_empty_in_child)


class Flushed(Protocol):
    """What a Flusher writes for: a guard."""

    statistics: Statistics | None

    def flush(self) -> None: ...


class Flusher:
    """A daemon thread that writes the counts ``guard`` holds every ``flush_interval`` seconds,
    off the requests' path: while it runs, decisions leave them to it (``Statistics.due``), and
    an idle worker's last counts arrive as a busy one's do.

    It holds the guard weakly and ends once the guard is gone. A failed write keeps the counts
    for the next (the guard puts them back). ``stop()`` ends the thread, and decisions write
    them again; what is held then is for the shutdown hook to write (``guard.flush()``).
    """

    def __init__(self, guard: Flushed) -> None:
        self._guard = weakref.ref(guard)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread, unless it runs; with an interval of 0 each decision writes its own
        counts, and there is nothing to do."""
        guard = self._guard()
        if self.running or guard is None or not guard.statistics or not guard.statistics.flush_interval:
            return
        statistics = guard.statistics
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(self._stopping, statistics),
            name="smsguard-statistics",
            daemon=True,
        )
        statistics._timed = True
        self._thread.start()

    def stop(self) -> None:
        """End the thread (it finishes a write under way first)."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self, stopping: threading.Event, statistics: Statistics) -> None:
        try:
            while not stopping.wait(statistics.flush_interval):
                guard = self._guard()
                if guard is None:
                    return
                if statistics.held():
                    try:
                        guard.flush()
                    except BackendUnavailable as exc:
                        log.debug("smsguard: statistics held until the backend answers (%s)", exc)
                del guard  # held weakly between writes
        finally:
            statistics._timed = False  # decisions write them again


def event(kind: str, policy: str, country: str | None) -> str:
    """The field that counts a ``surge``, ``conversion_drop`` or ``budget_alarm`` event: by
    policy and country, never by the scope a LearnedCap names (a hashed range: thousands of
    them in a spread attack)."""
    return f"{EVENT}{kind}:{policy}" + (f" {country}" if country else "")


def fields(
    reason: str | None, allowed: bool, country: str | None, shadowed: tuple[str, ...], degraded: bool
) -> list[str]:
    """The fields a decision adds 1 to."""
    found = [
        ATTEMPTS,
        COUNTRY + (country or NO_COUNTRY),
        ALLOWED if allowed else DENIED + (reason or "unknown"),
    ]
    if allowed:
        found.append(SENT_TO + (country or NO_COUNTRY))
    found += (SHADOW + name for name in shadowed)
    if degraded:
        found.append(DEGRADED)
    return found


@dataclass(frozen=True)
class Day:
    """One local day's statistics: ``hours`` maps each hour (0-23) with any count to its fields."""

    day: date
    hours: Mapping[int, Mapping[str, int]]
    totals: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        totals: dict[str, int] = {}
        for counts in self.hours.values():
            for name, n in counts.items():
                totals[name] = totals.get(name, 0) + n
        object.__setattr__(self, "totals", totals)

    @classmethod
    def from_hashes(cls, day: date, hashes: list[dict[str, int]]) -> Day:
        return cls(day, {h: counts for h, counts in enumerate(hashes) if counts})

    @property
    def attempts(self) -> int:
        return self.totals.get(ATTEMPTS, 0)

    @property
    def allowed(self) -> int:
        return self.totals.get(ALLOWED, 0)

    @property
    def refunded(self) -> int:
        return self.totals.get(REFUNDED, 0)

    @property
    def verified(self) -> int:
        return self.totals.get(VERIFIED, 0)

    @property
    def degraded(self) -> int:
        return self.totals.get(DEGRADED, 0)

    @property
    def checked(self) -> int:
        """Codes checked (``Guard.check_code``), right or not."""
        return self.totals.get(CHECKED, 0)

    @property
    def checks(self) -> dict[str, int]:
        """Refused checks per reason (``wrong_code``, ``code_expired``...), most first."""
        return _by(self.totals, CHECK)

    @property
    def lockouts(self) -> int:
        """Codes killed by their last wrong check."""
        return self.totals.get(LOCKOUTS, 0)

    @property
    def denied(self) -> dict[str, int]:
        """Denials per reason, most first."""
        return _by(self.totals, DENIED)

    @property
    def countries(self) -> dict[str, int]:
        """Attempts per country, most first."""
        return _by(self.totals, COUNTRY)

    @property
    def conversions(self) -> dict[str, float]:
        """Codes entered per code sent, per country (``"GB"``) and per network (``"GB
        Vodafone"``, where the guard knows networks), most codes sent first."""
        sent, entered = _by(self.totals, SENT_TO), _by(self.totals, VERIFIED_IN)
        return {scope: entered.get(scope, 0) / n for scope, n in sent.items() if n > 0}

    @property
    def conversion(self) -> float | None:
        """Verified codes per code sent (allowed, less refunded); None before any verification."""
        sent = self.allowed - self.refunded
        if not self.verified or sent <= 0:
            return None
        return self.verified / sent

    @property
    def events(self) -> dict[str, int]:
        """Surges, conversion drops and budget alarms the guard told of, most first:
        ``{"surge:learned_country CN": 2}`` (see ``event``)."""
        return _by(self.totals, EVENT)

    @property
    def shadowed(self) -> dict[str, int]:
        """Per shadow policy, the attempts it would have denied, most first."""
        return _by(self.totals, SHADOW)

    def hour(self, h: int) -> Mapping[str, int]:
        return self.hours.get(h, {})

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "attempts": self.attempts,
            "allowed": self.allowed,
            "denied": self.denied,
            "refunded": self.refunded,
            "verified": self.verified,
            "degraded": self.degraded,
            "countries": self.countries,
            "conversions": self.conversions,
            "shadowed": self.shadowed,
            "events": self.events,
            "checked": self.checked,
            "checks": self.checks,
            "lockouts": self.lockouts,
            "hours": {f"{h:02d}": dict(counts) for h, counts in sorted(self.hours.items())},
        }


def _by(totals: Mapping[str, int], prefix: str) -> dict[str, int]:
    found = {name[len(prefix) :]: n for name, n in totals.items() if name.startswith(prefix)}
    return dict(sorted(found.items(), key=lambda item: (-item[1], item[0])))


SURGE: Final = 3.0
"""An hour (or a country) is flagged at this many times the day before's volume..."""
MIN_VOLUME: Final = 20
"""...and at least this many attempts, so that a quiet night's 1 -> 3 is no alarm."""
TOLD: Final = {
    "surge": "surge refused by {}",
    "conversion_drop": "conversion drop refused by {}",
    "budget_alarm": "budget alarm of {}",
}
"""How ``Report.anomalies`` says each kind of event the guard told of (``{}``: the policy, and
the country if any)."""


@dataclass(frozen=True)
class Report:
    """The daily review: a day against the day before and the same weekday a week before."""

    day: Day
    previous: Day
    week_before: Day

    @property
    def conversion(self) -> float | None:
        """Verified codes per code sent (allowed, less refunded); None before any verification."""
        return self.day.conversion

    @property
    def anomalies(self) -> list[str]:
        """What the providers' abuse monitors would flag: an hour several times the same hour
        the day before while its success rate (codes verified per code sent) falls, or at all
        where no verification is counted; a country surging; the day against the same weekday
        a week before (each needs at least ``MIN_VOLUME`` attempts). Then what the guard itself
        told of (``Day.events``): a surge or conversion drop a LearnedCap refused, by policy and
        country, and a SpendCap's budget alarm, each with how many times it was told."""
        found = []
        today, before = self.day, self.previous
        verifying = bool(today.verified or before.verified)
        for h in range(24):
            now, then = today.hour(h), before.hour(h)
            n, m = now.get(ATTEMPTS, 0), then.get(ATTEMPTS, 0)
            if n < MIN_VOLUME or n < SURGE * m:
                continue
            surge = f"{h:02d}:00 {n:,} attempts, {_times(n, m)} the day before"
            if not verifying:  # no success rate to read: the surge alone
                found.append(f"{surge} (no verifications counted: success unknown)")
                continue
            # Against the same hour, or the whole day before if that hour was empty.
            rate, old = _success(now), _success(then if m else before.totals)
            if old is None or (rate is not None and rate < old):
                found.append(f"{surge}, {_against(rate, old)}")
        old_countries = before.countries
        for country, n in today.countries.items():
            m = old_countries.get(country, 0)
            if n >= MIN_VOLUME and n >= SURGE * m:
                found.append(f"country {country}: {n:,} attempts, {_times(n, m)} the day before")
        n, m = today.attempts, self.week_before.attempts
        if n >= MIN_VOLUME and n >= SURGE * m:
            found.append(f"the day: {n:,} attempts, {_times(n, m)} the same weekday a week before")
        for name, n in today.events.items():
            kind, _, what = name.partition(":")
            found.append(TOLD.get(kind, kind + " of {}").format(what) + f" ({n:,} {_times_told(n)})")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.day.isoformat(),
            "totals": _summary(self.day),
            "previous": _summary(self.previous),
            "week_before": _summary(self.week_before),
            "conversion": self.conversion,
            "top_reasons": dict(list(self.day.denied.items())[:5]),
            "checks": self.day.checks,
            "top_countries": dict(list(self.day.countries.items())[:5]),
            "conversions": self.day.conversions,
            "shadowed": self.day.shadowed,
            "anomalies": self.anomalies,
        }


def _summary(day: Day) -> dict[str, Any]:
    return {
        "day": day.day.isoformat(),
        "attempts": day.attempts,
        "allowed": day.allowed,
        "denied": sum(day.denied.values()),
        "refunded": day.refunded,
        "verified": day.verified,
        "checked": day.checked,
        "lockouts": day.lockouts,
    }


def _success(counts: Mapping[str, int]) -> float | None:
    """Codes verified per code sent (allowed, less refunded); None when none was sent."""
    sent = counts.get(ALLOWED, 0) - counts.get(REFUNDED, 0)
    return counts.get(VERIFIED, 0) / sent if sent > 0 else None


def _times_told(n: int) -> str:
    return "time" if n == 1 else "times"


def _times(n: int, m: int) -> str:
    return f"{n / m:.1f}x" if m else "from none"


def _against(rate: float | None, old: float | None) -> str:
    """An hour's success rate against the day before's, where either may be unknown (no code
    sent, so nothing to verify)."""
    if rate is None:
        return "no code sent" + (" (none the day before either)" if old is None else "")
    if old is None:
        return f"success {rate:.0%} (no code sent the day before)"
    return f"success {rate:.0%} (the day before {old:.0%})"


def around(day: date) -> tuple[date, date, date]:
    """The day, the day before, and the same weekday a week before."""
    return day, day - timedelta(days=1), day - timedelta(days=7)
