"""The examples run, and say what the README says they say."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_sends_exactly_the_daily_cap() -> None:
    out = run("demo.py")
    assert "  sent           10\n" in out
    assert "denied: phone_rate" in out
    assert "daily_cap" in out
    assert "QA test phone          -> allowed=True (exempt)" in out
    assert "InvalidPhone: '12345678901234' is not a valid number" in out


def test_custom_policy_example_stops_a_pumping_run() -> None:
    lines = run("custom_policy.py").splitlines()
    assert [line.split()[1] for line in lines] == ["sent"] * 5 + ["denied"] * 3


def test_pumping_simulation_plays_both_guards() -> None:
    """A small run of the campaign: the recommended set stops what today's policies let through,
    serves real users within issue 22's bar (at most 0.1% never served), and holds the bombing
    victim to its daily cap."""
    rows = {}
    for line in run("pumping_attack.py", "--users", "2000").splitlines()[2:]:
        label, cells = line[:36].strip(), line[36:].split()
        rows[label] = cells
    today, recommended = (
        float(rows["pumped codes delivered"][1].strip("(%)")),
        float(rows["pumped codes delivered"][3].strip("(%)")),
    )
    assert today > 80
    assert recommended < today / 10
    assert float(rows["real users never served a code"][3].strip("(%)")) <= 0.1
    assert int(rows["bombing victim, most codes a day"][1]) <= 10


def test_readme_quickstart_runs_when_pasted() -> None:
    """The Quickstart's Python block, run as a script, prints what its comments say."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart") :]
    start = quickstart.index("```python\n") + len("```python\n")
    code = quickstart[start : quickstart.index("\n```\n", start)]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "True +8613800138000"
    assert lines[1] == "False phone_rate 60"
    assert lines[2] == "phone_rate"
    assert lines[-1] == "True"
    for line in lines[:3]:
        assert f"# {line}" in code, "the comment says what the line prints"


def test_readme_names_no_package_index() -> None:
    """smsguard is installed from a checkout: no install line may name a package it is not on."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    for line in readme.splitlines():
        if "pip install" in line:
            assert "pip install ." in line or "pip install '." in line, line


def test_readme_code_run_is_what_the_fastapi_example_answers(capsys: Any, monkeypatch: Any) -> None:
    """The README's run of the code routes, replayed against the FastAPI example (the code it
    printed in place of the README's): each curl gets the answer pasted under it."""
    import importlib
    import re

    from starlette.testclient import TestClient

    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme[readme.index("### Checking the code") : readme.index("## In front of a web endpoint")]
    run = section[section.index("```console\n") : section.index("\n```\n", section.index("```console\n"))]
    lines = run.splitlines()[1:]
    pasted_code = re.search(r"Your code is (\d+)", run)
    assert pasted_code is not None
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for name in [k for k in os.environ if k.startswith("SMSGUARD_") or k == "REDIS_URL"]:
        monkeypatch.delenv(name)
    example = importlib.reload(importlib.import_module("fastapi_app"))
    replayed, code = 0, pasted_code.group(1)
    with TestClient(example.app, client=("203.0.113.9", 1)) as client:
        for i, line in enumerate(lines):
            found = re.match(r"\$ curl -s -XPOST localhost:8000(\S+) .* -d '(.*)'$", line)
            if not found:
                continue
            path, body = found.groups()
            printed = re.findall(r"Your code is (\d+)", capsys.readouterr().out)
            code = printed[-1] if printed else code
            answer = client.post(path, content=body.replace(pasted_code.group(1), code),
                                 headers={"content-type": "application/json"})  # fmt: skip
            assert answer.text == lines[i + 1].replace(pasted_code.group(1), code), line
            replayed += 1
    assert replayed == 5


def _scenarios() -> Any:
    spec = importlib.util.spec_from_file_location("pumping_scenarios", EXAMPLES / "pumping_scenarios.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pumping_scenarios"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "seed", "countries"),
    [
        ("TV ad hour", 3, ["ES", "IT", "PL", "NL"]),
        ("new country", 4, ["GB", "FR", "DE", "SE"]),
        ("carrier outage", 5, ["FR", "DE", "LV", "GB"]),
        ("bombing", 6, ["IT", "ES", "GB", "FR"]),
        ("daytime peak 3x", 7, ["PT", "SE", "DE", "GB"]),
    ],
)
def test_scenarios_that_must_pass_meet_the_bars(name: str, seed: int, countries: list[str]) -> None:
    """A reduced run (150 users a day) of the scenarios ``recommended`` meets issue 22's bars
    in: legitimate surges served, no bombing victim over the daily cap; on seeds and countries
    the defence was not tuned on."""
    module = _scenarios()
    (scenario,) = [s for s in module.scenarios() + module.held_out() if s.name == name]
    row = module.play(scenario, module.GUARDS["recommended"], countries, 150, seed).row()
    assert module.bars(scenario, row), row
    assert row["never"] <= 0.1, row
    assert row["challenged"] <= 1.0, row


def test_scenarios_against_attackers_deliver_a_fraction_of_the_provider_rules() -> None:
    """The attacks: what the provider's rules deliver, ``recommended`` cuts to a fraction, and
    real users stay served (the bars it does not yet meet are in the README's table)."""
    module = _scenarios()
    (scenario,) = [s for s in module.scenarios() if s.name == "complicit operator 5%"]
    rows = {
        guard: module.play(scenario, policies, ["DE", "GB", "FR", "LV"], 150, 11).row()
        for guard, policies in module.GUARDS.items()
    }
    assert rows["provider rules"]["pumped"] > 90
    assert rows["recommended"]["pumped"] < rows["provider rules"]["pumped"] / 4
    assert rows["recommended"]["never"] <= 0.1
