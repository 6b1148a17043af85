"""smsguard: stops SMS bombing and SMS pumping at a send-verification-code endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smsguard.attempt import Attempt, Decision, Quota, Usage
from smsguard.backends.base import Backend
from smsguard.backends.memory import MemoryBackend
from smsguard.codes import CodeCheck, CodeRules, Issued
from smsguard.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    Denied,
    InvalidInput,
    InvalidPhone,
    MissingSubject,
    SmsguardError,
)
from smsguard.events import Event
from smsguard.guard import Guard
from smsguard.phone import normalize
from smsguard.plan import Change, Counter, Flag, Forget, Job, Outcome, Receipt, SetFlag, Tallied
from smsguard.policies import (
    EXEMPT,
    Blacklist,
    DailyCap,
    Deny,
    IPThrottle,
    PhoneRate,
    Policy,
    SameContent,
    Shadow,
    Suspend,
    Whitelist,
)
from smsguard.pumping import (
    BudgetShed,
    ChallengeCap,
    ContentRules,
    Countries,
    LearnedCap,
    SpendCap,
    UnverifiedCap,
    recommended,
)
from smsguard.stats import Day, Report, Statistics

if TYPE_CHECKING:
    from smsguard.backends.redis import RedisBackend


def __getattr__(name: str) -> Any:
    # RedisBackend needs the `redis` extra; import it only when asked for.
    if name == "RedisBackend":
        from smsguard.backends.redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module 'smsguard' has no attribute {name!r}")


__all__ = [
    "EXEMPT",
    "Attempt",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Blacklist",
    "BudgetShed",
    "ChallengeCap",
    "Change",
    "CodeCheck",
    "CodeRules",
    "ConfigError",
    "ContentRules",
    "Counter",
    "Countries",
    "DailyCap",
    "Day",
    "Decision",
    "Denied",
    "Deny",
    "Event",
    "Flag",
    "Forget",
    "Guard",
    "IPThrottle",
    "InvalidInput",
    "InvalidPhone",
    "Issued",
    "Job",
    "LearnedCap",
    "MemoryBackend",
    "MissingSubject",
    "Outcome",
    "PhoneRate",
    "Policy",
    "Quota",
    "Receipt",
    "RedisBackend",
    "Report",
    "SameContent",
    "SetFlag",
    "Shadow",
    "SmsguardError",
    "SpendCap",
    "Statistics",
    "Suspend",
    "Tallied",
    "UnverifiedCap",
    "Usage",
    "Whitelist",
    "normalize",
    "recommended",
]
