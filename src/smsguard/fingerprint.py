"""The settings an app's guard runs with, left in its shared backend for the ``smsguard``
command to compare its own with.

A command run with other settings than the app's does nothing it says: with another secret it
hashes a number to a key nobody counts under (``status`` shows zeros for a number the app
blocked), a shared list the app does not keep is never read, and hours in another time zone
are labelled wrong. So the app's guard leaves its fingerprint with its first decision (one
write, with the next that goes to the backend, once), and the command refuses when its own
differs, naming what differs.

The fingerprint is what makes keys and verdicts: a keyed hash that stands for the secret (never
the secret), the default region, the statistics' time zone, the key prefix, and each policy's
type, name and plain settings (numbers, strings, flags, time zones). Collections are left out:
a Whitelist's numbers are numbers, and nothing of a number leaves in clear (semantics 16).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Final
from zoneinfo import ZoneInfo

from smsguard.days import LocalDays

KEY: Final = "fingerprint"
"""Where the app's guard leaves it, under the backend's key prefix."""

_SECRET: Final = "smsguard fingerprint"  # what the keyed hash that stands for the secret hashes
_LABELS: Final = {
    "secret": "secret",
    "region": "default region",
    "zone": "time zone",
    "prefix": "key prefix",
}


def fingerprint(
    policies: Iterable[object],
    *,
    digest: Callable[[str], str],
    region: str | None,
    zone: ZoneInfo | None,
    prefix: str | None,
) -> str:
    """The fingerprint of a guard, as JSON: ``digest`` is its keyed hash, ``zone`` its
    statistics' time zone (None without statistics), ``prefix`` its backend's key prefix."""
    return json.dumps(
        {
            "secret": digest(_SECRET),
            "region": region,
            "zone": None if zone is None else zone.key,
            "prefix": prefix,
            "policies": [_described(p) for p in policies],
        }
    )


def differences(app: str, here: str) -> list[str]:
    """What differs between the app's fingerprint and this one, each said in a few words;
    empty when they agree."""
    theirs, ours = json.loads(app), json.loads(here)
    found = []
    for name, label in _LABELS.items():
        a, b = theirs.get(name), ours.get(name)
        if a != b:
            found.append(
                f"{label}: not the app's" if name == "secret" else f"{label}: the app's {a!r}, here {b!r}"
            )
    a_policies, b_policies = theirs.get("policies", []), ours.get("policies", [])
    a_titles, b_titles = [_title(p) for p in a_policies], [_title(p) for p in b_policies]
    if a_titles != b_titles:
        if only := [t for t in b_titles if t not in a_titles]:
            found.append(f"policies the app has not: {', '.join(only)}")
        if only := [t for t in a_titles if t not in b_titles]:
            found.append(f"policies of the app's missing here: {', '.join(only)}")
        if sorted(a_titles) == sorted(b_titles):
            found.append(f"policies in another order: the app's {', '.join(a_titles)}")
        return found
    for a, b in zip(a_policies, b_policies, strict=True):
        for name in sorted(a.keys() | b.keys()):
            if a.get(name) != b.get(name):
                found.append(f"{a['name']}: {name} {a.get(name)!r} in the app, {b.get(name)!r} here")
    return found


def _title(policy: dict[str, Any]) -> str:
    return f"{policy.get('name')} ({policy.get('type')})"


def _described(policy: object) -> dict[str, Any]:
    """A policy's type, name and plain settings (its attributes that hold a number, a string,
    a flag or a time zone; a Shadow's policy, described)."""
    found: dict[str, Any] = {"type": type(policy).__name__, "name": getattr(policy, "name", None)}
    for name, value in sorted(getattr(policy, "__dict__", {}).items()):
        if isinstance(value, LocalDays):  # the days a daily counter counts in (some privately)
            found["tz"] = value.tz.key
        elif name.startswith("_"):
            continue
        elif value is None or isinstance(value, (bool, int, float, str)):
            found[name] = value
        elif isinstance(value, ZoneInfo):
            found[name] = value.key
        elif hasattr(value, "review"):  # a wrapped policy
            found[name] = _described(value)
    return found
