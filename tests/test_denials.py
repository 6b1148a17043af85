"""The local deny cache (smsguard.denials): a flood's denials without a round trip, exact, and
what other workers change reaching each worker within the horizon."""

from __future__ import annotations

import pytest
from conftest import Clock, unique_prefix
from servers import RedisServer, top_level_commands

from smsguard import DailyCap, Guard, IPThrottle, PhoneRate, SameContent, Suspend, Whitelist
from smsguard.backends.redis import RedisBackend

pytestmark = pytest.mark.redis_server

VICTIM = "+8613800138000"
POLICIES = [
    Suspend(),
    Whitelist(shared=True),
    SameContent(),
    DailyCap(10),
    PhoneRate("3/hour"),
    IPThrottle("20/hour"),
]


def workers(server: RedisServer, clock: Clock, **settings: object) -> tuple[Guard, Guard]:
    """Two guards ("workers") on one redis-server, one prefix, one injected clock."""
    prefix = unique_prefix()
    return tuple(  # type: ignore[return-value]
        Guard(
            POLICIES,
            backend=RedisBackend.from_url(server.url, prefix=prefix),
            clock=clock,
            secret="s",
            default_region="CN",
            **settings,
        )  # type: ignore[arg-type]
        for _ in range(2)
    )


def flood(guard: Guard, n: int, start: int = 0) -> list[bool]:
    return [
        guard.check(VICTIM, content=f"code {i}", ip=f"10.0.{i // 250}.{i % 250}").allowed
        for i in range(start, start + n)
    ]


def test_a_flood_is_denied_locally_with_the_exact_retry_after(
    redis_server: RedisServer, clock: Clock
) -> None:
    a, b = workers(redis_server, clock)
    assert flood(a, 3) == [True, True, True]
    clock.advance(10)
    sent = top_level_commands(redis_server.port, lambda: flood(a, 500, 3))
    assert sent.count("EVALSHA") == 1, "the first denial asks Redis, the rest are local"
    assert a.flows.denials is not None
    assert a.flows.denials.denied == 499
    d = a.check(VICTIM, content="again", ip="10.9.9.9")
    assert (d.allowed, d.reason) == (False, "phone_rate")
    assert d.retry_after == 3600 - 10, "the first of the three hits frees a slot an hour after it"
    b.flows.denials = None  # the backend's own answer, for comparison
    assert b.check(VICTIM, content="again", ip="10.9.9.9").retry_after == d.retry_after
    # Counted in the statistics like any decision.
    a.flush()
    assert a.stats().attempts - a.stats().allowed == 501 + 1  # and b's one, on the same keys


def test_a_reset_through_one_worker_reaches_the_other_within_the_horizon(
    redis_server: RedisServer, clock: Clock
) -> None:
    a, b = workers(redis_server, clock, deny_cache=2.0)
    flood(a, 3)
    assert flood(b, 2, 3) == [False, False]  # b now knows the number is full
    a.reset(VICTIM)
    assert a.check(VICTIM, content="x", ip="10.1.1.1").allowed, "a reset reaches its own worker at once"
    clock.advance(1.0)
    assert not b.check(VICTIM, content="y", ip="10.1.1.2").allowed, "within the horizon: still cached"
    clock.advance(1.0)
    assert b.check(VICTIM, content="z", ip="10.1.1.3").allowed, "the horizon passed: Redis asked again"


def test_a_whitelist_entry_or_the_switch_is_not_overridden_beyond_the_horizon(
    redis_server: RedisServer, clock: Clock
) -> None:
    a, b = workers(redis_server, clock)
    flood(a, 3)
    assert flood(b, 2, 3) == [False, False]
    a.add_number("whitelist", VICTIM)
    clock.advance(1.0)
    d = b.check(VICTIM, content="w", ip="10.2.2.2")
    assert (d.allowed, d.policy) == (True, "whitelist"), "an earlier list verdict wins once known"
    b.suspend()
    d = b.check(VICTIM, content="s", ip="10.2.2.3")
    assert (d.allowed, d.reason) == (False, "suspended"), "a change through this worker: at once"


def test_a_refund_through_this_worker_frees_at_once(redis_server: RedisServer, clock: Clock) -> None:
    (a, _) = workers(redis_server, clock)
    first = a.check(VICTIM, content="1", ip="10.3.3.1")
    flood(a, 2, 10)
    assert not a.check(VICTIM, content="4", ip="10.3.3.4").allowed
    a.refund(first)
    assert a.check(VICTIM, content="5", ip="10.3.3.5").allowed


def test_off_and_bad_settings(redis_server: RedisServer, clock: Clock) -> None:
    a, _ = workers(redis_server, clock, deny_cache=False)
    assert a.flows.denials is None
    assert Guard(secret="s").flows.denials is None, "off on the memory backend by default"
    with pytest.raises(Exception, match="deny_cache"):
        Guard(secret="s", deny_cache=-1.0)
    settings = {
        "SMSGUARD_STORAGE_URI": redis_server.url,
        "SMSGUARD_SECRET": "s",
        "SMSGUARD_DENY_CACHE": "0.5",
    }
    cache = Guard.from_settings(settings).flows.denials
    assert cache is not None
    assert cache.horizon == 0.5


def test_may_deny_bounds_every_counter_known_full(redis_server: RedisServer, clock: Clock) -> None:
    """``may_deny`` False (an unseen number: no early plan, no walk) only where nothing of the
    number is known full: a number's own counter known full keeps it True until it frees."""
    a, _ = workers(redis_server, clock)
    denials = a.flows.denials
    assert denials is not None
    victim = a.flows.planner.identify(VICTIM).phone_id
    other = a.flows.planner.identify("+8613900139000").phone_id
    assert not denials.may_deny(victim, clock())
    assert flood(a, 3) == [True, True, True]
    clock.advance(40)  # its same-content counters free: only its own PhoneRate is full
    assert flood(a, 2, 3) == [False, False]
    assert denials.denied == 1, "the second denial is the cache's, before planning"
    assert denials.may_deny(victim, clock())
    assert not denials.may_deny(other, clock())
    assert a.check("+8613900139000", content="hi", ip="10.9.9.9").allowed
    clock.advance(3600)  # the hour frees: nothing of it is known full any more
    assert not denials.may_deny(victim, clock())
    assert flood(a, 1, 5) == [True]
