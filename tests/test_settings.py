"""Settings (settings.py): each key read from a Python value or an environment string, and a
ConfigError that names the key when it cannot be."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import django_app
import pytest
from flask import Flask
from servers import RedisServer

from smsguard import Blacklist, ConfigError, DailyCap, Guard, IPThrottle, SameContent, Whitelist
from smsguard.adapters.flask import SMSGuard
from smsguard.adapters.http import Gate, Problem, Reply
from smsguard.settings import KEYS, Settings

VICTIM = "+8613800138000"


@pytest.mark.parametrize(
    ("method", "value", "expected"),
    [
        ("integer", "10", 10),
        ("integer", 10, 10),
        ("number", "2.5", 2.5),
        ("number", 3, 3.0),
        ("boolean", "false", False),
        ("boolean", "Yes", True),
        ("boolean", "0", False),
        ("boolean", True, True),
        ("strings", "+8613800138000, +8613900139000,", ["+8613800138000", "+8613900139000"]),
        ("strings", ["a", "b"], ["a", "b"]),
        ("integers", "502,503", [502, 503]),
        ("integers", [502], [502]),
        ("integers", 502, [502]),
        ("string", " redis://h:6379/0 ", "redis://h:6379/0"),
    ],
)
def test_values_and_their_strings(method: str, value: Any, expected: Any) -> None:
    assert read(method, value) == expected


def read(method: str, value: Any) -> Any:
    """``Settings.<method>`` of ``value`` under SMSGUARD_KEY (the list readers' default is empty)."""
    default = () if method in ("strings", "integers") else (None,)
    return getattr(Settings({"SMSGUARD_KEY": value}, known={"KEY"}), method)("KEY", *default)


@pytest.mark.parametrize(
    ("method", "value", "message"),
    [
        ("integer", "ten", "SMSGUARD_KEY='ten' is not an integer"),
        ("integer", 2.5, "SMSGUARD_KEY=2.5 is not an integer"),
        ("integer", True, "SMSGUARD_KEY=True is not an integer"),
        ("number", "fast", "SMSGUARD_KEY='fast' is not a number"),
        ("boolean", "maybe", "SMSGUARD_KEY='maybe' is not a boolean"),
        ("integers", "502,five", "SMSGUARD_KEY='502,five' is not a list of integers"),
        ("strings", [1, 2], "SMSGUARD_KEY=\\[1, 2\\] is not a list of strings"),
    ],
)
def test_unreadable_values_name_the_key(method: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read(method, value)


def test_absent_or_none_gives_the_default() -> None:
    read = Settings({"SMSGUARD_A": None}, known={"A", "B"})
    assert (read.integer("A", 7), read.integer("B", 8), read.optional("A")) == (7, 8, None)


def test_guard_from_environment_strings() -> None:
    env = {
        "SMSGUARD_SUSPENDABLE": "false",
        "SMSGUARD_SAME_CONTENT_WINDOW": "0",
        "SMSGUARD_DAILY_CAP": "3",
        "SMSGUARD_PHONE_RATE": "",
        "SMSGUARD_IP_RATE": "5/minute",
        "SMSGUARD_IPV6_PREFIX": "56",
        "SMSGUARD_IP_SKIP_MISSING": "true",
        "SMSGUARD_SHARED_BLACKLIST": "yes",
        "SMSGUARD_BLACKLIST_PREFIXES": "+8819,+8817",
        "SMSGUARD_WHITELIST": "+8613800000000",
        "SMSGUARD_RETRY_INTERVAL": "2.5",
        "SMSGUARD_FAIL_MODE": "closed",
        "SMSGUARD_DEFAULT_REGION": "CN",
    }
    guard = Guard.from_settings(env)
    assert [p.name for p in guard.policies] == ["whitelist", "blacklist", "daily_cap", "ip_throttle"]
    whitelist, blacklist, _, throttle = guard.policies
    assert isinstance(whitelist, Whitelist)
    assert isinstance(blacklist, Blacklist)
    assert (blacklist.shared, blacklist.prefixes) == (True, ("+8819", "+8817"))
    assert isinstance(throttle, IPThrottle)
    assert (throttle.ipv6_prefix, throttle.skip_missing) == (56, True)
    assert (guard.outage.retry_interval, guard.fail_mode) == (2.5, "closed")
    assert guard.check("13800138000").allowed, "no IP: skipped, as configured"
    assert guard.check("+881912345678").reason == "blacklisted"
    guard.add_number("blacklist", "13900139000")
    assert guard.check("13900139000").reason == "blacklisted"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMSGUARD_DAILY_CAP": "ten"}, "SMSGUARD_DAILY_CAP='ten' is not an integer"),
        ({"SMSGUARD_SUSPENDABLE": "perhaps"}, "SMSGUARD_SUSPENDABLE='perhaps' is not a boolean"),
        ({"SMSGUARD_FAIL_MODE": "sometimes"}, r"SMSGUARD_FAIL_MODE\) must be one of .*'sometimes'$"),
        ({"SMSGUARD_FAIL_MODE": "clsoed"}, r"SMSGUARD_FAIL_MODE\) .*not 'clsoed': did you mean 'closed'\?"),
        ({"SMSGUARD_FAIL_MODE": "OPEN"}, "did you mean 'open'"),
        ({"SMSGUARD_RETRY_INTERVAL": "0"}, r"SMSGUARD_RETRY_INTERVAL\) must be positive"),
        ({"SMSGUARD_STATS_DAYS": "0"}, r"\(SMSGUARD_STATS_DAYS\), not 0"),
        ({"SMSGUARD_DENY_CACHE": "-1"}, r"SMSGUARD_DENY_CACHE\) must be a positive number"),
        ({"SMSGUARD_IPV6_PREFIX": "abc"}, "^SMSGUARD_IPV6_PREFIX='abc' is not an integer$"),  # named once
        ({"SMSGUARD_STORAGE_URI": "localhost:6379"}, "is not a storage URL"),
    ],
)
def test_bad_settings_fail_at_construction(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Guard.from_settings(env)


def test_same_content_skip_missing_key() -> None:
    guard = Guard.from_settings({"SMSGUARD_SAME_CONTENT_SKIP_MISSING": "1", "SMSGUARD_IP_RATE": ""})
    assert isinstance(guard.policies[1], SameContent)
    assert guard.check("+8613800138000").allowed


# -- misspelt keys: a ConfigError naming the nearest known key (issue 19, item 12) -------------


@pytest.mark.parametrize(
    ("key", "value", "nearest"),
    [
        ("SMSGUARD_TRUSTED_PROXY", "10.0.0.0/8", "SMSGUARD_TRUSTED_PROXIES"),
        ("SMSGUARD_STORAGE_URL", "redis://localhost:6379/0", "SMSGUARD_STORAGE_URI"),
        ("SMSGUARD_DAILYCAP", "3", "SMSGUARD_DAILY_CAP"),
        ("SMSGUARD_IP_RATES", "5/hour", "SMSGUARD_IP_RATE"),
    ],
)
def test_a_misspelt_key_names_the_nearest_known_one(key: str, value: str, nearest: str) -> None:
    for build in (Guard.from_settings, Gate.settings):
        with pytest.raises(ConfigError, match=f"{key} is not a setting: did you mean {nearest}"):
            build({key: value})


@pytest.mark.parametrize(
    ("key", "value", "option"),
    [
        ("MAX_BODY", "-1", "max_body"),
        ("BODY_TIMEOUT", "0", "body_timeout"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "trusted_proxies"),
        ("PROXY_HEADER", "x forwarded for", "proxy_header"),
        ("PROXY_HEADER", "", "proxy_header"),
        ("PHONE_FIELD", "", "phone"),
        ("CODE_FIELD", "", "code"),
        ("CONTENT_FIELD", "phone", "'phone' and 'phone'"),
        ("EXEMPT_NETWORKS", "10.0.0.300", "10.0.0.300"),
        ("RATE_HEADERS", "sometimes", "sometimes"),
    ],
)
def test_a_gate_setting_refused_names_its_key(key: str, value: str, option: str) -> None:
    """The Gate's error, under the key that gave its value: flat settings and Django's dict."""
    given = re.escape(repr(value))
    with pytest.raises(ConfigError, match=rf"^SMSGUARD_{key}={given}: .*{re.escape(option)}"):
        Gate.settings({f"SMSGUARD_{key}": value})
    with pytest.raises(ConfigError, match=rf"^SMSGUARD\['{key}'\]={given}: "):
        Gate.settings({key: value}, prefix="")


def test_phone_and_code_in_one_field_are_refused() -> None:
    same = "SMSGUARD_PHONE_FIELD and SMSGUARD_CODE_FIELD name the same field"
    with pytest.raises(ConfigError, match=same):
        Gate.settings({"SMSGUARD_PHONE_FIELD": "otp", "SMSGUARD_CODE_FIELD": "otp"})
    with pytest.raises(ConfigError, match=same):
        Gate.settings({"SMSGUARD_CODE_FIELD": "phone"})
    assert Gate.settings({"SMSGUARD_PHONE_FIELD": "tel", "SMSGUARD_CODE_FIELD": "otp"}) == {
        "phone": "tel",
        "code": "otp",
    }


def test_an_unknown_key_far_from_any_lists_the_settings() -> None:
    with pytest.raises(ConfigError, match=r"SMSGUARD_COLOUR is not a setting.*SMSGUARD_STORAGE_URI"):
        Guard.from_settings({"SMSGUARD_COLOUR": "blue"})


def test_keys_outside_the_prefix_are_not_ours() -> None:
    guard = Guard.from_settings({"SECRET_KEY": "django's", "SMSGUARDIAN": "x", "SMSGUARD_DAILY_CAP": "2"})
    assert [p.name for p in guard.policies if isinstance(p, DailyCap)] == ["daily_cap"]


def test_flask_config_with_a_misspelt_key_fails_at_init() -> None:
    app = Flask(__name__)
    app.config.update(SMSGUARD_TRUSTED_PROXY=["10.0.0.0/8"])
    with pytest.raises(ConfigError, match="did you mean SMSGUARD_TRUSTED_PROXIES"):
        SMSGuard(app)


def test_every_key_a_reader_asks_for_is_in_the_table() -> None:
    """The table is the one list of keys: reading one that is not there is a bug, not a default."""
    with pytest.raises(KeyError, match="NOT_A_KEY"):
        Settings({}).integer("NOT_A_KEY", 1)


# -- Django's dict: the same check, and dotted paths for the callables ---------------------------


def test_django_a_misspelt_key_fails_when_the_app_loads() -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from django.test import override_settings

    with (
        override_settings(SMSGUARD={"ROUTE": ["POST /sms/send"]}),
        pytest.raises(
            ConfigError, match=r"SMSGUARD\['ROUTE'\] is not a setting: did you mean SMSGUARD\['ROUTES'\]"
        ),
    ):
        WSGIHandler()


def phone_of(request: Any) -> str:
    """A Django PHONE callable, named by its dotted path: the number from a header."""
    return str(request.headers["x-phone"])


def passed(request: Any) -> bool:
    return request.headers.get("x-captcha") == "ok"


def render(problem: Problem) -> Reply:
    return Reply(problem.status, (("content-type", "application/json"),), b'{"refused": true}')


def test_django_takes_phone_challenge_and_render_as_dotted_paths() -> None:
    from django.test import Client, override_settings

    from smsguard.adapters.django import configured

    smsguard = {
        **django_app.SMSGUARD,
        "PHONE": "test_settings.phone_of",
        "CHALLENGE": "test_settings.passed",
        "RENDER": "test_settings.render",
    }
    configured.clear(setting="SMSGUARD")
    try:
        with override_settings(SMSGUARD=smsguard):
            gate = configured.get().gates.default
            assert (gate.phone, gate.challenge, gate.render) == (phone_of, passed, render)
            client = Client()
            sent = [
                client.post("/sms/send", b"{}", content_type="application/json", HTTP_X_PHONE=VICTIM)
                for _ in range(4)
            ]
            assert [r.status_code for r in sent] == [200, 200, 200, 429], "the number from PHONE"
            assert sent[-1].json() == {"refused": True}, "shaped by RENDER"
    finally:
        configured.clear(setting="SMSGUARD")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("PHONE", "mobile", r"SMSGUARD\['PHONE'\] = 'mobile' is not a dotted path.*PHONE_FIELD"),
        (
            "CHALLENGE",
            "test_settings.nothing_here",
            r"SMSGUARD\['CHALLENGE'\] = 'test_settings.nothing_here'",
        ),
        ("RENDER", "no_such_module.render", r"SMSGUARD\['RENDER'\] = 'no_such_module.render'"),
    ],
)
def test_django_a_bad_dotted_path_names_the_key(key: str, value: str, message: str) -> None:
    from django.test import override_settings

    from smsguard.adapters.django import configured

    configured.clear(setting="SMSGUARD")
    try:
        with (
            override_settings(SMSGUARD={**django_app.SMSGUARD, key: value}),
            pytest.raises(ConfigError, match=message),
        ):
            configured.get()
    finally:
        configured.clear(setting="SMSGUARD")


