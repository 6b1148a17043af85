"""An SMS-bombing burst against a guard on the in-memory backend.

A botnet of 40 addresses asks the site to text one victim, typing the number in every
format it can think of, repeating content and rotating it, every 20 s for two hours.
The clock is simulated, so the two hours take a blink.

Run it:  ./dev demo   (or: python examples/demo.py)
"""

from __future__ import annotations

import random
from collections import Counter

from smsguard import (
    DailyCap,
    Guard,
    InvalidPhone,
    IPThrottle,
    PhoneRate,
    SameContent,
    Whitelist,
)

VARIANTS = [
    "138 0013 8000",
    "+86 138-0013-8000",
    "008613800138000",
    "１３８００１３８０００",
    "(138) 0013 8000",
]


class SimulatedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def main() -> None:
    clock = SimulatedClock(1772413200.0)  # 2026-03-02 09:00 in Shanghai
    guard = Guard(
        [
            Whitelist(["+8613800000000"]),  # the QA team's test phone
            SameContent(window=30),
            DailyCap(10, tz="Asia/Shanghai"),
            PhoneRate("1/minute;5/hour"),
            IPThrottle("20/hour"),
        ],
        default_region="CN",
        clock=clock,
    )
    rng = random.Random(4821)
    botnet = [f"198.51.100.{i}" for i in range(1, 41)]
    reasons: Counter[str] = Counter()

    print("  time  verdict                           from            content            typed as")
    for i in range(360):  # every 20 s for two hours
        clock.now += 20
        typed = VARIANTS[i % len(VARIANTS)]
        content = "Your code is 4821" if i % 3 else f"Your code is {rng.randrange(10000):04d}"
        ip = rng.choice(botnet)
        d = guard.check(typed, content=content, ip=ip)
        reasons["sent" if d.allowed else d.reason or "?"] += 1
        if i < 12 or d.allowed:
            verdict = "SENT" if d.allowed else f"denied: {d.reason}, retry in {d.retry_after:.0f}s"
            print(f"{(i + 1) * 20:>5}s  {verdict:<33} {ip:<15} {content:<18} {typed}")

    print("\nVictim +8613800138000, 360 attempts in two hours:")
    for reason, n in reasons.most_common():
        print(f"  {reason:<14} {n}")

    print("\nMeanwhile:")
    d = guard.check("13800000000", content="test", ip="203.0.113.9")
    print(f"  QA test phone          -> allowed={d.allowed} ({d.reason})")
    d = guard.check("139 0013 9000", content="Your code is 1234", ip="203.0.113.10")
    print(f"  another user           -> allowed={d.allowed}, {d.remaining['daily_cap']} left today")
    try:
        guard.check("12345678901234", content="x", ip="203.0.113.11")
    except InvalidPhone as exc:
        print(f"  a garbled number       -> InvalidPhone: {exc}")


if __name__ == "__main__":
    main()
