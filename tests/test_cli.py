"""The smsguard command (cli.py), run as a subprocess against a real redis-server that a guard
in this process fills; and the same commands under ``flask smsguard``."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, at, unique_prefix
from flask import Flask
from servers import RedisServer, free_port

from smsguard import Guard
from smsguard.adapters.flask import SMSGuard

VICTIM, OTHER = "+8613800138000", "+8613900139000"
IP = "203.0.113.7"


def settings(url: str, prefix: str) -> dict[str, str]:
    return {
        "SMSGUARD_STORAGE_URI": url,
        "SMSGUARD_KEY_PREFIX": prefix,
        "SMSGUARD_SECRET": "cli-test-secret",
        "SMSGUARD_DEFAULT_REGION": "CN",
        "SMSGUARD_SAME_CONTENT_WINDOW": "0",
        "SMSGUARD_PHONE_RATE": "",
        "SMSGUARD_SHARED_BLACKLIST": "true",
    }


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SMSGUARD_")}


def smsguard(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "smsguard", *args],
        env={**clean_environment(), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.redis_server
def test_the_command_reads_and_steers_what_another_process_counted(
    redis_server: RedisServer, clock: Clock
) -> None:
    settled = settings(redis_server.url, unique_prefix())
    env = {**settled, **at(clock)}  # the command on the test's clock, as the app
    guard = Guard.from_settings(settled)  # the app, in this process
    guard.clock = clock
    for _ in range(3):
        assert guard.check(VICTIM, ip=IP).allowed

    code, out, _ = smsguard("--json", "status", "138 0013 8000", env=env)
    assert code == 0
    status = json.loads(out)
    assert status["phone_hash"] == guard.identify(VICTIM)[1]
    assert status["counters"] == [
        {"policy": "daily_cap", "used": 3, "limit": 10, "remaining": 7, "frees_in": None, "unit": ""}
    ]
    code, out, _ = smsguard("status", VICTIM, "--ip", IP, env=env)
    assert code == 0
    assert out.splitlines()[1].split() == ["daily_cap", "3", "10", "7", "-"], "a human table by default"
    assert out.splitlines()[2].split()[:2] == ["ip_throttle", "3"]

    assert smsguard("reset", VICTIM, env=env)[0] == 0
    assert guard.status(VICTIM)[0].used == 0, "the app sees the reset"

    assert smsguard("suspend", env=env)[:2] == (0, "suspended: sending is off\n")
    assert guard.check(OTHER, ip=IP).reason == "suspended"
    assert smsguard("resume", env=env)[0] == 0
    assert guard.check(OTHER, ip=IP).allowed

    assert smsguard("list", "add", "blacklist", OTHER, env=env)[0] == 0
    assert guard.check(OTHER, ip=IP).reason == "blacklisted"
    assert smsguard("list", "remove", "blacklist", OTHER, env=env)[0] == 0
    assert guard.check(OTHER, ip=IP).allowed

    code, out, _ = smsguard("--json", "check", env=settled)  # on the real clock: it compares it with Redis's
    assert code == 0
    assert {c["check"]: c["ok"] for c in json.loads(out)} == {
        "backend answers": True,
        "script loaded": True,
        "maxmemory-policy": True,
        "clock": True,
        "app's settings": True,
    }


@pytest.mark.redis_server
def test_check_fails_on_an_evicting_redis(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, None, "--maxmemory-policy", "allkeys-lru").start()
    try:
        code, out, _ = smsguard("check", env=settings(server.url, "c:"))
    finally:
        server.stop()
    assert code == 1
    assert "BAD maxmemory-policy: allkeys-lru" in out


@pytest.mark.redis_server
@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("status", "12"), {}, "'12' is not a valid number"),
        (("suspend",), {"SMSGUARD_SUSPENDABLE": "false"}, "no Suspend policy"),
        (("list", "add", "whitelist", VICTIM), {}, "no Whitelist/Blacklist named 'whitelist'"),
        (("status", VICTIM), {"SMSGUARD_DAILY_CAP": "ten"}, "SMSGUARD_DAILY_CAP='ten' is not an integer"),
        (("suspend",), {"SMSGUARD_STORAGE_URL": "redis://"}, "did you mean SMSGUARD_STORAGE_URI?"),
        (("bogus",), {}, "No such command"),
    ],
)
def test_bad_commands_say_why_with_exit_code_2(
    redis_server: RedisServer, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = smsguard(*args, env={**settings(redis_server.url, unique_prefix()), **env})
    assert result[0] == 2
    assert message in result[2]


def test_an_unreachable_backend_is_exit_code_1() -> None:
    env = {**settings(f"redis://127.0.0.1:{free_port()}/0", "u:"), "SMSGUARD_FAIL_MODE": "closed"}
    code, _, err = smsguard("suspend", env=env)
    assert code == 1
    assert "the backend cannot be reached" in err
    code, out, err = smsguard("check", env=env)
    assert (code, out.split(":")[0]) == (1, "BAD backend answers")
    assert out.startswith("BAD backend answers: ConnectionError: "), "said once, as what it is"
    assert "Traceback" not in err, "a refused connection is an outage, not the client failing"


@pytest.mark.redis_server
def test_settings_from_a_toml_file(tmp_path: Path, redis_server: RedisServer, clock: Clock) -> None:
    prefix = unique_prefix()
    config = tmp_path / "smsguard.toml"
    config.write_text(
        f'[smsguard]\nstorage_uri = "{redis_server.url}"\nkey_prefix = "{prefix}"\n'
        'secret = "cli-test-secret"\ndefault_region = "CN"\ndaily_cap = 4\nphone_rate = ""\n'
        "same_content_window = 0\nshared_blacklist = true\n"
    )
    guard = Guard.from_settings({**settings(redis_server.url, prefix), "SMSGUARD_DAILY_CAP": "4"})
    guard.clock = clock
    guard.check(VICTIM, ip=IP)
    code, out, _ = smsguard("--config", str(config), "--json", "status", VICTIM, env=at(clock))
    assert code == 0
    assert json.loads(out)["counters"][0] == {
        "policy": "daily_cap",
        "used": 1,
        "limit": 4,
        "remaining": 3,
        "frees_in": None,
        "unit": "",
    }
    bad = tmp_path / "bad.toml"
    bad.write_text("daily_cap = [")
    assert smsguard("--config", str(bad), "status", VICTIM)[0] == 2


@pytest.mark.redis_server
def test_stats_and_report_read_what_the_app_recorded(redis_server: RedisServer, clock: Clock) -> None:
    env = {
        **settings(redis_server.url, unique_prefix()),
        "SMSGUARD_DAILY_CAP": "2",
        "SMSGUARD_SHADOW": "ip_throttle",
    }
    env["SMSGUARD_IP_RATE"] = "1/hour"
    guard = Guard.from_settings(env)  # the app, in this process
    guard.clock = clock
    env.update(at(clock))  # and the command, on the test's clock
    first = guard.check(VICTIM, ip=IP)
    assert guard.check(VICTIM, ip=IP).shadowed == ("ip_throttle",)
    assert guard.check(VICTIM, ip=IP).reason == "daily_cap"
    guard.add_number("blacklist", OTHER)
    assert guard.check(OTHER, ip=IP).reason == "blacklisted"
    assert guard.check("+33612345678", ip="198.51.100.1").allowed
    guard.refund(first)
    day = guard.stats().day.isoformat()

    code, out, _ = smsguard("--json", "stats", "--day", day, env=env)
    assert code == 0
    found = json.loads(out)
    assert (found["attempts"], found["allowed"], found["refunded"]) == (5, 3, 1)
    assert found["denied"] == {"blacklisted": 1, "daily_cap": 1}
    assert found["countries"] == {"CN": 4, "FR": 1}
    assert found["shadowed"] == {"ip_throttle": 2}, "the second and the third"
    code, out, _ = smsguard("stats", "--day", day, "--by", "country", env=env)
    assert code == 0
    assert out.splitlines()[1] == "attempts 5  allowed 3  denied 2  refunded 1  verified 0"
    assert out.splitlines()[3].split() == ["CN", "4"]
    assert out.splitlines()[-1] == "shadow policies would have denied: ip_throttle 2"
    code, out, _ = smsguard("stats", "--day", day, "--by", "hour", env=env)
    assert code == 0
    assert out.splitlines()[3].split()[1:] == ["5", "3", "2", "1"]

    code, out, _ = smsguard("--json", "report", "--day", day, env=env)
    assert code == 0, "five attempts flag nothing"
    report = json.loads(out)
    assert report["totals"]["attempts"] == 5
    assert report["previous"]["attempts"] == 0
    assert report["top_reasons"] == {"blacklisted": 1, "daily_cap": 1}
    assert report["anomalies"] == []
    for n in range(25):  # a flood of fresh numbers from one network: what pumping looks like
        guard.check(f"+8613900139{n:03d}", ip="198.51.100.2")
    guard.flush()  # the app writes its statistics with its next write, within a second: now
    code, out, _ = smsguard("report", "--day", day, env=env)
    assert code == 3, "anomalies: exit code 3"
    assert "anomalies: \n" in out
    assert smsguard("stats", "--day", "yesterday", env=env)[0] == 2


@pytest.mark.redis_server
def test_flask_smsguard_shares_the_commands(redis_server: RedisServer) -> None:
    app = Flask(__name__)
    app.config.update(settings(redis_server.url, unique_prefix()), SMSGUARD_DAILY_CAP=2)
    ext = SMSGuard(app)
    with app.app_context():
        ext.guard.check(VICTIM, content="x", ip=IP)
    runner = app.test_cli_runner()
    result: Any = runner.invoke(args=["smsguard", "--json", "status", VICTIM])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counters"][0]["used"] == 1
    assert runner.invoke(args=["smsguard", "suspend"]).exit_code == 0
    with app.app_context():
        assert ext.guard.check(OTHER, content="x", ip=IP).reason == "suspended"


def test_flask_smsguard_refuses_an_in_process_backend() -> None:
    """``flask smsguard`` runs in a process of its own: a memory:// guard there is not the app's."""
    app = Flask(__name__)
    app.config.update(SMSGUARD_DEFAULT_REGION="CN")
    SMSGuard(app)
    result: Any = app.test_cli_runner().invoke(args=["smsguard", "suspend"])
    assert result.exit_code == 2
    assert "in-process backend" in result.output
    assert "set the app's SMSGUARD_STORAGE_URI" in result.output
    assert "--guard" not in result.output, "flask smsguard takes no --guard: not the advice to give"
    shown: Any = app.test_cli_runner().invoke(args=["smsguard", "--help"])
    assert shown.exit_code == 0
    assert "Exit codes" in shown.output
    assert "--config" not in shown.output, "its help tells of no option it lacks"
    assert "--guard" not in shown.output


