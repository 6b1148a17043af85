"""A policy of your own: no base class, just ``name``, ``reason`` and ``review()``.

``RangeRate`` fights SMS pumping: fraudsters profit from floods to one block of numbers,
each number hit only once or twice, so no per-number limit fires. Counting per number
*range* (the E.164 number cut to its first ``digits`` digits) catches the block.

Run it:  python examples/custom_policy.py
"""

from __future__ import annotations

from smsguard import Attempt, Counter, Guard, PhoneRate
from smsguard.plan import key
from smsguard.policies import Review, parse_rates


class RangeRate:
    """Sliding-window rates per number range: ``RangeRate("30/hour", digits=8)``."""

    reason = "range_rate"

    def __init__(self, rates: str, *, digits: int = 8, name: str = "range_rate") -> None:
        self.name, self.digits = name, digits
        self.items = [(item.amount, item.get_expiry()) for item in parse_rates(rates)]

    def review(self, attempt: Attempt, now: float) -> Review:
        block = attempt.digest(attempt.phone[: self.digits + 1])  # keyed hash: no plain digits stored
        # key() puts the subject in a Redis Cluster hash tag: one range's keys share a slot. Its
        # rates share one log of hit times (one Redis key per range); window= keeps them exact.
        log = key(self.name, block)
        return [
            Counter(key(self.name, block, f"{amount}/{window}"), amount, now + window, window=window, log=log)
            for amount, window in self.items
        ]


if __name__ == "__main__":
    guard = Guard([PhoneRate("1/minute"), RangeRate("5/hour", digits=9)], default_region="GB")
    for n in range(8):  # a pumping run: eight fresh numbers in one range
        number = f"+4479460001{n:02d}"
        d = guard.check(number)
        print(number, "sent" if d.allowed else f"denied by {d.policy}, retry in {d.retry_after:.0f}s")
