"""Flat settings: environment variables, a Flask ``app.config``, a TOML table.

Each value may be given as the Python value or as the string an environment variable holds
(``"100"``, ``"false"``, ``"a,b"``); a value that cannot be read is a ConfigError that names
the key and the value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from smsguard.errors import ConfigError

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class Settings:
    """Typed reads of ``values[prefix + NAME]``; an absent or None value gives the default."""

    def __init__(self, values: Mapping[str, Any], prefix: str = "SMSGUARD_") -> None:
        self.values, self.prefix = values, prefix

    def __contains__(self, name: str) -> bool:
        return self.values.get(self.prefix + name) is not None

    def _read(self, name: str, default: T, what: str, convert: Callable[[Any], T]) -> T:
        value = self.values.get(self.prefix + name)
        if value is None:
            return default
        try:
            return convert(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{self.prefix}{name}={value!r} is not {what}") from None

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


def _integers(value: Any) -> list[int]:
    if isinstance(value, int):
        return [_integer(value)]
    return [_integer(item) for item in (_strings(value) if isinstance(value, str) else value)]