def test_a_guard_named_by_guard_on_memory_is_refused_with_what_to_change(tmp_path: Path) -> None:
    """The user named the app's guard with --guard, as the refusal of a memory:// guard built from
    settings advises: the refusal must not advise it again."""
    (tmp_path / "memapp.py").write_text("from smsguard import Guard\nguard = Guard(default_region='CN')\n")
    code, out, err = smsguard("--guard", "memapp:guard", "status", VICTIM, cwd=tmp_path)
    assert (code, out) == (2, "")
    assert "in-process backend" in err
    assert "build the app's guard on its Redis" in err
    assert "name the app's guard with --guard" not in err


# -- no false "done" (issue 19, item 11) -------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("suspend",),
        ("resume",),
        ("reset", VICTIM),
        ("list", "add", "blacklist", VICTIM),
        ("status", VICTIM),
        ("stats",),
        ("report",),
    ],
)
def test_without_a_shared_backend_the_command_refuses(args: tuple[str, ...]) -> None:
    """No storage URL: the command's guard would count in its own process, which the app never
    reads (and the app's in-process counters are out of its reach)."""
    env = {"SMSGUARD_SECRET": "s", "SMSGUARD_SHARED_BLACKLIST": "true"}
    code, out, err = smsguard(*args, env=env)
    assert (code, out) == (2, "")
    assert "in-process backend" in err
    assert "SMSGUARD_STORAGE_URI" in err


