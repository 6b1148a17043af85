"""Prometheus metrics (metrics.py), read back by scraping a real prometheus_client registry."""

from __future__ import annotations

import asyncio

from conftest import Clock, Unplugged
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smsguard import DailyCap, Guard, SameContent
from smsguard.metrics import PrometheusMetrics

VICTIM = "+8613800138000"


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition text, by name and labels: what a Prometheus server reads."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_decisions_latency_backend_and_fail_mode(clock: Clock) -> None:
    registry = CollectorRegistry()
    backend = Unplugged()
    guard = Guard(
        [SameContent(), DailyCap(2)],
        backend=backend,
        clock=clock,
        secret="s",
        fail_mode="local",
        listeners=[PrometheusMetrics(registry)],
    )
    guard.check(VICTIM, content="a")
    guard.check(VICTIM, content="a")  # same_content
    refunded = asyncio.run(guard.acheck(VICTIM, content="b"))
    guard.refund(refunded)
    backend.down = True
    guard.check(VICTIM, content="c")  # the local fail mode decides, and the backend is down
    samples = scrape(registry)
    assert samples[("smsguard_decisions_total", (("allowed", "true"), ("policy", ""), ("reason", "")))] == 3
    denied = (("allowed", "false"), ("policy", "same_content"), ("reason", "same_content"))
    assert samples[("smsguard_decisions_total", denied)] == 1
    assert samples[("smsguard_decision_seconds_count", ())] == 4
    assert samples[("smsguard_decision_seconds_sum", ())] > 0
    assert samples[("smsguard_refunds_total", ())] == 1
    assert samples[("smsguard_fail_mode_decisions_total", (("mode", "local"),))] == 1
    assert samples[("smsguard_backend_up", ())] == 0
    backend.down = False
    clock.advance(5)
    guard.check(VICTIM, content="d")
    assert scrape(registry)[("smsguard_backend_up", ())] == 1


def test_labels_never_carry_a_number_or_an_address() -> None:
    registry = CollectorRegistry()
    guard = Guard([DailyCap(1)], secret="s", default_region="CN", listeners=[PrometheusMetrics(registry)])
    for n in range(20):
        guard.check(f"+86138001380{n:02d}", ip=f"203.0.113.{n}")
        guard.check(f"+86138001380{n:02d}", ip=f"203.0.113.{n}")
    text = generate_latest(registry).decode()
    assert "138001380" not in text
    assert "203.0.113" not in text
    assert (
        scrape(registry)[
            (
                "smsguard_decisions_total",
                (("allowed", "false"), ("policy", "daily_cap"), ("reason", "daily_cap")),
            )
        ]
        == 20
    )


def test_shadow_denials(clock: Clock) -> None:
    registry = CollectorRegistry()
    guard = Guard([DailyCap(1, shadow=True)], clock=clock, listeners=[PrometheusMetrics(registry)])
    assert all(guard.check(VICTIM).allowed for _ in range(3))
    samples = scrape(registry)
    assert samples[("smsguard_shadow_denials_total", (("policy", "daily_cap"),))] == 2
    assert samples[("smsguard_decisions_total", (("allowed", "true"), ("policy", ""), ("reason", "")))] == 3


def test_code_checks_by_reason_and_lockouts(clock: Clock) -> None:
    """Every check of a code is counted by its exact reason (the client sees one reason for three
    of them, the operator all), and a code killed by its last wrong guess is a lockout."""
    registry = CollectorRegistry()
    guard = Guard([], clock=clock, secret="s", listeners=[PrometheusMetrics(registry)])
    guard.check_code(VICTIM, "123456")  # no_code
    code = guard.issue_code(VICTIM).code
    assert code is not None
    assert guard.check_code(VICTIM, code).ok
    other = "+8613800138001"
    code = guard.issue_code(other).code
    assert code is not None
    bad = str((int(code) + 1) % 10**6).zfill(6)
    for _ in range(5):
        guard.check_code(other, bad)  # the fifth kills the code
    assert guard.check_code(other, code).reason == "check_attempts"
    samples = scrape(registry)
    checks = {
        dict(labels)["reason"]: n
        for (name, labels), n in samples.items()
        if name == "smsguard_code_checks_total"
    }
    assert checks == {"no_code": 1, "ok": 1, "wrong_code": 5, "check_attempts": 1}
    assert samples[("smsguard_code_lockouts_total", ())] == 1
    assert "138001380" not in generate_latest(registry).decode()


def test_verifications_surges_conversion_drops_and_budget_alarms(clock: Clock) -> None:
    """What the alert rules in contrib/prometheus read: codes entered, and the events a
    LearnedCap and a SpendCap tell, by policy."""
    from smsguard import LearnedCap, SpendCap

    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    room = Guard(
        [LearnedCap("country", floor=2, ceiling=100), SpendCap(daily_messages=10, alarm=0.2)],
        clock=clock,
        secret="s",
        listeners=[metrics],
    )
    ceiling = Guard(
        [LearnedCap("country", floor=100, ceiling=2, name="country_ceiling")],
        clock=clock,
        secret="s",
        listeners=[metrics],
    )
    for guard in (room, ceiling):  # 2 sent each, then refused (three times; told once)
        for n in range(5):
            guard.check(f"+3361234560{n}")
    room.verified("+33612345600")
    found = scrape(registry)
    assert found[("smsguard_verifications_total", ())] == 1
    assert found[("smsguard_conversion_drops_total", (("policy", "learned_country"),))] == 1
    assert found[("smsguard_surges_total", (("policy", "country_ceiling"),))] == 1
    assert found[("smsguard_budget_alarms_total", (("policy", "spend"),))] == 1
    assert ("smsguard_surges_total", (("policy", "learned_country"),)) not in found
