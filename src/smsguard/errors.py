"""The exceptions smsguard raises. Every one is a ``SmsguardError``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smsguard.attempt import Decision


class SmsguardError(Exception):
    """Base class of every smsguard exception."""


class ConfigError(SmsguardError, ValueError):
    """A guard, policy or backend was built with a value it cannot use."""


class InvalidInput(SmsguardError, ValueError):
    """An attempt cannot be judged as given (adapters answer 400)."""


class InvalidPhone(InvalidInput):
    """The phone number cannot be parsed, or is not a valid number."""


class MissingSubject(InvalidInput):
    """A policy needs a part of the attempt (``subject``: ``"ip"``, ``"content"``) that was not
    given."""

    def __init__(self, message: str, *, subject: str = "") -> None:
        super().__init__(message)
        self.subject = subject


class BackendUnavailable(SmsguardError):
    """The backend could not be reached, or refused for now (Redis without the replica it
    must write to, after a failed save, busy with another client's script, loading); the guard
    applies its fail mode.

    ``partial`` is True when only part of the backend failed (some slots of a Cluster): the
    guard then degrades this decision only, and keeps using the backend for the others.
    """

    def __init__(self, message: str, *, partial: bool = False) -> None:
        super().__init__(message)
        self.partial = partial


class BackendError(SmsguardError):
    """The backend answered, but wrongly: a script error, a reply the guard cannot read.

    A bug, not an outage: it is raised, never answered with the fail mode (an ``open`` guard
    must not admit everything because of it).
    """


class Denied(SmsguardError):
    """Raised by ``Guard.enforce`` when an attempt is denied; carries the decision."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"denied by {decision.policy}: {decision.reason}")
        self.decision = decision
