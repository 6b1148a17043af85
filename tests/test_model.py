"""Property test: the guard on each backend against a small reference model.

The model keeps the list of admitted attempts and recounts every rule from it directly
(no counters, no expiry lists), so it shares no logic with the backends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from conftest import Clock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsguard import Backend, DailyCap, Decision, Guard, IPThrottle, PhoneRate, SameContent

SHANGHAI = 8 * 3600  # Asia/Shanghai has kept UTC+8, without DST, since 1991
PHONES = [
    ("+8613800138000", "138 0013 8000"),
    ("+8613800138000", "008613800138000"),
    ("+8613900139000", "13900139000"),
]
CONTENTS = ["code 1", "code 2"]
IPS = ["203.0.113.1", "203.0.113.2", "2001:db8::1"]


def next_midnight(t: float) -> float:
    return ((t + SHANGHAI) // 86400 + 1) * 86400 - SHANGHAI


@dataclass
class Model:
    admitted: list[tuple[str, str, str, float]] = field(default_factory=list)

    def decide(self, phone: str, content: str, ip: str, now: float) -> tuple[bool, str | None, float | None]:
        rules: list[tuple[str, int, list[float]]] = []  # (reason, limit, expiries of live hits)

        def live(
            match: Callable[[tuple[str, str, str, float]], bool], expiry: Callable[[float], float]
        ) -> list[float]:
            return sorted(e for a in self.admitted if match(a) and (e := expiry(a[3])) > now)

        rules.append(("same_content", 1, live(lambda a: a[0] == phone and a[1] == content, lambda t: t + 30)))
        rules.append(("daily_cap", 3, live(lambda a: a[0] == phone, next_midnight)))
        rules.append(("phone_rate", 2, live(lambda a: a[0] == phone, lambda t: t + 60)))
        rules.append(("phone_rate", 4, live(lambda a: a[0] == phone, lambda t: t + 3600)))
        rules.append(("ip_throttle", 3, live(lambda a: a[2] == ip, lambda t: t + 3600)))
        waits = [
            (hits[len(hits) - limit] - now, reason) for reason, limit, hits in rules if len(hits) >= limit
        ]
        if not waits:
            self.admitted.append((phone, content, ip, now))
            return True, None, None
        wait, reason = max(waits, key=lambda w: w[0])
        return False, reason, wait


step = st.tuples(
    st.sampled_from([0, 0, 1, 10, 29, 30, 31, 59, 60, 600, 3599, 3600, 20000, 86400]),
    st.integers(0, len(PHONES) - 1),
    st.integers(0, len(CONTENTS) - 1),
    st.integers(0, len(IPS) - 1),
    st.booleans(),  # refund this attempt if allowed (the SMS failed to send)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=60), start=st.floats(0, 86400))
def test_guard_matches_reference_model(
    backend: Backend,
    make_guard: Callable[..., Guard],
    clock: Clock,
    steps: list[tuple[int, int, int, int, bool]],
    start: float,
) -> None:
    backend.clear()  # the fixture outlives one example
    # The local deny cache on, on every backend (on Redis it is by default): its denials must be
    # the backend's, reason and retry_after alike.
    guard = make_guard(
        [SameContent(), DailyCap(3, tz="Asia/Shanghai"), PhoneRate("2/minute;4/hour"), IPThrottle("3/hour")],
        deny_cache=True,
    )
    clock.now = 1772409600.0 + start
    model = Model()
    for dt, p, c, i, refund in steps:
        clock.advance(dt)
        e164, typed = PHONES[p]
        d: Decision = guard.check(typed, content=CONTENTS[c], ip=IPS[i])
        expected = model.decide(e164, CONTENTS[c], IPS[i], clock.now)
        assert (d.allowed, d.reason, d.retry_after) == expected
        if d.allowed and refund:
            guard.refund(d)
            model.admitted.pop()
