"""Settings (settings.py): each key read from a Python value or an environment string, and a
ConfigError that names the key when it cannot be."""

from __future__ import annotations

from typing import Any

import pytest

from smsguard import Blacklist, ConfigError, Guard, IPThrottle, SameContent, Whitelist
from smsguard.settings import Settings


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
    return getattr(Settings({"SMSGUARD_KEY": value}), method)("KEY", *default)


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
    read = Settings({"SMSGUARD_A": None})
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
        ({"SMSGUARD_FAIL_MODE": "sometimes"}, "fail_mode must be one of"),
        ({"SMSGUARD_RETRY_INTERVAL": "0"}, "retry_interval must be positive"),
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
