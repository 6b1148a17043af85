"""Requests per second and latency of the example endpoint: bare, with smsguard, and with
the peer (slowapi for Starlette and FastAPI, Flask-Limiter for Flask, django-ratelimit for
Django), on memory and on Redis, in one run.

Each variant runs in its own server process (uvicorn, one worker, for the ASGI ones; gunicorn,
one sync worker, for Flask and Django)
on a free loopback port, loaded by wrk (apt-get install wrk) with random numbers from a pool
of 50,000, so that both admissions and denials happen. Redis variants use a redis-server the
script starts itself. Each row is the median of --rounds runs, the rows taking turns.

Then, on Redis, a bombing flood (issue 23): one victim number, every request from one of 1,000
addresses in X-Forwarded-For, which each app believes from its loopback proxy (uvicorn's
--forwarded-allow-ips default, 127.0.0.1; werkzeug's ProxyFix under gunicorn, in every
variant, the bare one included). After its first requests every attempt is a denial; the row's
overhead is its time per request over the bare endpoint's (1/rate, wrk holding 16 requests in
flight). The flood's bare and smsguard rows run again on smsguard as it was at ``--baseline``
(a git revision; by default the commit issue 23 was filed against), its ``src`` taken by git
archive and put first on the servers' PYTHONPATH, the rows taking turns with these: the same
harness, libraries and machine, in the same minutes. ``--baseline ''`` skips them.

    python benchmarks/web.py [--frameworks starlette,flask] [--flood-only] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from servers import RedisServer, free_port, stop_process, wait_listening  # noqa: E402

WRK_SCRIPT = """
math.randomseed(42)
request = function()
  return wrk.format("POST", string.format("/sms/send?phone=138%08d", math.random(0, 49999)))
end
"""

# The bombing flood: one victim, from 1,000 addresses (LuaJIT: no integer division operator).
FLOOD_SCRIPT = """
math.randomseed(42)
request = function()
  local a = math.random(0, 999)
  local ip = string.format("10.1.%d.%d", math.floor(a / 256), a % 256)
  return wrk.format("POST", "/sms/send?phone=13800138000", {["X-Forwarded-For"] = ip})
