"""Reading a request's fields: its body parsed by content type (JSON or a urlencoded form), or
its query without a body, and the phone, content or code in them. A watched field (the ones a
Gate counts by) given twice is refused, as is a form that reads as JSON: the endpoint might read
another copy than the guard counted."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

from smsguard.adapters.incoming import Field, Incoming
from smsguard.errors import ConfigError, InvalidInput

log = logging.getLogger("smsguard")


class Fields:
    """Where a Gate's requests give the ``phone``, and the ``other`` value its ``action`` reads
    (the code of ``"verify"``, the content of ``"check"``; None: no other). The fields named
    there may appear once in all; one field named for both is a ConfigError."""

    __slots__ = ("_quoted", "_watched", "other", "phone", "verify")

    def __init__(self, phone: Field, other: Field, action: str) -> None:
        self.phone, self.other, self.verify = phone, other, action == "verify"
        self._watched = tuple(name for name in (phone, other) if isinstance(name, str))
        if len(set(self._watched)) < len(self._watched):
            named = " and ".join(map(repr, self._watched))
            raise ConfigError(f"a {action} route reads {named}: one field cannot hold both")
        self._quoted = tuple(json.dumps(name).encode() for name in self._watched)

    def read(self, request: Incoming) -> tuple[Mapping[str, Any], str, str | None]:
        """The request's fields (``request.data`` where the adapter read them), its phone, and
        its code or content; an InvalidInput when the phone or a code's check's code is
        missing or not a string."""
        data = request.data or self.data(request)
        phone = self.value(self.phone, request, data, "phone")
        if phone is None:
            raise InvalidInput(f"missing phone number: send it as {self.name(self.phone)}")
        if self.other is None:
            return data, phone, None
        what = "code" if self.verify else "content"
        other = self.value(self.other, request, data, what)
        if other is None and self.verify:
            raise InvalidInput(f"missing code: send it as {self.name(self.other)}")
        return data, phone, other

    @staticmethod
    def value(source: Field, request: Incoming, data: Mapping[str, Any], what: str) -> str | None:
        """The ``what`` (phone, content, code) that ``source`` names in ``data``, or None."""
        if source is None:
            return None
        if callable(source):
            try:
                value = source(request._replace(data=data))
            except Exception as exc:  # the callable met a request it did not expect: the client's
                log.debug("smsguard: the %s callable failed on a request: %r", what, exc)
                raise InvalidInput(f"cannot read the {what} from this request") from None
        else:
            value = data.get(source)
        if value is None or isinstance(value, str):
            return value
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")

    @staticmethod
    def name(source: Field) -> str:
        """How a message names ``source`` to the client."""
        return repr(source) if isinstance(source, str) else "the configured field"

    def data(self, request: Incoming) -> Mapping[str, Any]:
        """The request's fields: its body parsed by content type, or without a body its query.
        A watched field (phone, content) may appear once in all."""
        watched = self._watched
        if not request.body:
            return _form(request.query, watched)
        if watched and request.query and any(n in watched for n, _ in _pairs(request.query)):
            raise InvalidInput(
                "a phone, content or code field is in both the query and the body: send it once"
            )
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind == "application/json" or kind.endswith("+json"):
            body = request.body
            # A watched name given twice needs its name twice in the text (or an escape, such as
            # "\u0070hone"): only then is the object parsed pair by pair.
            twice = b"\\u" in body
            for name in self._quoted:
                twice = twice or body.count(name) > 1
            try:
                data = json.loads(body, object_pairs_hook=self._unique) if twice else json.loads(body)
            except _Duplicate as exc:
                raise InvalidInput(f"field {exc} is given more than once: send it once") from None
            except (ValueError, RecursionError):
                raise InvalidInput("the body is not valid JSON") from None
            if not isinstance(data, dict):
                raise InvalidInput("the JSON body must be an object")
            return data
        if kind == "application/x-www-form-urlencoded":
            if _reads_as_json(request.body):
                # A view that reads JSON whatever the type would text another number than the
                # form's: a body must be one thing.
                raise InvalidInput("the form body reads as JSON: send JSON as application/json")
            try:
                return _form(request.body.decode(), watched)
            except UnicodeDecodeError:
                raise InvalidInput("the form body is not UTF-8") from None
        raise InvalidInput(
            f"unsupported content type {kind or 'none'!r}: send application/json or a urlencoded form"
        )

    def _unique(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """A JSON object, refusing a watched key given twice (``json`` would keep the last)."""
        data = dict(pairs)
        if len(data) != len(pairs):
            names = [name for name, _ in pairs]
            for name in self._watched:
                if names.count(name) > 1:
                    raise _Duplicate(repr(name))
        return data


class _Duplicate(ValueError):
    pass


def _pairs(text: str) -> list[tuple[str, str]]:
    """``text`` (a query or urlencoded body) as its (name, value) pairs, as ``parse_qsl``
    reads them."""
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True)
    # Nothing to unquote: split it here, which is the same and a third of parse_qsl's cost.
    pairs = []
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            pairs.append((name, value))
    return pairs


def _form(text: str, watched: Sequence[str] = ()) -> dict[str, str]:
    """``text`` as a dict; a ``watched`` name given twice is an InvalidInput."""
    pairs = _pairs(text)
    fields = dict(pairs)
    if len(fields) != len(pairs):
        names = [name for name, _ in pairs]
        for name in watched:
            if names.count(name) > 1:
                raise InvalidInput(f"field {name!r} is given more than once: send it once")
    return fields


# What a JSON text other than an object or an array starts with (NaN and Infinity: Python's json).
_JSON_SCALAR: Final = frozenset('"-0123456789tfnNI')
_JSON_WORDS: Final = frozenset(b"%c" % c for c in b"tfnNI")


def _reads_as_json(body: bytes) -> bool:
    """Whether ``body`` reads as JSON to ``json.loads(body)``, as a view that reads JSON whatever
    the type does (it skips a BOM and reads UTF-16 and UTF-32 too), or looks like it: an object
    or an array, valid or not, since a lenient parser may read it."""
    first = body[:1]
    if first.isalpha() and first not in _JSON_WORDS:
        return False  # a field name, as a form starts; in any encoding json reads, the first character
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass").lstrip(" \t\n\r")
    except UnicodeDecodeError:
        return False
    first_char = text[:1]
    if first_char in ("{", "["):
        return True
    if first_char not in _JSON_SCALAR:
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