# -- the small ones (issue 19, item 13) ----------------------------------------------------------


@pytest.mark.parametrize("off", ["0", 0, ""])
def test_a_zero_rate_turns_its_policy_off(off: Any) -> None:
    guard = Guard.from_settings({"SMSGUARD_IP_RATE": off, "SMSGUARD_PHONE_RATE": off})
    assert [p.name for p in guard.policies] == ["suspend", "same_content", "daily_cap"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SMSGUARD_PHONE_RATE": "5/fortnight"}, "SMSGUARD_PHONE_RATE='5/fortnight': .*not a rate string"),
        ({"SMSGUARD_IP_RATE": "0/hour"}, "SMSGUARD_IP_RATE='0/hour': .*at least 1"),
        ({"SMSGUARD_TIMEZONE": "Mars/Olympus"}, "SMSGUARD_TIMEZONE='Mars/Olympus': unknown time zone"),
        ({"SMSGUARD_DAILY_CAP": "-1"}, "SMSGUARD_DAILY_CAP='-1': limit must be positive"),
        ({"SMSGUARD_SAME_CONTENT_WINDOW": "-5"}, "SMSGUARD_SAME_CONTENT_WINDOW='-5': window must be"),
        ({"SMSGUARD_IPV4_PREFIX": "40"}, "SMSGUARD_IPV4_PREFIX='40': ipv4_prefix must be within"),
        ({"SMSGUARD_BLACKLIST_PREFIXES": "8819"}, "SMSGUARD_BLACKLIST_PREFIXES='8819': .*must be '\\+'"),
        ({"SMSGUARD_WHITELIST": "12"}, "SMSGUARD_WHITELIST='12': .*not a valid number"),
        ({"SMSGUARD_DEFAULT_REGION": "XX"}, "SMSGUARD_DEFAULT_REGION='XX'"),
        # Positive but endless: each passed, then failed every check (OverflowError, a Redis error).
        ({"SMSGUARD_SAME_CONTENT_WINDOW": "inf"}, "SMSGUARD_SAME_CONTENT_WINDOW='inf': window must be"),
        ({"SMSGUARD_SAME_CONTENT_WINDOW": "1e300"}, "SMSGUARD_SAME_CONTENT_WINDOW='1e300': .*a century"),
        ({"SMSGUARD_CODE_TTL": "inf"}, "SMSGUARD_CODE_TTL='inf': code ttl must be"),
        ({"SMSGUARD_PHONE_RATE": "1/1000000000 years"}, "SMSGUARD_PHONE_RATE=.*: .*century"),
        ({"SMSGUARD_DAILY_BUDGET": "inf"}, "SMSGUARD_DAILY_BUDGET='inf': daily_budget must be"),
    ],
)
def test_a_policy_error_names_the_settings_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Guard.from_settings(env)


