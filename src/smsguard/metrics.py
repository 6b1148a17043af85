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
- ``smsguard_refunds_total``;
- ``smsguard_code_checks_total{reason}`` (``ok`` for a right code) and
  ``smsguard_code_lockouts_total``;
- ``smsguard_verifications_total``: codes entered (``Guard.verified``, or a right ``check_code``),
  against ``smsguard_decisions_total{allowed="true"}`` the conversion;
- ``smsguard_surges_total{policy}`` and ``smsguard_conversion_drops_total{policy}``: a
  ``LearnedCap``'s refusals (told once an hour per scope and process), and
  ``smsguard_budget_alarms_total{policy}``: a ``SpendCap``'s alarm.

``contrib/prometheus`` has alert rules on them, ``contrib/grafana`` a dashboard.

Labels are policy names and reason codes, which come from the configuration: never a number,
an address or anything else a client chooses, so the series stay few.

It is a prometheus_client custom collector: an event adds to plain counts under one lock, and
a scrape turns them into metric families. (A ``Counter`` child and a ``Histogram`` take a lock
per value they touch: four per decision, a tenth of the decision's own time on the memory
backend.)
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from smsguard.events import (
    BACKEND_DOWN,
    BACKEND_UP,
    BUDGET_ALARM,
    CODE_CHECK,
    CONVERSION_DROP,
    DECISION,
    LOCKOUT,
    REFUND,
    SURGE,
    VERIFIED,
    Event,
)

# A decision takes microseconds in process and a round trip on Redis; a slow one, a timeout.
BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5)


class PrometheusMetrics:
    """The listener; ``registry`` defaults to prometheus_client's global one."""

    def __init__(self, registry: CollectorRegistry = REGISTRY, namespace: str = "smsguard") -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._decisions: dict[tuple[str | None, str | None, bool | None], int] = {}
        self._buckets = [0] * (len(BUCKETS) + 1)  # the last: above every bound
        self._seconds = 0.0
        self._fail_mode: dict[str, int] = {}
        self._shadowed: dict[str, int] = {}
        self._refunds = 0
        self._checks: dict[str, int] = {}  # code checks by reason ("ok" for a right code)
        self._lockouts = 0
        self._verified = 0
        self._told: dict[tuple[str, str], int] = {}  # (surge, conversion_drop, budget_alarm; policy)
        self.up = True
        registry.register(self)

    def __call__(self, event: Event) -> None:
        kind = event.kind
        if kind == DECISION:
            labels = (event.policy, event.reason, event.allowed)
            duration = event.duration
            with self._lock:
                self._decisions[labels] = self._decisions.get(labels, 0) + 1
                if duration is not None:
                    self._buckets[bisect_left(BUCKETS, duration)] += 1
                    self._seconds += duration
                if event.fail_mode is not None:
                    self._fail_mode[event.fail_mode] = self._fail_mode.get(event.fail_mode, 0) + 1
                for policy in event.shadowed:
                    self._shadowed[policy] = self._shadowed.get(policy, 0) + 1
        elif kind == REFUND:
            with self._lock:
                self._refunds += 1
        elif kind == CODE_CHECK:
            reason = event.reason or "ok"
            with self._lock:
                self._checks[reason] = self._checks.get(reason, 0) + 1
        elif kind == LOCKOUT:
            with self._lock:
                self._lockouts += 1
        elif kind == VERIFIED:
            with self._lock:
                self._verified += 1
        elif kind in TOLD:
            told = (kind, event.policy or "")
            with self._lock:
                self._told[told] = self._told.get(told, 0) + 1
        elif kind == BACKEND_DOWN:
            self.up = False
        elif kind == BACKEND_UP:
            self.up = True

    def collect(self) -> Iterator[Metric]:
        """What a scrape reads (the prometheus_client Collector protocol)."""
        ns = self.namespace
        with self._lock:
            decisions, fail_mode = dict(self._decisions), dict(self._fail_mode)
            shadowed, buckets, seconds, refunds = (
                dict(self._shadowed),
                list(self._buckets),
                self._seconds,
                self._refunds,
            )
            checks, lockouts = dict(self._checks), self._lockouts
            verified, told = self._verified, dict(self._told)
        family = CounterMetricFamily(
            f"{ns}_decisions",
            "Decisions, by the policy and reason that decided.",
            labels=["policy", "reason", "allowed"],
        )
        for (policy, reason, allowed), n in decisions.items():
            family.add_metric([policy or "", reason or "", "true" if allowed else "false"], n)
        yield family
        cumulative, total = [], 0
        for bound, n in zip((*map(repr, BUCKETS), "+Inf"), buckets, strict=True):
            total += n
            cumulative.append((bound, total))
        yield HistogramMetricFamily(
            f"{ns}_decision_seconds",
            "Time the guard took over a decision.",
            buckets=cumulative,
            sum_value=seconds,
        )
        yield GaugeMetricFamily(
            f"{ns}_backend_up",
            "1 while the backend answers, 0 while the fail mode applies.",
            value=int(self.up),
        )
        family = CounterMetricFamily(
            f"{ns}_fail_mode_decisions", "Decisions the fail mode made.", labels=["mode"]
        )
        for mode, n in fail_mode.items():
            family.add_metric([mode], n)
        yield family
        family = CounterMetricFamily(
            f"{ns}_shadow_denials", "Attempts a shadow policy would have denied.", labels=["policy"]
        )
        for policy, n in shadowed.items():
            family.add_metric([policy], n)
        yield family
        yield CounterMetricFamily(f"{ns}_refunds", "Refunds: attempts whose SMS was not sent.", value=refunds)
        family = CounterMetricFamily(
            f"{ns}_code_checks", "Codes checked, by reason (ok for a right one).", labels=["reason"]
        )
        for reason, n in checks.items():
            family.add_metric([reason], n)
        yield family
        yield CounterMetricFamily(
            f"{ns}_code_lockouts", "Codes killed by their last wrong check.", value=lockouts
        )
        yield CounterMetricFamily(
            f"{ns}_verifications",
            "Codes entered: verifications (Guard.verified, or a right check_code).",
            value=verified,
        )
        for kind, (name, help_text) in TOLD.items():
            family = CounterMetricFamily(f"{ns}_{name}", help_text, labels=["policy"])
            for (told_kind, policy), n in told.items():
                if told_kind == kind:
                    family.add_metric([policy], n)
            yield family


TOLD = {
    SURGE: ("surges", "A LearnedCap's ceiling refused a scope over its history (once an hour per scope)."),
    CONVERSION_DROP: (
        "conversion_drops",
        "A LearnedCap refused a scope whose codes go unentered (once an hour per scope).",
    ),
    BUDGET_ALARM: ("budget_alarms", "A SpendCap's day reached its alarm share of the budget."),
}
"""The events counted by policy: kind -> (metric name without the namespace, help)."""
