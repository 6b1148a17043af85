"""Rate headers on an allowed response: the Gate's ``rate_headers`` option (off by default).

- ``"ratelimit"`` (or True): the IETF draft's ``RateLimit-Policy: "phone_rate";q=5;w=3600`` and
  ``RateLimit: "phone_rate";r=4;t=3600``, one item per enforcing policy, as a refusal's;
- ``"x-ratelimit"``: ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
  (seconds from now) of the tightest policy, the names Flask-Limiter and slowapi send.

From the Decision's ``quotas``: what the attempt left, itself counted. The anti-fraud scopes'
quotas (the Gate's ``opaque`` reasons) are never shown, as their refusals are not.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Final

from smsguard.attempt import Decision, Quota
from smsguard.errors import ConfigError

RATELIMIT: Final = "ratelimit"
X_RATELIMIT: Final = "x-ratelimit"
STYLES: Final = (RATELIMIT, X_RATELIMIT)


def style(value: bool | str | None) -> str | None:
    """The style ``rate_headers=value`` asks for (True: ``"ratelimit"``), None for none."""
    if value is None or value is False:
        return None
    if value is True:
        return RATELIMIT
    if isinstance(value, str) and value.strip().lower() in STYLES:
        return value.strip().lower()
    raise ConfigError(f"rate_headers must be True, False or one of {list(STYLES)}, not {value!r}")


def headers(decision: Decision, kind: str, hidden: Collection[str]) -> list[tuple[str, str]]:
    """The headers of style ``kind`` for an allowed ``decision``, without the quotas of the
    ``hidden`` reasons; none where it counted nothing (an exemption, the fail mode)."""
    quotas = [quota for quota in decision.quotas if quota.reason not in hidden]
    if not quotas:
        return []
    if kind == RATELIMIT:
        return [
            ("ratelimit-policy", ", ".join(map(_policy, quotas))),
            (
                "ratelimit",
                ", ".join(f"{sf_string(q.policy)};r={q.remaining};t={_seconds(q.reset)}" for q in quotas),
            ),
        ]
    tightest = min(quotas, key=lambda q: (q.remaining, -q.reset))
    return [
        ("x-ratelimit-limit", str(tightest.limit)),
        ("x-ratelimit-remaining", str(tightest.remaining)),
        ("x-ratelimit-reset", str(_seconds(tightest.reset))),
    ]


def _policy(quota: Quota) -> str:
    window = "" if quota.window is None else f";w={_seconds(quota.window)}"
    return f"{sf_string(quota.policy)};q={quota.limit}{window}"


def _seconds(value: float) -> int:
    return max(0, math.ceil(value))


def sf_string(text: str) -> str:
    """``text`` as a structured-field string (RFC 8941): quoted, with \\ and \" escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
