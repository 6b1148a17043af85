"""contrib/: the Prometheus alert rules (checked and unit-tested by promtool) and the Grafana
dashboard, each on the metric names PrometheusMetrics really exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import PROMTOOL
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smsguard import events
from smsguard.events import Event
from smsguard.metrics import PrometheusMetrics

CONTRIB = Path(__file__).parent.parent / "contrib"
RULES = CONTRIB / "prometheus" / "smsguard-rules.yml"
RULE_TESTS = CONTRIB / "prometheus" / "smsguard-rules.test.yml"
DASHBOARD = CONTRIB / "grafana" / "smsguard-dashboard.json"
NAME = re.compile(r"\bsmsguard_[a-z_]+\b")


def promtool(*args: str, cwd: Path) -> str:
    assert PROMTOOL is not None, "promtool is not installed (apt-get install prometheus)"
    found = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stdout + found.stderr
    return found.stdout


def exported() -> set[str]:
    """Every sample name a scrape of PrometheusMetrics holds, once each kind of event has
    happened (a labelled family has no sample before its first)."""
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    for event in (
        Event(events.DECISION, 0.0, True, duration=0.001, fail_mode="open", shadowed=("trial",)),
        Event(events.DECISION, 0.0, False, "spend", "budget"),
        Event(events.REFUND, 0.0, True),
        Event(events.VERIFIED, 0.0),
        Event(events.CODE_CHECK, 0.0, False, reason="wrong_code"),
        Event(events.LOCKOUT, 0.0, False, reason="wrong_code"),
        Event(events.SURGE, 0.0, policy="learned_country"),
        Event(events.CONVERSION_DROP, 0.0, policy="learned_range"),
        Event(events.BUDGET_ALARM, 0.0, policy="spend"),
    ):
        metrics(event)
    text = generate_latest(registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def dashboard_exprs() -> list[str]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_the_rules_and_the_dashboard_read_what_is_exported() -> None:
    names = exported()
    assert {"smsguard_surges_total", "smsguard_verifications_total", "smsguard_backend_up"} <= names
    in_rules = set(NAME.findall(RULES.read_text()))
    in_dashboard = {name for expr in dashboard_exprs() for name in NAME.findall(expr)}
    assert in_rules - names == set(), "the rules read metrics nothing exports"
    assert in_dashboard - names == set(), "the dashboard reads metrics nothing exports"
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert {
        "SmsguardSurge",
        "SmsguardConversionDrop",
        "SmsguardBudgetSpent",
        "SmsguardFailModeDecisions",
    } <= alerts


def test_the_dashboard_is_whole() -> None:
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
    assert board["templating"]["list"][0]["name"] == "datasource"


@pytest.mark.promtool
def test_promtool_checks_the_rules() -> None:
    out = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert "SUCCESS: 8 rules found" in out


@pytest.mark.promtool
def test_promtool_tests_the_rules() -> None:
    """Surge, conversion drop, the guard's own events, budget and fail mode, each firing on the
    series that should fire it and quiet on the others (smsguard-rules.test.yml)."""
    out = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert "SUCCESS" in out


@pytest.mark.promtool
def test_the_dashboards_queries_parse(tmp_path: Path) -> None:
    """Each panel's query, as a recording rule: promtool parses it as Prometheus would."""
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for n, expr in enumerate(dashboard_exprs()):
        rules += [f"      - record: smsguard:panel_{n}", f"        expr: {json.dumps(expr)}"]
    (tmp_path / "dashboard-rules.yml").write_text("\n".join(rules) + "\n")
    out = promtool("check", "rules", "dashboard-rules.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(dashboard_exprs())} rules found" in out
