"""Phone numbers: one number, one E.164 string, one keyed hash."""

from __future__ import annotations

import functools
import hashlib
import os
import secrets
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final, NamedTuple

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType, ValidationResult, carrier

from smsguard.errors import ConfigError, InvalidPhone

MAX_INPUT = 64
"""Longer input is refused before parsing: no real number, however formatted, is that long."""

_WHY_UNPARSABLE = {
    NumberParseException.INVALID_COUNTRY_CODE: "no country code, or an unknown one",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_WHY_IMPOSSIBLE = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong length for its country",
    ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number: add the area code",
}


NUMBER_TYPES: dict[int, str] = {
    getattr(PhoneNumberType, name): name.lower()
    for name in (
        "FIXED_LINE",
        "MOBILE",
        "FIXED_LINE_OR_MOBILE",
        "TOLL_FREE",
        "PREMIUM_RATE",
        "SHARED_COST",
        "VOIP",
        "PERSONAL_NUMBER",
        "PAGER",
        "UAN",
        "VOICEMAIL",
        "UNKNOWN",
    )
}
"""phonenumbers' number types, by the names ``Attempt.number_type`` uses."""

# Separators people type, and full-width digits and plus (as typed on CJK keyboards).
_CANONICAL = str.maketrans(
    {" ": None, "-": None, "(": None, ")": None, ".": None, "\u3000": None, "\uff0b": "+"}
    | {chr(0xFF10 + d): str(d) for d in range(10)}
)


def canonical(raw: str) -> str:
    """``raw`` without separators, as a cache key: ``"+86 138-0013-8000"`` -> ``"+8613800138000"``.

    Only a result of ASCII digits (after an optional ``+``) is returned; anything else (an
    extension, letters, other scripts) comes back unchanged for phonenumbers to read whole.
    """
    if not isinstance(raw, str):
        return raw
    digits = raw[1:] if raw[:1] == "+" else raw
    if digits.isdecimal() and digits.isascii():
        return raw  # already canonical, as most input is: skip the translation
    key = raw.replace(" ", "").replace("-", "")  # the usual separators, a third of translate's cost
    digits = key[1:] if key[:1] == "+" else key
    if digits.isdecimal() and digits.isascii():
        return key
    key = raw.translate(_CANONICAL)
    digits = key[1:] if key[:1] == "+" else key
    return key if digits.isdecimal() and digits.isascii() else raw


def check_region(region: str | None) -> str | None:
    """Return ``region`` upper-cased if phonenumbers knows it, else raise ConfigError."""
    if region is None:
        return None
    code = region.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"unknown region {region!r}: use an ISO 3166 code such as 'CN' or 'US'")
    return code


NO_COUNTRY: Final = "001"
"""The region of a number in no country (a satellite phone's +881): phonenumbers' own code for
it. Every part that names a number's country (policies, statistics) uses it."""


_new = tuple.__new__


class Number(NamedTuple):
    """A phone number as the guard knows it (``identify``)."""

    e164: str
    """``+8613800138000``."""
    phone_id: str
    """The keyed hash it is stored under ("" when no hash was asked for)."""
    region: str
    """Its ISO region (``"CN"``; ``"AI"`` for +1 264), or ``NO_COUNTRY``."""
    number_type: str | None = None
    """``"mobile"``, ``"premium_rate"``, ``"voip"``... (phonenumbers' types, in lower case), where
    ``details`` were asked for."""
    network: str | None = None
    """Its operator in phonenumbers' offline carrier data (``"China Mobile"``), else its country
    and area code (``"+1 202"``), else its country code; where ``details`` were asked for."""


def normalize(raw: str, region: str | None = None) -> str:
    """Return ``raw`` as E.164 (``+8613800138000``) or raise InvalidPhone saying why.

    Spaces, dashes, brackets, the ``00`` (or other national) international prefix and
    full-width digits are all accepted; ``region`` reads numbers typed without a country code.
    """
    return PARSER.parse(raw, region)[0]


def identify(
    raw: str,
    region: str | None = None,
    *,
    digest: Callable[[str], str] | None = None,
    details: bool = False,
) -> Number:
    """The ``Number`` of ``raw`` (InvalidPhone as ``normalize``): hashed with ``digest`` where
    given, with its type and network if ``details``."""
    return PARSER.identify(raw, region, digest=digest, details=details)