def app_on(url: str, prefix: str, **extra: str) -> tuple[dict[str, str], Guard]:
    """The app's settings and its guard (in this process), which has decided once: it has left
    its fingerprint in Redis."""
    env = {**settings(url, prefix), **extra}
    guard = Guard.from_settings(env)
    assert guard.check(VICTIM, ip=IP).allowed
    return env, guard


@pytest.mark.redis_server
def test_settings_that_are_not_the_apps_are_refused_naming_what_differs(redis_server: RedisServer) -> None:
    env, app = app_on(redis_server.url, unique_prefix(), SMSGUARD_SHARED_BLACKLIST="false")

    code, _, err = smsguard("status", VICTIM, env={**env, "SMSGUARD_SECRET": "another"})
    assert code == 2, "a wrong secret would show zeros for a number the app counted"
    assert "not the app's" in err
    assert "secret" in err

    code, _, err = smsguard(
        "list", "add", "blacklist", OTHER, env={**env, "SMSGUARD_SHARED_BLACKLIST": "true"}
    )
    assert code == 2, "the app keeps no shared blacklist: adding to it would change nothing"
    assert "blacklist" in err
    assert app.check(OTHER, ip=IP).allowed

    code, _, err = smsguard("stats", "--by", "hour", env={**env, "SMSGUARD_TIMEZONE": "Asia/Shanghai"})
    assert code == 2, "the app's statistics are in UTC hours: they would be shown as Shanghai's"
    assert "time zone: the app's 'UTC', here 'Asia/Shanghai'" in err

    code, _, err = smsguard("suspend", env={**env, "SMSGUARD_DAILY_CAP": "5"})
    assert code == 2
    assert "daily_cap: limit 10 in the app, 5 here" in err
    assert app.check(OTHER, ip=IP).allowed, "nothing was written"

    code, out, _ = smsguard("check", env={**env, "SMSGUARD_DEFAULT_REGION": "US"})
    assert code == 1
    assert "BAD app's settings: default region: the app's 'CN', here 'US'" in out

    code, out, err = smsguard("status", VICTIM, env=env)
    assert (code, err) == (0, ""), "the app's own settings pass"
    assert out.splitlines()[1].split()[:2] == ["daily_cap", "1"]


