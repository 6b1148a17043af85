"""Verification codes: the guard issues them and checks them (``Guard.issue_code``,
``Guard.check_code``).

A code is never stored. Its digits are derived, with the guard's secret, from the number's hash
and a random nonce (``secrets``): keyed BLAKE2b of both, modulo 10**length. The backend keeps the
nonce, so that issuing again while the code is live gives the same code, and a keyed hash of the
code, which a check compares (``hmac.compare_digest`` in process; in Redis's script, a hash
against a hash). Neither the code nor the number reaches the backend, a log or an event.

One code per number: live from its issue for ``ttl`` seconds, spent by its first right check,
dead after ``max_attempts`` wrong ones (the right code then gets ``check_attempts`` too, until
a new one is issued). Wrong checks are also limited per number (``per_number``) and per client
address across numbers (``per_ip``): an attacker who guesses one code on each of many numbers.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from typing import Final

from smsguard.attempt import (
    BACKEND_UNAVAILABLE,
    CHECK_ATTEMPTS,
    CODE_EXPIRED,
    NO_CODE,
    TOO_MANY_CHECKS,
    WRONG_CODE,
    Attempt,
    Decision,
    Usage,
)
from smsguard.errors import BackendError, ConfigError
from smsguard.phone import Digest
from smsguard.plan import CodeState, Counter, Guess, Issue, Job, Outcome, Record, key
from smsguard.policies import parse_rates, seconds
from smsguard.settings import Settings

OK: Final = "ok"
REASONS: Final = (WRONG_CODE, CODE_EXPIRED, NO_CODE, CHECK_ATTEMPTS, TOO_MANY_CHECKS, BACKEND_UNAVAILABLE)
"""Every ``CodeCheck.reason`` but None (ok)."""

CONTENT: Final = "smsguard:code"
"""The content ``issue_code`` is judged with: the same for every code of a number (a live code
is sent again as it is), so ``SameContent`` holds a resend as the provider would."""

CODE_KEY: Final = "code"
NUMBER_CHECKS: Final = "code_checks"
IP_CHECKS: Final = "code_checks_ip"


@dataclass(frozen=True, slots=True)
class Issued:
    """What ``Guard.issue_code`` gives: the send ``decision`` (as ``check`` gives it) and the
    ``code`` to send, a string of digits when allowed, None when denied."""

    decision: Decision
    code: str | None


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """What ``Guard.check_code`` gives. ``ok`` when the code was right (it is then spent, and the
    number recorded as verified). Else ``reason``: ``wrong_code``, ``code_expired``, ``no_code``,
    ``check_attempts`` (the code is dead: too many wrong checks), ``too_many_checks`` (the wrong
    checks of this number or this client address are at their limit: nothing was compared), or
    ``backend_unavailable``. ``retry_after``: seconds until a limit frees a check (None if no
    limit refused). ``attempts_left``: wrong checks the code still takes (None with no code)."""

    ok: bool
    reason: str | None = None
    retry_after: float | None = None
    attempts_left: int | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class CodeRules:
    """How codes are made and checked: ``length`` digits (4 to 10), live ``ttl`` seconds, dead
    after ``max_attempts`` wrong checks; at most ``per_number`` wrong checks of a number and
    ``per_ip`` of a client address (IPv4 one by one, IPv6 by /64) across numbers, as rate
    strings (``"10/day"``), or None for no such limit. A check without ``ip=`` is held by the
    per-number limits alone (the adapters always give one)."""

    length: int = 6
    ttl: float = 600.0
    max_attempts: int = 5
    per_number: str | None = "10/day"
    per_ip: str | None = "20/hour"

    def __post_init__(self) -> None:
        if not isinstance(self.length, int) or not 4 <= self.length <= 10:
            raise ConfigError(f"code length must be 4 to 10 digits, not {self.length!r}")
        seconds("code ttl", self.ttl)
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ConfigError(f"code max_attempts must be at least 1, not {self.max_attempts!r}")
        for rate in (self.per_number, self.per_ip):
            if rate is not None:
                parse_rates(rate)

    def rates(self, which: str | None) -> tuple[tuple[int, float], ...]:
        return tuple((item.amount, float(item.get_expiry())) for item in parse_rates(which)) if which else ()


def code_rules(read: Settings) -> CodeRules:
    """The ``CodeRules`` of flat settings: ``CODE_LENGTH``, ``CODE_TTL``, ``CODE_ATTEMPTS``,
    ``CODE_CHECKS_PER_NUMBER`` and ``CODE_CHECKS_PER_IP`` (0 for no such limit)."""
    default = CodeRules()
    keys = ("CODE_LENGTH", "CODE_TTL", "CODE_ATTEMPTS", "CODE_CHECKS_PER_NUMBER", "CODE_CHECKS_PER_IP")
    with read.about(*keys):
        return CodeRules(
            read.integer("CODE_LENGTH", default.length),
            read.number("CODE_TTL", default.ttl),
            read.integer("CODE_ATTEMPTS", default.max_attempts),
            read.rates("CODE_CHECKS_PER_NUMBER", default.per_number or "0"),
            read.rates("CODE_CHECKS_PER_IP", default.per_ip or "0"),
        )


class Codes:
    """The rules, and the jobs they make: pure, as the planner is."""

    def __init__(self, rules: CodeRules, digest: Digest) -> None:
        self.rules, self.digest = rules, digest
        self._per_number = rules.rates(rules.per_number)
        self._per_ip = rules.rates(rules.per_ip)

    def code(self, phone_id: str, nonce: str) -> str:
        """The code of ``nonce`` for the number ``phone_id``: keyed BLAKE2b, as digits."""
        n = self.rules.length
        return str(int(self.digest.hash(f"code:{phone_id}:{nonce}"), 16) % 10**n).zfill(n)

    def hashed(self, phone_id: str, code: str) -> str:
        """What the backend keeps of ``code`` (and compares a guess's by)."""
        return self.digest.hash(f"guess:{phone_id}:{code}")

    def issue(self, phone_id: str, now: float, if_exempt: bool = False) -> Issue:
        """A new code for ``phone_id``, issued if the number has no live one."""
        nonce = secrets.token_hex(8)
        ttl = self.rules.ttl
        return Issue(
            key(CODE_KEY, phone_id), nonce, self.hashed(phone_id, self.code(phone_id, nonce)), now + ttl,
            now + 2 * ttl, self.rules.max_attempts, if_exempt,
        )  # fmt: skip

    def peek(self, phone_id: str, now: float) -> Job:
        """A job that reads the number's code, nothing taken (``Guard.status``)."""
        return Job(
            now, "", (), (), code=Guess(key(CODE_KEY, phone_id), "", self.rules.max_attempts, (), peek=True)
        )

    def usage(self, state: CodeState | None, now: float) -> list[Usage]:
        """The live code of ``state`` as ``Guard.status`` shows it (nothing if none is live)."""
        if state is None or state.status != "live":
            return []
        n = self.rules.max_attempts
        left = state.attempts_left
        return [Usage(CODE_KEY, n - left, n, left, None, "checks", max(now - state.issued_at, 0.0))]

    def result(self, out: Outcome, local: bool, retry_after: float) -> CodeCheck:
        """See ``result``."""
        return result(out, local, retry_after)

    def guess(self, code: object) -> str | None:
        """``code`` as typed, if it can be a code (``length`` ASCII digits, spaces around it
        dropped); None for anything else (a wrong guess all the same)."""
        if not isinstance(code, str):
            return None
        code = code.strip()
        if len(code) != self.rules.length or not code.isascii() or not code.isdigit():
            return None
        return code

    def check(self, attempt: Attempt, code: object, record: Record, token: str, now: float) -> Job:
        """The job of one check of ``code`` for ``attempt``'s number: the code's counters, the
        limits on wrong checks, and the verification ``record`` a right code writes."""
        phone_id = attempt.phone_id
        guess = self.guess(code)
        limits = [
            Counter(key(NUMBER_CHECKS, phone_id, f"{window:g}"), limit, now + window, window=window)
            for limit, window in self._per_number
        ]
        if attempt.ip is not None and self._per_ip:
            subject = self.digest(network(attempt.ip))
            limits += (
                Counter(key(IP_CHECKS, subject, f"{window:g}"), limit, now + window, window=window)
                for limit, window in self._per_ip
            )
        hashed = "" if guess is None else self.hashed(phone_id, guess)
        item = Guess(key(CODE_KEY, phone_id), hashed, self.rules.max_attempts, tuple(limits), record)
        return Job(now, token, (), (), code=item)


def result(out: Outcome, local: bool, retry_after: float) -> CodeCheck:
    """The CodeCheck a backend's answer ``out`` to a check gives; ``local`` when it came from
    the fail mode's in-process store (the backend down: a code it alone knew is not known)."""
    state = out.code
    if state is None:
        raise BackendError(f"no answer to a code's check in {out!r}")
    left = None if state.attempts_left < 0 else state.attempts_left
    if out.waits:
        return CodeCheck(False, TOO_MANY_CHECKS, max(out.waits), left)
    if state.status == OK:
        return CodeCheck(True, None, None, left)
    if not state.status or (local and state.status == NO_CODE):
        return CodeCheck(False, BACKEND_UNAVAILABLE, retry_after, None)
    return CodeCheck(False, state.status, None, left)


def network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The client network a wrong check counts under: an IPv4 address, an IPv6 /64."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return str(ip)
    return str(ipaddress.ip_network((ip, 64), strict=False))
