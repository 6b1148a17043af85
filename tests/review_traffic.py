"""Two days of traffic for the review page's tests: ordinary sign-ups on both (British and
French numbers, most codes entered), then, on the second, a pumping run through Latvian numbers
whose codes nobody enters, until the guard's country room refuses them."""

from __future__ import annotations

from conftest import T0, Clock

from smsguard import Guard, LearnedCap, SpendCap, Statistics
from smsguard.backends.base import Backend
from smsguard.policies import Policy

ZONE = "Europe/London"
MIDNIGHT = T0 - 4 * 3600  # Mon 2026-03-02 00:00 in London (T0 is 04:00 UTC)
ORDINARY = ((9, 10), (10, 12), (11, 8))
"""(hour, British numbers) of an ordinary day; three French numbers an hour besides."""
PUMPED = 60
"""Latvian numbers tried at 14:00 of the second day."""


def policies() -> list[Policy]:
    return [
        LearnedCap("network", floor=100, ceiling=1000),  # the guard learns each number's network
        LearnedCap("country", floor=20, ceiling=300),
        SpendCap(3.5, tz=ZONE),
    ]


def two_days(clock: Clock, backend: Backend | None = None) -> tuple[Guard, list[str]]:
    """The guard after both days (its clock at 15:00 on the second), and the numbers texted."""
    clock.now = MIDNIGHT - 86400
    guard = Guard(
        policies(),
        backend=backend,
        clock=clock,
        secret="review-test",
        statistics=Statistics(ZONE),
    )
    texted: list[str] = []
    for day, start in enumerate((MIDNIGHT - 86400, MIDNIGHT)):
        for hour, british in ORDINARY:
            clock.now = start + hour * 3600
            for i in range(british):
                phone = f"+4474001{day}{hour:02d}{i:02d}"
                assert guard.check(phone).allowed
                texted.append(phone)
                if i % 5:  # four in five codes entered
                    guard.verified(phone)
                clock.advance(30)
            for i in range(3):
                phone = f"+336123{day}{hour:02d}{i:02d}"
                assert guard.check(phone).allowed
                texted.append(phone)
                guard.verified(phone)
    clock.now = MIDNIGHT + 14 * 3600
    for i in range(PUMPED):
        phone = f"+371200{i:05d}"
        if guard.check(phone).allowed:
            texted.append(phone)
        clock.advance(20)
    clock.now = MIDNIGHT + 15 * 3600
    return guard, texted
