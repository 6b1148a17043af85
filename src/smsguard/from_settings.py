"""A guard from flat settings: what ``Guard.from_settings`` reads, and the policies it builds.

Settings come as a Flask ``app.config``, environment variables or a TOML table, each value
given as such or as a string (``smsguard.settings``). The README's settings table lists them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from smsguard.backends import backend_from_url
from smsguard.backends.base import Backend
from smsguard.codes import code_rules
from smsguard.days import zone
from smsguard.errors import ConfigError
from smsguard.phone import check_region
from smsguard.policies import (
    Blacklist,
    DailyCap,
    IPThrottle,
    PhoneRate,
    Policy,
    SameContent,
    Suspend,
    Whitelist,
)
from smsguard.pumping import settings_defences
from smsguard.settings import Settings
from smsguard.stats import Statistics


def guard_options(settings: Mapping[str, Any], prefix: str, backend: Backend | None) -> dict[str, Any]:
    """The arguments of ``Guard(...)`` that ``settings`` (keys under ``prefix``) give; ``backend``
    is taken instead of the one ``STORAGE_URI`` names."""
    read = Settings(settings, prefix)
    deny_cache = read.number("DENY_CACHE", math.nan)  # absent: by backend
    return {
        "policies": settings_policies(read),
        "backend": backend
        or backend_from_url(
            read.string("STORAGE_URI", "memory://"), prefix=read.string("KEY_PREFIX", "smsguard:")
        ),
        "default_region": read.optional("DEFAULT_REGION"),
        "fail_mode": read.string("FAIL_MODE", "local"),  # Outage checks it
        "secret": read.optional("SECRET"),
        "retry_interval": read.number("RETRY_INTERVAL", 5.0),
        "statistics": read.boolean("STATS", True)
        and Statistics(
            read.optional("TIMEZONE"),
            days=read.integer("STATS_DAYS", 35),
            flush_interval=read.number("STATS_INTERVAL", 1.0),
        ),
        "dry_run": read.boolean("DRY_RUN", False),
        "code_rules": code_rules(read),
        "deny_cache": None if math.isnan(deny_cache) else deny_cache,
    }


def settings_policies(read: Settings) -> list[Policy]:
    """The policies ``Guard.from_settings`` builds, in order (the switch first, so that it stops
    everything): the SMS providers' rules by default, the lists, the pumping defences that
    ``COUNTRIES``, ``DAILY_BUDGET`` and ``RECOMMENDED`` ask for (``pumping.settings_defences``:
    with ``RECOMMENDED`` and no other key, the very set of ``recommended(...)``); those named in
    ``SHADOW`` in shadow; a 0 or an empty limit turns its policy off. A policy that refuses its
    settings raises a ConfigError naming their keys. See the README's settings table."""
    region = read.optional("DEFAULT_REGION")
    with read.about("DEFAULT_REGION"):
        check_region(region)
    tz = read.string("TIMEZONE", "UTC")
    with read.about("TIMEZONE"):
        zone(tz)
    shadows = set(read.strings("SHADOW"))

    defences = settings_defences(read, tz, shadows)
    policies: list[Policy] = []
    if read.boolean("SUSPENDABLE", True):
        policies.append(Suspend(shadow="suspend" in shadows))
    whitelist, shared_whitelist = read.strings("WHITELIST"), read.boolean("SHARED_WHITELIST", False)
    if whitelist or shared_whitelist:
        with read.about("WHITELIST"):
            policies.append(
                Whitelist(whitelist, region=region, shared=shared_whitelist, shadow="whitelist" in shadows)
            )
    blacklist, prefixes = read.strings("BLACKLIST"), read.strings("BLACKLIST_PREFIXES")
    shared_blacklist = read.boolean("SHARED_BLACKLIST", False)
    if blacklist or prefixes or shared_blacklist:
        with read.about("BLACKLIST", "BLACKLIST_PREFIXES"):
            policies.append(
                Blacklist(
                    blacklist,
                    prefixes=prefixes,
                    region=region,
                    shared=shared_blacklist,
                    shadow="blacklist" in shadows,
                )
            )
    if defences.countries is not None:
        policies.append(defences.countries)
    if defences.content is not None:
        policies.append(defences.content)
    if window := read.number("SAME_CONTENT_WINDOW", 30):
        skip = read.boolean("SAME_CONTENT_SKIP_MISSING", False)
        with read.about("SAME_CONTENT_WINDOW"):
            policies.append(SameContent(window, skip_missing=skip, shadow="same_content" in shadows))
    if cap := read.integer("DAILY_CAP", 10):
        with read.about("DAILY_CAP"):
            policies.append(DailyCap(cap, tz=tz, shadow="daily_cap" in shadows))
    if rates := read.rates("PHONE_RATE", "1/minute;5/hour"):
        with read.about("PHONE_RATE"):
            policies.append(PhoneRate(rates, shadow="phone_rate" in shadows))
    if rates := read.rates("IP_RATE", "20/hour"):
        with read.about("IP_RATE", "IPV4_PREFIX", "IPV6_PREFIX"):
            policies.append(
                IPThrottle(
                    rates,
                    ipv4_prefix=read.integer("IPV4_PREFIX", 32),
                    ipv6_prefix=read.integer("IPV6_PREFIX", 64),
                    skip_missing=read.boolean("IP_SKIP_MISSING", False),
                    shadow="ip_throttle" in shadows,
                )
            )
    policies += defences.unverified
    if defences.spend is not None:
        policies.append(defences.spend)
    if defences.shed is not None:
        policies.append(defences.shed)
    unknown = shadows - {p.name for p in policies}
    if unknown:
        raise ConfigError(
            f"{read.key('SHADOW')} names {', '.join(sorted(unknown))}: not among this guard's policies "
            f"({', '.join(p.name for p in policies)})"
        )
    return policies
