"""CPU instructions per call of a Python snippet, counted by valgrind's callgrind.

Instruction counts repeat to a fraction of a percent whatever else the machine runs, where
timings move with its load. Start-up (the interpreter, imports, building the data) costs far
more than the calls measured, so each case runs in two processes, ``n1`` and ``n2`` calls
after the same set-up, and the cost of one call is ``(I(n2) - I(n1)) / (n2 - n1)``: start-up
cancels, and so do the one-time costs of the first calls (a region's metadata, a lazy import),
which the ``n1`` calls of both processes pay alike.

Without valgrind the same cases are timed instead (nanoseconds per call, the same two-process
difference, cases interleaved round by round); ``Cost.unit`` says which.

    from instructions import compare
    costs = compare(
        {"parse": ("import phonenumbers as p; xs = [f'+86138{i:08d}' for i in range(N)]",
                   "p.parse(xs[i], None)")},
        n1=200, n2=1200, runs=3,
    )
    costs["parse"].median, costs["parse"].unit   # 41_520.0, "instructions"

The set-up runs with ``N`` (= ``n2``, in both processes, so that data built from it costs the
same in both) and ``i`` counts the calls from 0; make ``stmt`` use ``i`` to reach fresh data.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Run in the child: set-up once, then the statement n times inside a function (fast locals).
_CHILD = """
import sys, time
setup, stmt, n, nmax = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ns = {"N": nmax, "__name__": "__bench__"}
exec(setup, ns)
exec("def _loop(n):\\n    for i in range(n):\\n        " + stmt.replace("\\n", "\\n        "), ns)
t = time.perf_counter_ns()
ns["_loop"](n)
print(time.perf_counter_ns() - t)
"""

_IREFS = re.compile(r"(?:Collected :|I\s+refs:)\s*([\d,]+)")


def available() -> bool:
    """Whether valgrind is on PATH (instructions are counted, not timed)."""
    return shutil.which("valgrind") is not None


@dataclass
class Cost:
    """The cost of one call of a case, over ``runs`` runs."""

    unit: str
    """``"instructions"`` (callgrind) or ``"ns"`` (timed, valgrind absent)."""
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median over the runs."""
        return (max(self.values) - min(self.values)) / self.median if self.values else 0.0

    def __str__(self) -> str:
        scale, suffix = (1000, "k") if self.unit == "instructions" else (1000, " µs")
        return f"{self.median / scale:,.1f}{suffix} (±{self.spread / 2:.1%})"


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    # A fixed hash seed: dict and set layouts, hence their instruction counts, repeat run to run.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    # The benchmarks' own modules (core.py...) importable from the set-up.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def _instructions(setup: str, stmt: str, n: int, nmax: int, python: str, env: dict[str, str]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={Path(tmp) / 'out'}",
                python,
                "-c",
                _CHILD,
                setup,
                stmt,
                str(n),
                str(nmax),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    found = _IREFS.findall(proc.stderr)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found[-1].replace(",", ""))


def _nanoseconds(setup: str, stmt: str, n: int, nmax: int, python: str, env: dict[str, str]) -> int:
    proc = subprocess.run(
        [python, "-c", _CHILD, setup, stmt, str(n), str(nmax)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"timed run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(proc.stdout.split()[-1])


def per_call(
    setup: str,
    stmt: str,
    *,
    n1: int = 200,
    n2: int = 1200,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    count: bool | None = None,
) -> tuple[float, str]:
    """(cost of one call of ``stmt``, unit): instructions by callgrind when valgrind is present
    (or ``count=True``), else nanoseconds; both from the difference of an ``n1`` and an ``n2``
    process (timed ones measure the loop alone, so the difference takes out the warm-up)."""
    if n2 <= n1:
        raise ValueError("n2 must exceed n1")
    counting = available() if count is None else count
    measure = _instructions if counting else _nanoseconds
    full = _env(env)
    low = measure(setup, stmt, n1, n2, python, full)
    high = measure(setup, stmt, n2, n2, python, full)
    return (high - low) / (n2 - n1), "instructions" if counting else "ns"


def compare(
    cases: Mapping[str, tuple[str, str]],
    *,
    n1: int = 200,
    n2: int = 1200,
    runs: int = 3,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    count: bool | None = None,
    progress: bool = False,
) -> dict[str, Cost]:
    """``per_call`` of every case (``name -> (setup, stmt)``), ``runs`` times, interleaved
    round by round so that a slow moment of the machine falls on one round, not on one case."""
    costs: dict[str, Cost] = {}
    for run in range(runs):
        for name, (setup, stmt) in cases.items():
            value, unit = per_call(setup, stmt, n1=n1, n2=n2, python=python, env=env, count=count)
            costs.setdefault(name, Cost(unit)).values.append(value)
            if progress:
                print(f"  [{run + 1}/{runs}] {name}: {value:,.0f} {unit}", file=sys.stderr, flush=True)
    return costs


def table(costs: Mapping[str, Cost], *, against: str | None = None, title: str = "") -> str:
    """The costs as a text table: median, spread over the runs, and the ratio to ``against``."""
    unit = next(iter(costs.values())).unit if costs else "instructions"
    head = "instructions/call" if unit == "instructions" else "ns/call (timed: no valgrind)"
    width = max([len(n) for n in costs] + [len(title)]) + 2
    lines = [
        f"{title:{width}}{head:>20}{'spread':>9}"
        + (f"{'× ' + against:>{len(against) + 4}}" if against else "")
    ]
    base = costs[against].median if against else None
    for name, cost in costs.items():
        ratio = f"{cost.median / base:>{len(against or '') + 4}.2f}" if base else ""
        lines.append(f"{name:{width}}{cost.median:>20,.0f}{cost.spread:>9.1%}{ratio}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python benchmarks/instructions.py SETUP STMT [N1 N2]``: one case, printed."""
    args = list(sys.argv[1:] if argv is None else argv)
    setup, stmt = args[0], args[1]
    n1, n2 = (int(args[2]), int(args[3])) if len(args) >= 4 else (200, 1200)
    value, unit = per_call(setup, stmt, n1=n1, n2=n2)
    print(f"{value:,.0f} {unit} per call")


if __name__ == "__main__":
    main()
