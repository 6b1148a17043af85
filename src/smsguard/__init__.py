"""smsguard: stops SMS bombing and SMS pumping at a send-verification-code endpoint."""

from __future__ import annotations

from smsguard.attempt import Attempt, Decision
from smsguard.backends.base import Backend, Counter, Flag, Job, Outcome, Receipt
from smsguard.backends.memory import MemoryBackend
from smsguard.errors import (
    BackendUnavailable,
    ConfigError,
    Denied,
    InvalidInput,
    InvalidPhone,
    MissingSubject,
    SmsguardError,
)
from smsguard.guard import Guard
from smsguard.phone import normalize
from smsguard.policies import (
    EXEMPT,
    Blacklist,
    DailyCap,
    Deny,
    IPThrottle,
    PhoneRate,
    Policy,
    SameContent,
    Suspend,
    Whitelist,
)

__all__ = [
    "EXEMPT",
    "Attempt",
    "Backend",
    "BackendUnavailable",
    "Blacklist",
    "ConfigError",
    "Counter",
    "DailyCap",
    "Decision",
    "Denied",
    "Deny",
    "Flag",
    "Guard",
    "IPThrottle",
    "InvalidInput",
    "InvalidPhone",
    "Job",
    "MemoryBackend",
    "MissingSubject",
    "Outcome",
    "PhoneRate",
    "Policy",
    "Receipt",
    "SameContent",
    "SmsguardError",
    "Suspend",
    "Whitelist",
    "normalize",
]
