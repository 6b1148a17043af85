"""Storage URLs, in the conventions of the ``limits`` library: which scheme, what each part must
be, and how a URL is shown in an error (never with its password).

Everything redis-py would take silently (``/abc`` as database 0) or refuse only at the first
command (a port that is not a number, ``?timeout=abc``) is a ConfigError here, when the guard
is built.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote, urlsplit

from smsguard.errors import ConfigError

SCHEMES: Final = {
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
    "redis+unix": "unix",
    "redis+cluster": "redis+cluster",
    "redis+sentinel": "redis+sentinel",
}
"""Each spelling of a Redis scheme (``valkey`` stands for ``redis`` in any), and redis-py's."""

EXAMPLES: Final = (
    "redis://localhost:6379/0, rediss://, unix:///run/redis.sock, "
    "redis+sentinel://host:26379/service_name, redis+cluster://host:7000,host:7001 "
    "(valkey for redis in any) or memory://"
)

_PASSWORD_IN_QUERY: Final = re.compile(r"(?i)([?&]password=)[^&]*")


def scheme(url: str) -> tuple[str, str]:
    """(scheme, url) in redis-py's spelling; a ConfigError naming the right forms for anything
    that is not a storage URL."""
    given = urlsplit(url).scheme.lower() if "://" in url else ""
    canonical = SCHEMES.get(given.replace("valkey", "redis", 1))
    if canonical is None:
        raise ConfigError(f"{shown(url)!r} is not a storage URL: use one such as {EXAMPLES}")
    return canonical, canonical + url[len(given) :]


def shown(url: str) -> str:
    """``url`` as an error may show it: any password (``user:password@``, ``?password=``)
    as ``***``. Malformed URLs too: a misspelt scheme does not make a password public."""
    at = url.rfind("@")
    if at >= 0:
        slashes = url.find("//", 0, at)
        start = slashes + 2 if slashes >= 0 else 0
        user, colon, _ = url[start:at].partition(":")
        url = url[:start] + (f"{user}:***" if colon else "***") + url[at:]
    return _PASSWORD_IN_QUERY.sub(r"\1***", url)


def check_single(url: str) -> None:
    """A ConfigError for a single-node URL (``redis://``, ``rediss://``, ``unix://``, in
    redis-py's spelling) whose port or database is not a number. redis-py itself reads the
    query options (see ``RedisBackend.from_url``)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return
    location = parts.netloc.rpartition("@")[2]
    try:
        parts.port  # noqa: B018 (urlsplit reads the port only when asked, and raises then)
    except ValueError:
        raise ConfigError(f"{shown(url)}: {location!r} is not host:port") from None
    database = unquote(parts.path)[1:]
    if database and not database.isdigit():
        raise ConfigError(
            f"{shown(url)}: {database!r} is not a database number: end the URL with one, as in "
            "redis://localhost:6379/0"
        )


def locations(url: str) -> tuple[str | None, list[tuple[str, int]], str]:
    """(password, [(host, port)], path) of a Sentinel or Cluster URL, which may list several
    hosts. They take no query: options go to ``RedisBackend.from_url(url, **options)``."""
    rest = url.split("://", 1)[1]
    if "?" in rest:
        raise ConfigError(
            f"{shown(url)}: a Sentinel or Cluster URL takes no ?options: give them to "
            "RedisBackend.from_url(url, socket_timeout=...)"
        )
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[-1]) or None
    hosts = []
    for location in netloc.split(","):
        host, _, port = location.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"{shown(url)}: {location!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    return password, hosts, path
