"""Calendar days in a time zone: a daily cap's day, a day of statistics (semantics 3)."""

from __future__ import annotations

import threading
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from smsguard.errors import ConfigError


def zone(tz: str) -> ZoneInfo:
    """The IANA time zone ``tz``, or a ConfigError naming it."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {tz!r}: use an IANA name such as 'Asia/Shanghai'") from None


class LocalDays:
    """The calendar day holding a moment, in a time zone: its bounds and its date. The day is
    the real local day: it ends at local midnight, on 23- and 25-hour DST days too. The last
    day seen is cached (a flood asks about one day)."""

    def __init__(self, tz: str) -> None:
        self.tz = zone(tz)
        self._day = (0.0, 0.0, "")  # [start, end) of the last day seen, epoch seconds; its date
        self._lock = threading.Lock()

    def __call__(self, now: float) -> tuple[float, float, str]:
        """(start, end, ``"YYYY-MM-DD"``) of the local day holding ``now``."""
        day = self._day
        if day[0] <= now < day[1]:
            return day
        date = datetime.fromtimestamp(now, self.tz).date()
        start = datetime.combine(date, time(), tzinfo=self.tz).timestamp()
        end = datetime.combine(date + timedelta(days=1), time(), tzinfo=self.tz).timestamp()
        with self._lock:
            self._day = day = (start, end, date.isoformat())
        return day
