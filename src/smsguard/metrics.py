"""Prometheus metrics: a listener for ``Guard(listeners=[...])`` (the ``prometheus`` extra).

    from smsguard.metrics import PrometheusMetrics
    guard = Guard(policies, listeners=[PrometheusMetrics()])   # the default registry

exports

- ``smsguard_decisions_total{policy,reason,allowed}``: decisions, by the policy and reason that
  decided (empty strings for an attempt within every limit);
- ``smsguard_decision_seconds``: how long the guard took over a decision (a histogram);
- ``smsguard_backend_up``: 1 while the backend answers, 0 while the fail mode applies;
- ``smsguard_fail_mode_decisions_total{mode}``: decisions the fail mode made;
- ``smsguard_shadow_denials_total{policy}``: attempts a shadow policy would have denied;
- ``smsguard_refunds_total``.

Labels are policy names and reason codes, which come from the configuration: never a number,
an address or anything else a client chooses, so the series stay few.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from smsguard.events import BACKEND_DOWN, BACKEND_UP, DECISION, REFUND, Event

# A decision takes microseconds in process and a round trip on Redis; a slow one, a timeout.
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5)


class PrometheusMetrics:
    """The listener; ``registry`` defaults to prometheus_client's global one."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, namespace: str = "smsguard") -> None:
        options: dict[str, Any] = {"namespace": namespace, "registry": registry}
        self.decisions = Counter(
            "decisions",
            "Decisions, by the policy and reason that decided.",
            ["policy", "reason", "allowed"],
            **options,
        )
        self.seconds = Histogram(
            "decision_seconds", "Time the guard took over a decision.", buckets=BUCKETS, **options
        )
        self.backend_up = Gauge(
            "backend_up", "1 while the backend answers, 0 while the fail mode applies.", **options
        )
        self.fail_mode = Counter("fail_mode_decisions", "Decisions the fail mode made.", ["mode"], **options)
        self.refunds = Counter("refunds", "Refunds: attempts whose SMS was not sent.", **options)
        self.shadowed = Counter(
            "shadow_denials", "Attempts a shadow policy would have denied.", ["policy"], **options
        )
        self.backend_up.set(1)
        self._children: dict[tuple[str | None, str | None, bool | None], Any] = {}  # labels() costs

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind == DECISION:
            labels = (event.policy, event.reason, event.allowed)
            child = self._children.get(labels)
            if child is None:
                allowed = "true" if event.allowed else "false"
                child = self._children[labels] = self.decisions.labels(
                    event.policy or "", event.reason or "", allowed
                )
            child.inc()
            if event.duration is not None:
                self.seconds.observe(event.duration)
            if event.fail_mode is not None:
                self.fail_mode.labels(event.fail_mode).inc()
            for policy in event.shadowed:
                self.shadowed.labels(policy).inc()
        elif kind == REFUND:
            self.refunds.inc()
        elif kind == BACKEND_DOWN:
            self.backend_up.set(0)
        elif kind == BACKEND_UP:
            self.backend_up.set(1)
