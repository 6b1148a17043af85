"""OpenTelemetry (otel.py), read back through the SDK: an in-memory metric reader against the
Prometheus listener's scrape of the same guard, and an in-memory span exporter."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import Clock, Unplugged
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from test_metrics import scrape

from smsguard import Countries, DailyCap, Guard, SameContent
from smsguard.metrics import PrometheusMetrics
from smsguard.otel import OpenTelemetryListener

VICTIM = "+8613800138000"
# The OpenTelemetry instrument of each Prometheus family, and how its attributes read as labels.
PROMETHEUS = {
    "smsguard.decisions": "smsguard_decisions_total",
    "smsguard.fail_mode.decisions": "smsguard_fail_mode_decisions_total",
    "smsguard.shadow.denials": "smsguard_shadow_denials_total",
    "smsguard.refunds": "smsguard_refunds_total",
    "smsguard.code.checks": "smsguard_code_checks_total",
    "smsguard.code.lockouts": "smsguard_code_lockouts_total",
    "smsguard.backend.up": "smsguard_backend_up",
}


def read(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every counter and gauge point, and each histogram's count, by name and attributes (as
    strings, the way a Prometheus label reads them)."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "smsguard"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    labels = tuple(
                        sorted(
                            (k, str(v).lower() if isinstance(v, bool) else str(v))
                            for k, v in point.attributes.items()
                        )
                    )
                    if isinstance(point, HistogramDataPoint):
                        found[(metric.name + ".count", labels)] = point.count
                        found[(metric.name + ".sum", labels)] = point.sum
                    else:
                        found[(metric.name, labels)] = point.value
    return found


def both(**settings: Any) -> tuple[Guard, InMemoryMetricReader, CollectorRegistry]:
    reader, registry = InMemoryMetricReader(), CollectorRegistry()
    listeners = [OpenTelemetryListener(MeterProvider(metric_readers=[reader])), PrometheusMetrics(registry)]
    return Guard(listeners=listeners, **settings), reader, registry


def test_the_same_counts_as_the_prometheus_listener(clock: Clock) -> None:
    backend = Unplugged()
    guard, reader, registry = both(
        policies=[SameContent(), DailyCap(3), DailyCap(1, shadow=True, name="shadow_cap")],
        backend=backend,
        clock=clock,
        secret="s",
        fail_mode="local",
    )
    guard.check(VICTIM, content="a")
    guard.check(VICTIM, content="a")  # same_content
    refunded = asyncio.run(guard.acheck(VICTIM, content="b"))
    guard.refund(refunded)
    code = guard.issue_code(VICTIM).code
    assert code is not None
    guard.check_code(VICTIM, "000000" if code != "000000" else "111111")
    guard.check_code(VICTIM, code)
    backend.down = True
    guard.check(VICTIM, content="c")  # the local fail mode decides
    otel, prometheus = read(reader), scrape(registry)

    compared = 0
    for (name, labels), value in otel.items():
        if name in PROMETHEUS:
            assert prometheus[(PROMETHEUS[name], labels)] == value, (name, labels)
            compared += 1
    # Every Prometheus sample of those families has its OpenTelemetry twin.
    twins = {(PROMETHEUS[name], labels) for name, labels in otel if name in PROMETHEUS}
    for key, value in prometheus.items():
        if key[0] in PROMETHEUS.values() and value:
            assert key in twins, key
    assert compared >= 8
    assert (
        otel[
            (
                "smsguard.decisions",
                (("allowed", "false"), ("policy", "same_content"), ("reason", "same_content")),
            )
        ]
        == 1
    )
    assert otel[("smsguard.fail_mode.decisions", (("mode", "local"),))] == 1
    assert otel[("smsguard.shadow.denials", (("policy", "shadow_cap"),))] >= 1
    assert otel[("smsguard.backend.up", ())] == 0
    assert otel[("smsguard.code.checks", (("reason", "wrong_code"),))] == 1
    assert otel[("smsguard.code.checks", (("reason", "ok"),))] == 1
    histogram = otel[("smsguard.decision.duration.count", ())]
    assert histogram == prometheus[("smsguard_decision_seconds_count", ())] == 5


def test_span_attributes_and_never_the_number(clock: Clock) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    guard, _, _ = both(
        policies=[Countries(["CN"]), DailyCap(1), DailyCap(1, shadow=True, name="shadow_cap")],
        clock=clock,
        secret="s",
    )
    with tracer.start_as_current_span("allowed"):
        guard.check(VICTIM)
    with tracer.start_as_current_span("denied"):
        guard.check(VICTIM)
    with tracer.start_as_current_span("abroad"):
        asyncio.run(guard.acheck("+14155550123"))
    with tracer.start_as_current_span("code"):
        guard.check_code(VICTIM, "123456")
    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert spans["allowed"] == {"smsguard.allowed": True, "smsguard.country": "CN"}
    assert spans["denied"] == {
        "smsguard.allowed": False,
        "smsguard.policy": "daily_cap",
        "smsguard.reason": "daily_cap",
        "smsguard.shadowed": ("shadow_cap",),
        "smsguard.country": "CN",
    }
    assert spans["abroad"]["smsguard.reason"] == "country_not_allowed"
    assert spans["abroad"]["smsguard.country"] == "US"
    assert spans["code"] == {"smsguard.code.ok": False, "smsguard.code.reason": "no_code"}
    text = repr(spans)
    assert "13800138000" not in text
    assert "4155550123" not in text
    assert guard.identify(VICTIM).phone_id not in text


def test_fail_mode_on_the_span_and_spans_off(clock: Clock) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    backend = Unplugged()
    backend.down = True
    on = Guard([DailyCap(3)], backend=backend, clock=clock, secret="s", fail_mode="open",
               listeners=[OpenTelemetryListener(MeterProvider())])  # fmt: skip
    off = Guard([DailyCap(3)], clock=clock, secret="s",
                listeners=[OpenTelemetryListener(MeterProvider(), spans=False)])  # fmt: skip
    with tracer.start_as_current_span("open"):
        on.check(VICTIM)
    with tracer.start_as_current_span("off"):
        off.check(VICTIM)
    spans = {span.name: dict(span.attributes or {}) for span in exporter.get_finished_spans()}
    assert spans["open"]["smsguard.fail_mode"] == "open"
    assert spans["open"]["smsguard.reason"] == "fail_open"
    assert spans["off"] == {}
