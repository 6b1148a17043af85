"""Requests per second and latency of the example endpoint: bare, with smsguard, and with
the peer (slowapi for Starlette and FastAPI, Flask-Limiter for Flask, django-ratelimit for
Django), on memory and on Redis, in one run.

Each variant runs in its own server process (uvicorn, one worker, for the ASGI ones; gunicorn,
one sync worker, for Flask and Django)
on a free loopback port, loaded by wrk (apt-get install wrk) with random numbers from a pool
of 50,000, so that both admissions and denials happen. Redis variants use a redis-server the
script starts itself. Each row is the median of --rounds runs, the rows taking turns.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from servers import RedisServer, free_port, stop_process, wait_listening  # noqa: E402

WRK_SCRIPT = """
math.randomseed(42)
request = function()
  return wrk.format("POST", string.format("/sms/send?phone=138%08d", math.random(0, 49999)))
end
"""


def server_command(framework: str, port: int) -> list[str]:
    if framework in ("starlette", "fastapi"):
        return [sys.executable, "-m", "uvicorn", f"web_apps:{framework}", "--app-dir", str(HERE),
                "--port", str(port), "--log-level", "error", "--no-access-log"]  # fmt: skip
    return [sys.executable, "-m", "gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir", str(HERE),
            "--log-level", "error", f"web_apps:{framework}"]  # fmt: skip


def run(framework: str, variant: str, storage: str, seconds: int, script: Path) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "BENCH_VARIANT": variant, "BENCH_STORAGE": storage, "BENCH_FRAMEWORK": framework}
    log = script.with_suffix(f".{framework}.{variant}.log").open(
        "w"
    )  # a pipe could fill and stall the server
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
        script = Path(tmp) / "send.lua"
        script.write_text(WRK_SCRIPT)
        redis = RedisServer(Path(tmp)).start()
        try:
            for framework in args.frameworks.split(","):
                print(f"\n{framework}: POST /sms/send, wrk -t1 -c16, {args.seconds}s a run, "
                      f"median of {args.rounds} interleaved rounds")  # fmt: skip
                print(f"{'':28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'vs bare':>9}")
                rows = [("bare", "bare", "memory://")]
                for storage, label in [("memory://", "memory"), (redis.url, "redis")]:
                    for variant, name in [("smsguard", "smsguard"), ("peer", peers[framework])]:
                        rows.append((f"{name} ({label})", variant, storage))
                # Rounds interleave the rows, so that a slow spell of this shared machine
                # lands on all of them rather than on one.
                runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in rows}
                for _ in range(args.rounds):
                    for name, variant, storage in rows:
                        if storage != "memory://":
                            redis.stop()
                            redis.start()  # an empty Redis for every run
                        runs[name].append(run(framework, variant, storage, args.seconds, script))
                bare = _median(runs["bare"])
                for name, _, _ in rows:
                    _row(name, _median(runs[name]), bare)
        finally:
            redis.stop()


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def _row(name: str, r: dict[str, float], bare: dict[str, float]) -> None:
    share = r["non2xx"] / r["requests"] if r["requests"] else 0.0
    overhead = bare["rps"] / r["rps"] - 1
    print(f"{name:28}{r['rps']:>9,.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{share:>9.0%}{overhead:>+9.0%}")


if __name__ == "__main__":
    main()
