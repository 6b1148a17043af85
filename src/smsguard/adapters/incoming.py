"""A request as every adapter hands it to its Gate, and where a Gate reads a value in it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple


class Incoming(NamedTuple):
    """A request as an adapter sees it: headers looked up by name in any case, the body read."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: str
    body: bytes
    peer: str | None
    """The socket peer's address; None where there is none (a unix socket)."""
    data: Mapping[str, Any] = MappingProxyType({})
    """The parsed body (JSON object or form) or, without a body, the query parameters;
    filled in by the Gate. An adapter that reads the fields itself (FastAPI's model) gives them
    here, once ``Gate.screen`` has passed the body."""


Field = str | Callable[[Incoming], Any] | None
"""Where a value comes from: a field name (JSON body, form body, or query string), a
callable given the Incoming request (return None when absent), or None (not used)."""
