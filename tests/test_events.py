"""Events (events.py): listeners hear every decision, refund and backend change, in sync and
async code; a failing listener is logged, never raised; each denial is logged at INFO; nothing
carries a plain number."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Clock, Unplugged

from smsguard import Blacklist, DailyCap, Event, Guard, IPThrottle, SameContent, Whitelist

VICTIM = "+8613800138000"


def heard(guard: Guard) -> list[Event]:
    events: list[Event] = []
    guard.reporter.listeners.append(events.append)
    return events


def test_listeners_hear_decisions(make_guard: Callable[..., Guard]) -> None:
    events: list[Event] = []
    guard = make_guard([SameContent(), DailyCap(5), IPThrottle("9/hour")], listeners=[events.append])
    guard.check("138 0013 8000", content="a", ip="203.0.113.7")
    asyncio.run(guard.acheck(VICTIM, content="a", ip="2001:db8::1"))
    allowed, denied = events
    phone_hash = guard.identify(VICTIM)[1]
    assert (allowed.kind, allowed.allowed, allowed.reason, allowed.refusal) == ("decision", True, None, None)
    assert (allowed.country, allowed.phone_hash, allowed.network) == ("CN", phone_hash, "203.0.113.7")
    assert (denied.allowed, denied.policy, denied.reason, denied.refusal) == (
        False,
        "same_content",
        "same_content",
        "limit",
    )
    assert denied.retry_after == 30
    assert denied.network == "2001:db8::/64", "the network as IPThrottle counts it"
    assert allowed.duration is not None
    assert allowed.duration >= 0
    for event in events:
        assert "13800138000" not in repr(event), "never the plain number"


def test_listeners_hear_refunds_and_backend_changes(clock: Clock) -> None:
    backend = Unplugged()
    events: list[Event] = []
    guard = Guard(
        [DailyCap(3)], backend=backend, clock=clock, secret="s", fail_mode="closed", listeners=[events.append]
    )
    decision = guard.check(VICTIM)
    guard.refund(decision)
    backend.down = True
    guard.check(VICTIM)
    guard.check(VICTIM)  # still down: no second backend_down
    backend.down = False
    clock.advance(5)
    guard.check(VICTIM)
    kinds = [(e.kind, e.reason) for e in events]
    assert kinds == [
        ("decision", None),
        ("refund", None),
        ("backend_down", None),
        ("decision", "backend_unavailable"),
        ("decision", "backend_unavailable"),
        ("backend_up", None),
        ("decision", None),
    ]
    assert events[1].phone_hash == guard.identify(VICTIM)[1]
    assert "connection refused" in (events[2].detail or "")


def test_a_failing_listener_is_logged_not_raised(
    make_guard: Callable[..., Guard], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("the metrics server is down")

    events: list[Event] = []
    guard = make_guard([DailyCap(1)], listeners=[broken, events.append])
    with caplog.at_level(logging.ERROR, logger="smsguard"):
        assert guard.check(VICTIM).allowed
        assert asyncio.run(guard.acheck(VICTIM)).reason == "daily_cap"
    assert len(events) == 2, "the next listener still hears every event"
    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0].exc_info is not None


def test_each_denial_is_logged_at_info_with_its_fields(
    make_guard: Callable[..., Guard], caplog: pytest.LogCaptureFixture
) -> None:
    guard = make_guard([DailyCap(1), IPThrottle("9/hour")])
    with caplog.at_level(logging.INFO, logger="smsguard"):
        guard.check(VICTIM, ip="203.0.113.7")
        guard.check(VICTIM, ip="203.0.113.7")
        asyncio.run(guard.acheck(VICTIM, ip="203.0.113.8"))
    records = [r for r in caplog.records if r.getMessage().startswith("smsguard: denied")]
    assert len(records) == 2, "one per denial, none for the allowed attempt"
    record: Any = records[0]
    assert (record.levelno, record.policy, record.reason, record.country) == (
        logging.INFO,
        "daily_cap",
        "daily_cap",
        "CN",
    )
    assert (record.phone_hash, record.client_network) == (guard.identify(VICTIM)[1], "203.0.113.7")
    assert record.retry_after > 0
    for r in records:
        assert "13800138000" not in r.getMessage()


def test_no_listener_no_log_no_event_object(
    make_guard: Callable[..., Guard], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With no listeners and INFO off, the guard builds no event at all."""
    import smsguard.events

    built: list[Any] = []
    monkeypatch.setattr(smsguard.events, "Event", lambda *a, **k: built.append(a))
    guard = make_guard([DailyCap(1)])
    caplog.set_level(logging.WARNING, logger="smsguard")
    guard.check(VICTIM)
    guard.check(VICTIM)
    assert built == []


def test_fixed_list_verdicts_carry_the_country_and_hash_too(
    make_guard: Callable[..., Guard], caplog: pytest.LogCaptureFixture
) -> None:
    """A whitelisted or blacklisted number is decided without the backend: its decision, event
    and log line still name its country and keyed hash."""
    events: list[Event] = []
    other = "+447946000100"
    guard = make_guard([Whitelist([VICTIM]), Blacklist([other]), DailyCap(1)], listeners=[events.append])
    with caplog.at_level(logging.INFO, logger="smsguard"):
        exempt, blacklisted = guard.check(VICTIM), guard.check(other)
    assert (exempt.reason, exempt.country, exempt.phone_hash) == ("exempt", "CN", guard.identify(VICTIM)[1])
    assert (blacklisted.reason, blacklisted.country) == ("blacklisted", "GB")
    assert [(e.reason, e.country, e.phone_hash) for e in events] == [
        ("exempt", "CN", exempt.phone_hash),
        ("blacklisted", "GB", guard.identify(other)[1]),
    ]
    record: Any = next(r for r in caplog.records if r.getMessage().startswith("smsguard: denied"))
    assert (record.country, record.phone_hash) == ("GB", blacklisted.phone_hash)