# -- storage URLs (issue 19, item 13) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://localhost:6379/abc", "'abc' is not a database number"),
        ("redis://localhost:6379/0/1", "'0/1' is not a database number"),
        ("redis://localhost:6379/0?timeout=abc", "timeout=abc"),
        ("redis://localhost:port/0", "'localhost:port' is not host:port"),
        ("redis+cluster://127.0.0.1:7000/3", "a Cluster has database 0 only"),
    ],
)
def test_a_bad_redis_url_fails_at_construction(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Guard.from_settings({"SMSGUARD_STORAGE_URI": url, "SMSGUARD_SECRET": "s"})


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@localhost:port/0",
        "redis//:hunter2@localhost:6379/0",
        "redis+sentinel://:hunter2@localhost:x/service",
        "redis://user:hunter2@localhost:6379/abc",
        "redis://:hunter2@localhost:6379/0?timeout=abc",
    ],
)
def test_a_bad_url_is_shown_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Guard.from_settings({"SMSGUARD_STORAGE_URI": url, "SMSGUARD_SECRET": "s"})
    assert "hunter2" not in str(raised.value)
    assert ":***@localhost" in str(raised.value)


def test_a_redis_url_without_the_redis_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # what `import redis` meets without the extra
    monkeypatch.delitem(sys.modules, "smsguard.backends.redis")
    with pytest.raises(ConfigError, match=r"pip install 'smsguard\[redis\]'"):
        Guard.from_settings({"SMSGUARD_STORAGE_URI": "redis://localhost:6379/0", "SMSGUARD_SECRET": "s"})


@pytest.mark.redis_server
def test_a_database_redis_does_not_have_names_the_fix(redis_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/99"
    guard = Guard.from_settings({"SMSGUARD_STORAGE_URI": url, "SMSGUARD_SECRET": "s"})
    with pytest.raises(ConfigError, match=r"has no such database.*databases"):
        guard.check(VICTIM, content="x", ip="203.0.113.7")


def test_the_readme_settings_table_names_every_setting() -> None:
    """README's "Every setting" table is the one list users read: each key of ``KEYS`` is in it,
    and it names no key that is not one."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("### Every setting", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"`SMSGUARD_([A-Z0-9_]+)`", table))
    assert named - {"PARSER"} == set(KEYS)
