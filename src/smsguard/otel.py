"""OpenTelemetry: a listener for ``Guard(listeners=[...])`` (the ``otel`` extra).

    from smsguard.otel import OpenTelemetryListener
    guard = Guard(policies, listeners=[OpenTelemetryListener()])   # the global MeterProvider

It records, through the OpenTelemetry metrics API, the counts ``smsguard.metrics`` exports to
Prometheus, under the same attributes:

- ``smsguard.decisions{policy,reason,allowed}``: decisions, by the policy and reason that
  decided (empty strings for an attempt within every limit);
- ``smsguard.decision.duration`` (s): how long the guard took over a decision (a histogram,
  with the Prometheus listener's buckets as its advice);
- ``smsguard.backend.up``: 1 while the backend answers, 0 while the fail mode applies;
- ``smsguard.fail_mode.decisions{mode}``: decisions the fail mode made;
- ``smsguard.shadow.denials{policy}``: attempts a shadow policy would have denied;
- ``smsguard.refunds``;
- ``smsguard.code.checks{reason}``: codes checked (``ok`` for a right one);
- ``smsguard.code.lockouts``: codes killed by their last wrong check.

(An OpenTelemetry Prometheus exporter names them ``smsguard_decisions_total`` and so on.)

And it sets, on the span current when the guard decides (the request's, under an instrumented
framework), the decision's ``smsguard.allowed``, ``smsguard.policy``, ``smsguard.reason``,
``smsguard.fail_mode``, ``smsguard.shadowed`` and ``smsguard.country``; a code check sets
``smsguard.code.ok`` and ``smsguard.code.reason``. Never the number, its hash or the client's
address: attributes, like labels, come from the configuration and the number's country.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from smsguard.events import BACKEND_DOWN, BACKEND_UP, CODE_CHECK, DECISION, LOCKOUT, REFUND, Event
from smsguard.metrics import BUCKETS


class OpenTelemetryListener:
    """The listener. ``meter_provider`` defaults to the global one (``metrics.set_meter_provider``);
    ``spans=False`` leaves the current span alone."""

    def __init__(
        self, meter_provider: MeterProvider | None = None, *, namespace: str = "smsguard", spans: bool = True
    ) -> None:
        meter = metrics.get_meter("smsguard", meter_provider=meter_provider)
        ns = namespace
        self.spans = spans
        self.up = True
        self._decisions = meter.create_counter(
            f"{ns}.decisions",
            unit="{decision}",
            description="Decisions, by the policy and reason that decided.",
        )
        self._duration = meter.create_histogram(
            f"{ns}.decision.duration",
            unit="s",
            description="Time the guard took over a decision.",
            explicit_bucket_boundaries_advisory=list(BUCKETS),
        )
        meter.create_observable_gauge(
            f"{ns}.backend.up",
            callbacks=[self._observe_up],
            description="1 while the backend answers, 0 while the fail mode applies.",
        )
        self._fail_mode = meter.create_counter(
            f"{ns}.fail_mode.decisions", unit="{decision}", description="Decisions the fail mode made."
        )
        self._shadowed = meter.create_counter(
            f"{ns}.shadow.denials",
            unit="{attempt}",
            description="Attempts a shadow policy would have denied.",
        )
        self._refunds = meter.create_counter(
            f"{ns}.refunds", unit="{refund}", description="Refunds: attempts whose SMS was not sent."
        )
        self._checks = meter.create_counter(
            f"{ns}.code.checks", unit="{check}", description="Codes checked, by reason (ok for a right one)."
        )
        self._lockouts = meter.create_counter(
            f"{ns}.code.lockouts", unit="{code}", description="Codes killed by their last wrong check."
        )

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind == DECISION:
            self._decisions.add(
                1,
                {"policy": event.policy or "", "reason": event.reason or "", "allowed": bool(event.allowed)},
            )
            if event.duration is not None:
                self._duration.record(event.duration)
            if event.fail_mode is not None:
                self._fail_mode.add(1, {"mode": event.fail_mode})
            for policy in event.shadowed:
                self._shadowed.add(1, {"policy": policy})
            if self.spans:
                _annotate(_decision_attributes(event))
        elif kind == REFUND:
            self._refunds.add(1)
        elif kind == CODE_CHECK:
            self._checks.add(1, {"reason": event.reason or "ok"})
            if self.spans:
                _annotate({"smsguard.code.ok": bool(event.allowed), "smsguard.code.reason": event.reason})
        elif kind == LOCKOUT:
            self._lockouts.add(1)
        elif kind == BACKEND_DOWN:
            self.up = False
        elif kind == BACKEND_UP:
            self.up = True

    def _observe_up(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(int(self.up))]


def _decision_attributes(event: Event) -> dict[str, Any]:
    """A decision's span attributes (None where the event has none: left out)."""
    return {
        "smsguard.allowed": bool(event.allowed),
        "smsguard.policy": event.policy,
        "smsguard.reason": event.reason,
        "smsguard.fail_mode": event.fail_mode,
        "smsguard.shadowed": list(event.shadowed) or None,
        "smsguard.country": event.country,
    }


def _annotate(attributes: dict[str, Any]) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({name: value for name, value in attributes.items() if value is not None})
