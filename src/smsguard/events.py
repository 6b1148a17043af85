"""Events: what a guard tells its listeners, and its denial log.

A listener is any callable taking an ``Event`` (structlog's processors and httpx's
``event_hooks`` are the models): metrics, audit logs and statistics readers are listeners, and
the decision path stays as it is. A listener's exception is logged, never raised into the request.

Nothing here carries a plain number or content (semantics 16): an event holds the keyed hash of
the number, its country, and the client network as the guard counts it.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

from smsguard.attempt import Decision

log = logging.getLogger("smsguard")

DECISION: Final = "decision"
REFUND: Final = "refund"
BACKEND_DOWN: Final = "backend_down"
"""The backend stopped answering: the fail mode applies from now on."""
BACKEND_UP: Final = "backend_up"
VERIFIED: Final = "verified"
"""The app said a user entered a correct code (``Guard.verified``), or ``check_code`` found it."""
CODE_CHECK: Final = "code_check"
"""A code checked (``Guard.check_code``): ``allowed`` when right, else ``reason``."""
LOCKOUT: Final = "lockout"
"""A code killed by its last wrong check (``reason`` ``wrong_code``)."""
BUDGET_ALARM: Final = "budget_alarm"
"""A SpendCap's day reached its alarm share; ``detail`` says how much."""
SURGE: Final = "surge"
"""A scope (country, network, hashed range) sent what its own history allows in a day: a
``LearnedCap``'s ceiling refused a code. ``detail`` names the scope."""
CONVERSION_DROP: Final = "conversion_drop"
"""A scope's codes went unentered until its room was spent: a ``LearnedCap``'s room (or a
country's budget for never-proven ranges) refused a code. ``detail`` names the scope."""

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Event(NamedTuple):
    """Something the guard did. Which fields are set depends on ``kind``."""

    kind: str
    """``decision``, ``refund``, ``verified``, ``code_check``, ``lockout``, ``budget_alarm``,
    ``surge``, ``conversion_drop``, ``backend_down`` or ``backend_up``."""
    at: float
    """The guard's clock."""
    allowed: bool | None = None
    policy: str | None = None
    """The policy that denied (or exempted) the attempt."""
    reason: str | None = None
    """The reason code (``daily_cap``, ``fail_open``...)."""
    refusal: str | None = None
    """The reason's kind when denied: ``limit``, ``forbidden``, ``unavailable``, ``challenge``."""
    retry_after: float | None = None
    country: str | None = None
    """The number's ISO region (``"CN"``)."""
    phone_hash: str | None = None
    """The keyed hash the guard stores the number under: never the number itself."""
    network: str | None = None
    """The client network as IPThrottle counts it (``"203.0.113.7"``, ``"2001:db8::/64"``)."""
    duration: float | None = None
    """Seconds the guard took over a decision."""
    detail: str | None = None
    """For ``backend_down``: what failed; for ``budget_alarm``: how much is spent."""
    fail_mode: str | None = None
    """For a decision the fail mode made (the backend unreachable): ``open``, ``closed`` or
    ``local``."""
    shadowed: tuple[str, ...] = ()
    """The shadow policies that would have denied the attempt."""


Listener = Callable[[Event], Any]


class Reporter:
    """A guard's listeners and its denial log: one INFO record per denial on the ``smsguard``
    logger, with the event's fields in the record (``extra``) for JSON log handlers."""

    def __init__(
        self, listeners: Iterable[Listener], fail_mode: str, network: Callable[[Address], str] = str
    ) -> None:
        """``network``: the client network of an address, as the guard counts it (IPThrottle's)."""
        self.listeners: list[Listener] = list(listeners)
        self._fail_mode = fail_mode
        self._network = network
        self.network = functools.lru_cache(maxsize=4096)(self._network_uncached)  # clients repeat

    def wants(self, decision: Decision) -> bool:
        """Whether ``decision`` is to be reported: someone listens, or it is a denial and the
        log takes INFO. (Asked first, so that an unreported decision costs no clock read.)"""
        return bool(self.listeners) or (not decision.allowed and log.isEnabledFor(logging.INFO))

    def decision(self, decision: Decision, ip: Any, at: float, started: float | None, ended: float) -> None:
        """Report ``decision`` (to the listeners, and to the log if denied); see ``wants``."""
        event = Event(
            DECISION,
            at,
            decision.allowed,
            decision.policy,
            decision.reason,
            None if decision.allowed else decision.kind,
            decision.retry_after,
            decision.country,
            decision.phone_hash,
            self.network(ip),
            None if started is None else ended - started,
            None,
            self._fail_mode if decision.degraded else None,
            decision.shadowed,
        )
        if not decision.allowed and log.isEnabledFor(logging.INFO):
            log.info(
                "smsguard: denied by %s (%s), retry after %s s; country %s, number %s, client %s",
                event.policy,
                event.reason,
                event.retry_after,
                event.country,
                event.phone_hash,
                event.network,
                extra={
                    "policy": event.policy,
                    "reason": event.reason,
                    "retry_after": event.retry_after,
                    "country": event.country,
                    "phone_hash": event.phone_hash,
                    "client_network": event.network,
                },
            )
        self.emit(event)

    def refund(self, decision: Decision, at: float) -> None:
        if self.listeners and decision.receipt is not None:
            self.emit(Event(REFUND, at, True, country=decision.country, phone_hash=decision.phone_hash))

    def verified(self, country: str | None, phone_hash: str, at: float) -> None:
        if self.listeners:
            self.emit(Event(VERIFIED, at, country=country, phone_hash=phone_hash))

    def code_check(self, result: Any, country: str | None, phone_hash: str, at: float, lockout: bool) -> None:
        """A code checked (``CodeCheck`` ``result``), and the lockout its last wrong check made."""
        reason = result.reason
        if self.listeners:
            self.emit(
                Event(CODE_CHECK, at, result.ok, None, reason, None, result.retry_after, country, phone_hash)
            )
            if lockout:
                self.emit(Event(LOCKOUT, at, False, None, reason, None, None, country, phone_hash))
        if lockout:
            extra = {"phone_hash": phone_hash, "country": country}
            log.warning(
                "smsguard: a code is dead after its last wrong check; number %s", phone_hash, extra=extra
            )

    def alarm(self, policy: str, detail: str, at: float) -> None:
        """A budget alarm: to the listeners, and to the log as a warning."""
        log.warning("smsguard: budget alarm: %s", detail, extra={"policy": policy})
        self.emit(Event(BUDGET_ALARM, at, policy=policy, detail=detail))

    def scope(
        self, kind: str, policy: str, detail: str, country: str | None, at: float, *, loud: bool
    ) -> None:
        """A scope's surge or conversion drop: to the listeners, and to the log, as a warning if
        ``loud`` (a country or network; a spread attack shuts ranges by the thousand: info)."""
        log.log(
            logging.WARNING if loud else logging.INFO,
            "smsguard: %s: %s",
            kind,
            detail,
            extra={"policy": policy},
        )
        self.emit(Event(kind, at, policy=policy, country=country, detail=detail))

    def backend(self, kind: str, at: float, detail: str | None = None) -> None:
        if self.listeners:
            self.emit(Event(kind, at, detail=detail))

    def _network_uncached(self, ip: Any) -> str | None:
        """The client network of ``ip`` (a string or an address), as IPThrottle counts it."""
        if ip is None:
            return None
        try:
            address = ip if isinstance(ip, Address) else ipaddress.ip_address(ip)
        except ValueError:
            return None
        return self._network(address)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("smsguard: listener %r failed on a %s event", listener, event.kind)
