"""Flat settings: environment variables, a Flask ``app.config``, a TOML table, Django's
``SMSGUARD`` dict.

Each value may be given as the Python value or as the string an environment variable holds
(``"100"``, ``"false"``, ``"a,b"``); a value that cannot be read is a ConfigError that names
the key and the value. Every key under the prefix must be one of ``KEYS``: a misspelt one
(``SMSGUARD_TRUSTED_PROXY``) would otherwise leave its default in force without a word, so it
is a ConfigError naming the nearest known key.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from smsguard.errors import ConfigError

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

GUARD: Final = "guard"
REQUEST: Final = "request"
ADAPTER: Final = "adapter"
DJANGO: Final = "django"

KEYS: Final[Mapping[str, str]] = {
    # The guard (Guard.from_settings, settings_policies); the README's settings list.
    "STORAGE_URI": GUARD,
    "KEY_PREFIX": GUARD,
    "SECRET": GUARD,
    "DEFAULT_REGION": GUARD,
    "FAIL_MODE": GUARD,
    "RETRY_INTERVAL": GUARD,
    "STATS": GUARD,
    "STATS_DAYS": GUARD,
    "STATS_INTERVAL": GUARD,
    "DRY_RUN": GUARD,
    "DENY_CACHE": GUARD,
    "SHADOW": GUARD,
    "SUSPENDABLE": GUARD,
    "WHITELIST": GUARD,
    "SHARED_WHITELIST": GUARD,
    "BLACKLIST": GUARD,
    "BLACKLIST_PREFIXES": GUARD,
    "SHARED_BLACKLIST": GUARD,
    "SAME_CONTENT_WINDOW": GUARD,
    "SAME_CONTENT_SKIP_MISSING": GUARD,
    "DAILY_CAP": GUARD,
    "TIMEZONE": GUARD,
    "PHONE_RATE": GUARD,
    "IP_RATE": GUARD,
    "IPV4_PREFIX": GUARD,
    "IPV6_PREFIX": GUARD,
    "IP_SKIP_MISSING": GUARD,
    "CODE_LENGTH": GUARD,
    "CODE_TTL": GUARD,
    "CODE_ATTEMPTS": GUARD,
    "CODE_CHECKS_PER_NUMBER": GUARD,
    "CODE_CHECKS_PER_IP": GUARD,
    # The pumping defences (smsguard.pumping): where codes go, what they cost, the recommended set.
    "COUNTRIES": GUARD,
    "COUNTRY_CAPS": GUARD,
    "DAILY_BUDGET": GUARD,
    "DAILY_MESSAGES": GUARD,
    "PRICES": GUARD,
    "DEFAULT_PRICE": GUARD,
    "BUDGET_ALARM": GUARD,
    "RECOMMENDED": GUARD,
    "UNVERIFIED_CHALLENGE": GUARD,
    "LEARN_UNTIL": GUARD,
    # The request side, every adapter (Gate.settings).
    "PHONE_FIELD": REQUEST,
    "CONTENT_FIELD": REQUEST,
    "CODE_FIELD": REQUEST,
    "TRUSTED_PROXIES": REQUEST,
    "PROXY_HEADER": REQUEST,
    "MAX_BODY": REQUEST,
    "BODY_TIMEOUT": REQUEST,
    "REFUND_ON": REQUEST,
    "EXEMPT_NETWORKS": REQUEST,
    "RATE_HEADERS": REQUEST,
    # The Flask and Django adapters.
    "ENABLED": ADAPTER,
    # Django's SMSGUARD dict alone: what code would say elsewhere, as dotted paths.
    "GUARD": DJANGO,
    "ROUTES": DJANGO,
    "PHONE": DJANGO,
    "CHALLENGE": DJANGO,
    "RENDER": DJANGO,
    "EXEMPT": DJANGO,
    "CACHE": DJANGO,
}
"""Every setting, and who reads it: the one list of keys."""

FLAT: Final = frozenset(name for name, where in KEYS.items() if where != DJANGO)
"""The keys of flat settings: environment variables, a Flask ``app.config``, a TOML table."""


class Settings:
    """Typed reads of ``values[prefix + NAME]``; an absent or None value gives the default.

    Every key of ``values`` under ``prefix`` must be one of ``known`` (a ConfigError naming the
    nearest known key otherwise), and every name read must be too (a KeyError: a bug). By
    default that is ``FLAT``, and with no prefix (Django's dict) every key of ``KEYS``."""

    def __init__(
        self, values: Mapping[str, Any], prefix: str = "SMSGUARD_", *, known: Collection[str] | None = None
    ) -> None:
        if known is None:
            known = FLAT if prefix else KEYS.keys()
        self.values, self.prefix, self.known = values, prefix, known
        for key in values:
            if isinstance(key, str) and key.startswith(prefix) and key[len(prefix) :] not in known:
                raise ConfigError(self._unknown(key[len(prefix) :]))

    def key(self, name: str) -> str:
        """How the user spells the key ``name``: ``SMSGUARD_DAILY_CAP``, or ``SMSGUARD['DAILY_CAP']``
        in Django's dict (no prefix)."""
        return self.prefix + name if self.prefix else f"SMSGUARD[{name!r}]"

    def _unknown(self, name: str) -> str:
        if name in KEYS:
            return (
                f"{self.key(name)} is read from Django's SMSGUARD dict alone: elsewhere, give it in "
                "code (routes=, phone=, challenge=, render=, guard=)"
            )
        near = difflib.get_close_matches(name, self.known, n=1, cutoff=0.6)
        if near:
            return f"{self.key(name)} is not a setting: did you mean {self.key(near[0])}?"
        return f"{self.key(name)} is not a setting; the settings are " + ", ".join(
            self.key(n) for n in sorted(self.known)
        )

    def __contains__(self, name: str) -> bool:
        return self._value(name) is not None

    def _value(self, name: str) -> Any:
        if name not in self.known:
            raise KeyError(f"{name} is not in smsguard.settings.KEYS")
        return self.values.get(self.prefix + name)

    @contextmanager
    def about(self, *names: str) -> Iterator[None]:
        """A ConfigError raised within names the keys among ``names`` that are set, and their
        values: what a policy built from them refused."""
        try:
            yield
        except ConfigError as exc:
            given = [f"{self.key(n)}={self._value(n)!r}" for n in names if n in self]
            if not given or str(exc).startswith(tuple(given)):  # named already (a value not read)
                raise
            raise ConfigError(f"{', '.join(given)}: {exc}") from None

    def _read(self, name: str, default: T, what: str, convert: Callable[[Any], T]) -> T:
        value = self._value(name)
        if value is None:
            return default
        try:
            return convert(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.key(name)}={value!r} is not {what}") from None

    def string(self, name: str, default: str) -> str:
        return self._read(name, default, "a string", _string)

    def optional(self, name: str) -> str | None:
        """A string, or None when absent or empty."""
        return self._read(name, None, "a string", _string) or None

    def integer(self, name: str, default: int) -> int:
        return self._read(name, default, "an integer", _integer)

    def number(self, name: str, default: float) -> float:
        return self._read(name, default, "a number", _number)

    def boolean(self, name: str, default: bool) -> bool:
        return self._read(name, default, "a boolean (true/false, 1/0, yes/no, on/off)", _boolean)

    def strings(self, name: str, default: Iterable[str] = ()) -> list[str]:
        """A list: ``["a", "b"]``, or ``"a,b"`` from an environment variable."""
        return self._read(name, list(default), "a list of strings (or 'a,b')", _strings)

    def integers(self, name: str, default: Iterable[int] = ()) -> list[int]:
        """A list of integers: ``[502, 503]`` or ``"502,503"``."""
        return self._read(name, list(default), "a list of integers (or '502,503')", _integers)

    def number_table(self, name: str) -> dict[str, float] | None:
        """Numbers by name: ``{"US": 0.0083}``, or ``"US=0.0083,CA=0.0083"`` from an environment
        variable; None when absent."""
        return self._read(
            name, None, "a table of numbers ({'US': 0.01} or 'US=0.01,CA=0.01')", _table(_number)
        )

    def integer_table(self, name: str) -> dict[str, int] | None:
        """Integers by name: ``{"NG": 100}``, or ``"NG=100,ID=50"``; None when absent."""
        return self._read(name, None, "a table of integers ({'NG': 100} or 'NG=100,ID=50')", _table(_integer))

    def rates(self, name: str, default: str) -> str | None:
        """A rate string (``"5/minute;20/hour"``), or None for off: ``0``, ``""``, ``false``."""
        what = "a rate string such as '5/minute;20/hour' (0 for off)"
        return self._read(name, _rates(default), what, _rates)

    def imported(self, name: str, hint: str = "") -> Any:
        """The object a dotted path names (``"myproject.sms.passed"``), or None when absent."""
        path = self._value(name)
        return None if path is None else imported(path, self.key(name), hint)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value.strip()


def _integer(value: Any) -> int:
    if isinstance(value, (bool, float)):  # True is 1 and 2.5 truncates: refuse both
        raise TypeError(value)
    return int(value.strip()) if isinstance(value, str) else int(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    return float(value.strip()) if isinstance(value, str) else float(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
    raise ValueError(value)


def _strings(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise TypeError(value)
    return [item.strip() for item in items if item.strip()]


def _table(convert: Callable[[Any], T]) -> Callable[[Any], dict[str, T]]:
    def read(value: Any) -> dict[str, T]:
        if isinstance(value, str):
            pairs = [item.partition("=") for item in _strings(value)]
            if not all(sign for _, sign, _ in pairs):
                raise ValueError(value)
            value = {name: number for name, _, number in pairs}
        if not isinstance(value, Mapping):
            raise TypeError(value)
        return {_string(name): convert(number) for name, number in value.items()}

    return read


def _rates(value: Any) -> str | None:
    if value is False or (isinstance(value, (int, str)) and str(value).strip().lower() in _FALSE):
        return None
    return _string(value)


def imported(path: Any, where: str, hint: str = "") -> Any:
    """The object ``path`` names: ``"module.attribute"`` or ``"module:attribute"`` (an object
    given as such is taken as it is); a ConfigError naming ``where`` (the key or option), and
    ending with ``hint``, if it cannot be imported."""
    if not isinstance(path, str):
        return path
    module, colon, attribute = path.partition(":")
    if not colon:
        module, _, attribute = path.rpartition(".")
    if not module or not attribute:
        raise ConfigError(f"{where} = {path!r} is not a dotted path to an object (module.name){hint}")
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"{where} = {path!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(f"{where} = {path!r}: {module} has no {attribute!r}") from None
    return found


def _integers(value: Any) -> list[int]:
    if isinstance(value, int):
        return [_integer(value)]
    return [_integer(item) for item in (_strings(value) if isinstance(value, str) else value)]