class Parser:
    """The way from a number as typed to a ``Number``, through one library: ``phonenumbers``,
    or ``rphonenumbers`` (the ``fast`` extra: the same libphonenumber rules and API, in Rust,
    about a tenth of the cost). Both give the same answers (tests/test_phone.py compares them
    over every region and number type); the carrier data is phonenumbers' in both.
    """

    def __init__(self, lib: ModuleType) -> None:
        self.lib = lib
        self.name: str = lib.__name__
        self._error = lib.NumberParseException
        self._parse = lib.parse
        self._is_valid = lib.is_valid_number
        self._format = lib.format_number
        self._region_of = lib.region_code_for_number
        self._type_of = lib.number_type
        self._e164 = lib.PhoneNumberFormat.E164
        # A country code of one region names it (86 is CN): no call needed for most numbers.
        self._only_region = {
            code: regions[0] for code, regions in lib.COUNTRY_CODE_TO_REGION_CODE.items() if len(regions) == 1
        }

    def parse(self, raw: str, region: str | None) -> tuple[str, str, Any]:
        """(E.164, region, the library's number object); raises InvalidPhone saying why."""
        if not isinstance(raw, str):
            raise InvalidPhone(f"a phone number must be a string, not {type(raw).__name__}")
        if len(raw) > MAX_INPUT:
            raise InvalidPhone(f"{raw[:20]!r}... is not a valid number: longer than {MAX_INPUT} chars")
        try:
            number = self._parse(raw, region)
        except self._error as exc:
            why = _WHY_UNPARSABLE.get(exc.error_type, "unparsable")
            where = f" for region {region}" if region else ""
            raise InvalidPhone(f"{raw!r} is not a valid number{where}: {why}") from None
        if not self._is_valid(number):
            possible = self.lib.is_possible_number_with_reason(number)
            why = _WHY_IMPOSSIBLE.get(possible, "no such number range")
            where = f" for region {region}" if region else ""
            raise InvalidPhone(f"{raw!r} is not a valid number{where}: {why}")
        found = self._only_region.get(number.country_code) or self._region_of(number) or NO_COUNTRY
        return self._format(number, self._e164), found, number

    def identify(
        self,
        raw: str,
        region: str | None = None,
        *,
        digest: Callable[[str], str] | None = None,
        details: bool = False,
    ) -> Number:
        """``identify`` through this library."""
        e164, found, number = self.parse(raw, region)
        phone_id = digest(e164) if digest is not None else ""
        if not details:
            return _new(Number, (e164, phone_id, found, None, None))  # Number(e164, phone_id, found), cheaper
        kind = NUMBER_TYPES.get(self._type_of(number), "unknown")
        network = carrier.name_for_valid_number(number, "en")
        if not network:
            lib = self.lib
            national = lib.national_significant_number(number)
            area = lib.length_of_geographical_area_code(number)
            network = f"+{number.country_code} {national[:area]}" if area else f"+{number.country_code}"
        return Number(e164, phone_id, found, kind, network)


def _library() -> ModuleType:
    """rphonenumbers where installed (the ``fast`` extra), unless ``$SMSGUARD_PARSER`` says
    ``phonenumbers``; else phonenumbers."""
    if os.environ.get("SMSGUARD_PARSER", "").strip().lower() == "phonenumbers":
        return phonenumbers
    try:
        import rphonenumbers
    except ImportError:
        return phonenumbers
    return rphonenumbers  # type: ignore[no-any-return]


PARSER: Final = Parser(_library())
"""The parser every guard uses, chosen once at import: ``PARSER.name`` says which."""


class Digest:
    """Keyed hash for storage keys, so no plain number or content reaches a backend.

    Keyed BLAKE2b is a MAC in its own right (RFC 7693), so it needs no HMAC wrapping, and
    it is about twice as fast. The content is keyed too: a verification text has so few
    possible values that a plain hash of it could be reversed by trying them all.
    """

    __slots__ = ("_cached", "_keyed", "generated")

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if not raw:
            raise ConfigError("the hashing secret must not be empty")
        key = hashlib.blake2b(raw, digest_size=32, person=b"smsguard").digest()
        self.generated = False
        """True for a random secret made at start (``from_settings`` given none)."""
        self._keyed = hashlib.blake2b(key=key, digest_size=12)  # copied per hash: a third cheaper than keying
        # Contents and client networks repeat far more often than not: cache their hashes.
        self._cached = functools.lru_cache(maxsize=4096)(self.hash)

    def __call__(self, text: str) -> str:
        # Long texts (a content field a client filled) are hashed but not kept in the cache.
        return self._cached(text) if len(text) <= 256 else self.hash(text)

    def hash(self, text: str) -> str:
        """The keyed hash of ``text``, as 24 hex digits."""
        h = self._keyed.copy()
        # surrogatepass: a lone surrogate (valid in JSON, "\ud800") is hashed, not a crash.
        h.update(text.encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    @classmethod
    def from_settings(cls, secret: str | bytes | None, *, shared: bool) -> Digest:
        """The secret given, else ``$SMSGUARD_SECRET``, else (in-process backends only) a random one."""
        secret = secret or os.environ.get("SMSGUARD_SECRET")
        if secret:
            return cls(secret)
        if shared:
            raise ConfigError(
                "a shared backend needs the same secret in every worker: "
                "pass Guard(secret=...) or set SMSGUARD_SECRET"
            )
        made = cls(secrets.token_bytes(32))
        made.generated = True
        return made