@pytest.mark.redis_server
def test_the_command_says_when_the_app_left_no_fingerprint(redis_server: RedisServer) -> None:
    env = settings(redis_server.url, unique_prefix())
    code, _, err = smsguard("status", VICTIM, env=env)
    assert code == 0
    assert "no fingerprint of the app's settings" in err
    code, out, _ = smsguard("check", env=env)
    assert "ok  app's settings: no fingerprint of the app's settings" in out


APP = """
from smsguard import DailyCap, Guard, RedisBackend, SpendCap, Suspend

guard = Guard(
    [Suspend(), DailyCap(5, tz="Asia/Shanghai"), SpendCap(100.0, tz="Asia/Shanghai")],
    backend=RedisBackend.from_url({url!r}, prefix={prefix!r}),
    secret="built-in-code",
    default_region="CN",
)
"""


@pytest.mark.redis_server
def test_a_guard_built_in_code_by_module_and_name(tmp_path: Path, redis_server: RedisServer) -> None:
    from smsguard.pumping import UNITS, SpendCap

    (tmp_path / "smsapp.py").write_text(APP.format(url=redis_server.url, prefix=unique_prefix()))
    spec = importlib.util.spec_from_file_location("smsapp", tmp_path / "smsapp.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app: Guard = module.guard  # the app, in this process
    assert app.check(VICTIM).allowed

    code, out, err = smsguard("--guard", "smsapp:guard", "--json", "status", VICTIM, cwd=tmp_path)
    assert (code, err) == (0, "")
    price = SpendCap(1.0).price("CN") / UNITS
    assert json.loads(out)["counters"] == [
        {"policy": "daily_cap", "used": 1, "limit": 5, "remaining": 4, "frees_in": None, "unit": ""},
        {
            "policy": "spend",
            "used": price,
            "limit": 100.0,
            "remaining": 100.0 - price,
            "frees_in": None,
            "unit": "$",
        },
    ]
    code, out, _ = smsguard("--guard", "smsapp:guard", "status", VICTIM, cwd=tmp_path)
    assert code == 0
    assert out.splitlines()[2].split() == ["spend", f"${price:.2f}", "$100.00", f"${100 - price:.2f}", "-"]
    assert smsguard("--guard", "smsapp:guard", "suspend", cwd=tmp_path)[0] == 0
    assert app.check(OTHER).reason == "suspended"

    code, _, err = smsguard("--guard", "smsapp:nothing", "status", VICTIM, cwd=tmp_path)
    assert code == 2
    assert "--guard = 'smsapp:nothing': smsapp has no 'nothing'" in err
    code, _, err = smsguard("--guard", "smsapp", "status", VICTIM, cwd=tmp_path)
    assert code == 2
    assert "module:attribute" in err


@pytest.mark.redis_server
def test_json_before_or_after_the_command(redis_server: RedisServer) -> None:
    env, _ = app_on(redis_server.url, unique_prefix())
    for args in (("--json", "stats"), ("stats", "--json")):
        code, out, err = smsguard(*args, env=env)
        assert code == 0, err
        assert json.loads(out)["attempts"] == 1
    code, out, _ = smsguard("status", VICTIM, "--json", env=env)
    assert code == 0
    assert json.loads(out)["counters"][0]["used"] == 1


def test_help_is_plain_text() -> None:
    code, out, _ = smsguard("--help")
    assert code == 0
    assert "``" not in out
    assert "python -m smsguard" in out


@pytest.mark.redis_server
def test_the_report_says_when_no_code_was_sent(redis_server: RedisServer, clock: Clock) -> None:
    env = settings(redis_server.url, unique_prefix())
    app = Guard.from_settings(env)
    app.clock = clock  # one hour for all of it
    env.update(at(clock))  # and the command, on the test's clock
    app.verified(OTHER)  # a success rate to read
    app.add_number("blacklist", VICTIM)
    for _ in range(25):  # a surge, every attempt refused: no code sent this hour
        assert app.check(VICTIM, ip=IP).reason == "blacklisted"
    day = app.stats().day.isoformat()
    code, out, _ = smsguard("report", "--day", day, env=env)
    assert code == 3
    surge = next(line for line in out.splitlines() if ":00 25 attempts, from none the day before" in line)
    assert "success -" not in surge
    assert surge.endswith("no code sent (none the day before either)")


# -- storage URLs (issue 19, item 13) -----------------------------------------------------------


@pytest.mark.redis_server
def test_bad_storage_urls_are_config_errors_without_a_traceback(redis_server: RedisServer) -> None:
    base = f"redis://:hunter2@127.0.0.1:{redis_server.port}"
    for url, message in [
        (f"{base}/0?timeout=abc", "timeout=abc"),
        (f"{base}/abc", "'abc' is not a database number"),
        (f"{base}/99", "has no such database"),
    ]:
        code, _, err = smsguard("status", VICTIM, env={"SMSGUARD_STORAGE_URI": url, "SMSGUARD_SECRET": "s"})
        assert code == 2, err
        assert message in err
        assert "Traceback" not in err
        assert "hunter2" not in err


def test_a_redis_url_without_the_redis_extra() -> None:
    without_redis = "import sys; sys.modules['redis'] = None; from smsguard.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", without_redis, "status", VICTIM],
        env={
            **clean_environment(),
            "SMSGUARD_STORAGE_URI": "redis://localhost:6379/0",
            "SMSGUARD_SECRET": "s",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "pip install 'smsguard[redis]'" in done.stderr
    assert "Traceback" not in done.stderr
