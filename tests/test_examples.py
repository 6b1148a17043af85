"""The examples run, and say what the README says they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=60
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