end
"""


# The code issue 23 ("fast where it counts") was filed against: its flood rows' baseline.
ISSUE_23_FILED = "a8e2b09"


def server_command(framework: str, port: int) -> list[str]:
    if framework in ("starlette", "fastapi"):
        return [sys.executable, "-m", "uvicorn", f"web_apps:{framework}", "--app-dir", str(HERE),
                "--port", str(port), "--log-level", "error", "--no-access-log"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir", str(HERE),
            "--log-level", "error", f"web_apps:{framework}"]  # fmt: skip


def run(
    framework: str, variant: str, storage: str, seconds: int, script: Path, src: Path | None = None
) -> dict[str, float]:
    """wrk's figures for one variant's server; ``src``, if given, first on its PYTHONPATH (an
    older smsguard)."""
    port = free_port()
    env = {**os.environ, "BENCH_VARIANT": variant, "BENCH_STORAGE": storage, "BENCH_FRAMEWORK": framework}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    # A file, not a pipe: a pipe could fill and stall the server.
    log = script.with_suffix(f".{framework}.{variant}.log").open("w")
    server = subprocess.Popen(server_command(framework, port), env=env, stdout=log, stderr=log)
    try:
        try:
            wait_listening(port, server)
        except RuntimeError:
            log.flush()
            sys.stderr.write(Path(log.name).read_text())
            raise
        url = f"http://127.0.0.1:{port}"
        wrk = ["wrk", "-t1", "-c16", "--latency", "-s", str(script), url]
        subprocess.run([*wrk[:1], "-d2s", *wrk[1:]], capture_output=True, check=True)  # warm up
        out = subprocess.run(
            [*wrk[:1], f"-d{seconds}s", *wrk[1:]], capture_output=True, text=True, check=True
        ).stdout
    finally:
        stop_process(server)
        log.close()
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "non2xx": float(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0.0,
        "requests": float(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
    }


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]+", "", text)  # type: ignore[union-attr]
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frameworks", default="starlette,flask,fastapi,django")
    parser.add_argument("--flood-only", action="store_true", help="Only the bombing flood's rows.")
    parser.add_argument(
        "--baseline", metavar="REV", default=ISSUE_23_FILED, help="The flood on smsguard as of REV too."
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("benchmarks/web.py needs wrk: apt-get install wrk")
    peers = {
        "starlette": "slowapi",
        "flask": "Flask-Limiter",
        "fastapi": "slowapi",
        "django": "django-ratelimit",
    }
    with tempfile.TemporaryDirectory() as tmp:
        script, flood = Path(tmp) / "send.lua", Path(tmp) / "flood.lua"
        script.write_text(WRK_SCRIPT)
        flood.write_text(FLOOD_SCRIPT)
        src = _checkout(args.baseline, Path(tmp) / "baseline") if args.baseline else None
        redis = RedisServer(Path(tmp)).start()
        try:
            for framework in args.frameworks.split(","):
                peer = peers[framework]
                if not args.flood_only:
                    rows = [Row("bare", "bare", "memory://", script)]
                    for storage, label in [("memory://", "memory"), (redis.url, "redis")]:
                        for variant, name in [("smsguard", "smsguard"), ("peer", peer)]:
                            rows.append(Row(f"{name} ({label})", variant, storage, script))
                    print(f"\n{framework}: POST /sms/send, wrk -t1 -c16, {args.seconds}s a run, "
                          f"median of {args.rounds} interleaved rounds")  # fmt: skip
                    _table(rows, _rounds(rows, framework, args, redis))
                rows = [Row("bare", "bare", "memory://", flood)]  # (no storage: no Redis restarted)
                rows += [Row(f"{name} (redis)", variant, redis.url, flood) for variant, name in
                         [("smsguard", "smsguard"), ("peer", peer)]]  # fmt: skip
                at = f" @{args.baseline}"
                if src:
                    rows += [Row(f"{row.name}{at}", row.variant, row.storage, flood, src) for row in rows[:2]]
                print(f"\n{framework}, bombing flood on Redis: one victim, 1,000 addresses, wrk -t1 -c16, "
                      f"{args.seconds}s a run, median of {args.rounds} interleaved rounds")  # fmt: skip
                runs = _rounds(rows, framework, args, redis)
                _table(rows[:3], runs)
                if src:
                    _table(rows[3:], runs, against=f"bare{at}", head=False)
                    _halved(runs, at)
        finally:
            redis.stop()


class Row(NamedTuple):
    name: str
    variant: str
    storage: str
    script: Path
    src: Path | None = None


def _rounds(
    rows: list[Row], framework: str, args: argparse.Namespace, redis: RedisServer
) -> dict[str, list[dict[str, float]]]:
    """Every row's runs. Rounds interleave the rows, so that a slow spell of this shared
    machine lands on all of them rather than on one."""
    runs: dict[str, list[dict[str, float]]] = {row.name: [] for row in rows}
    for _ in range(args.rounds):
        for row in rows:
            if row.storage != "memory://":
                redis.stop()
                redis.start()  # an empty Redis for every run
            runs[row.name].append(run(framework, row.variant, row.storage, args.seconds, row.script, row.src))
    return runs


def _table(
    rows: list[Row], runs: dict[str, list[dict[str, float]]], against: str = "bare", head: bool = True
) -> None:
    """The rows' medians; "vs bare" the cost per request over ``against``, as a share and in µs."""
    if head:
        heads = zip(
            ["req/s", "p50 ms", "p99 ms", "non-2xx", "vs bare", "µs/req over bare"],
            [9] * 5 + [18],
            strict=True,
        )
        print(f"{'':28}" + "".join(f"{h:>{w}}" for h, w in heads))
    bare = _median(runs[against])
    for row in rows:
        r = _median(runs[row.name])
        share = r["non2xx"] / r["requests"] if r["requests"] else 0.0
        overhead = bare["rps"] / r["rps"] - 1
        print(f"{row.name:28}{r['rps']:>9,.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{share:>9.0%}{overhead:>+9.0%}"
              f"{_over(r, bare):>+18.0f}")  # fmt: skip


def _over(r: dict[str, float], bare: dict[str, float]) -> float:
    """Microseconds per request over the bare endpoint (one worker, so 1/rate is its time)."""
    return 1e6 / r["rps"] - 1e6 / bare["rps"]


def _halved(runs: dict[str, list[dict[str, float]]], at: str) -> None:
    """smsguard's flood overhead now against the baseline's, each over its own bare endpoint,
    round by round (each round's rows ran within a minute of each other)."""
    now = [_over(r, b) for r, b in zip(runs["smsguard (redis)"], runs["bare"], strict=True)]
    then = [_over(r, b) for r, b in zip(runs[f"smsguard (redis){at}"], runs[f"bare{at}"], strict=True)]
    ratios = sorted(n / t for n, t in zip(now, then, strict=True))
    print("  smsguard's overhead, µs/request over its bare endpoint, median [min-max] of the rounds:")
    print(f"    now {statistics.median(now):,.0f} [{min(now):,.0f}-{max(now):,.0f}], "
          f"{at.strip()} {statistics.median(then):,.0f} [{min(then):,.0f}-{max(then):,.0f}]")  # fmt: skip
    print(f"    now ÷ then, round by round: {statistics.median(ratios):.2f} "
          f"[{ratios[0]:.2f}-{ratios[-1]:.2f}] (target ≤ 0.5; below 0, a denial costs less than "
          "the endpoint)")  # fmt: skip


def _checkout(rev: str, into: Path) -> Path | None:
    """``rev``'s ``src`` directory, extracted under ``into``; None (said) where git cannot."""
    into.mkdir()
    try:
        archive = subprocess.run(
            ["git", "-C", str(HERE.parent), "archive", rev, "src"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"web.py: no baseline rows: git archive {rev} failed ({exc})", file=sys.stderr)
        return None
    return into / "src"


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


if __name__ == "__main__":
    main()
