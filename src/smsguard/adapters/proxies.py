"""Who a request's client is: the socket peer, unless it is a trusted proxy, then the hop the
proxy's one header names (``X-Forwarded-For``, RFC 7239 ``Forwarded``, or a single-address
one such as ``X-Real-IP``). No other header is read: a client's own would be believed."""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final

from smsguard.adapters.incoming import Incoming
from smsguard.errors import ConfigError

log = logging.getLogger("smsguard")

UNIX: Final = "unix"
"""In ``trusted_proxies``: a peer on a unix socket (no address) is the trusted proxy."""
TEST_PEER: Final = "testclient"
"""The peer Starlette's ``TestClient(app)`` names, which is no address: read as 127.0.0.1 (the
peer httpx's ASGI transport gives), as a client on this host. No server names it."""
LOOPBACK: Final = ipaddress.ip_address("127.0.0.1")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header's name (RFC 9110's token)."""


class Proxies:
    """The Gate's ``trusted_proxies`` (CIDRs, and ``"unix"``) and ``proxy_header``."""

    __slots__ = ("_proxy_said", "proxy_header", "trust_unix", "trusted")

    def __init__(self, trusted_proxies: Iterable[str], proxy_header: str) -> None:
        if isinstance(trusted_proxies, str):
            trusted_proxies = [trusted_proxies]
        proxies = [p.strip() for p in trusted_proxies]
        self.trust_unix = UNIX in proxies
        try:
            self.trusted = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in proxies if cidr != UNIX)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc} (CIDRs, or 'unix' for a unix socket)") from None
        if not (isinstance(proxy_header, str) and _HEADER_NAME.fullmatch(proxy_header.strip())):
            raise ConfigError(
                f"proxy_header must name a header, such as 'x-forwarded-for', not {proxy_header!r}"
            )
        self.proxy_header = proxy_header.strip().lower()
        self._proxy_said = False

    @property
    def any(self) -> bool:
        """Whether any proxy is trusted (a unix socket's included)."""
        return bool(self.trusted or self.trust_unix)

    def client_ip(self, request: Incoming) -> str | None:
        """The socket peer, unless it is a trusted proxy: then the right-most hop of
        ``proxy_header`` that is not a trusted proxy itself."""
        client = self.client(request)
        return None if client is None else str(client)

    def client(self, request: Incoming) -> Address | None:
        """``client_ip`` as an address object."""
        peer = LOOPBACK if request.peer == TEST_PEER else _address(request.peer)
        if peer is None:
            if not (self.trust_unix and request.peer is None):
                return None
        elif not self.trusted:
            if not self._proxy_said and not self.trust_unix and request.headers.get(self.proxy_header):
                self._untrusted_proxy(peer)
            return peer
        elif not self._trusted(peer):
            return peer
        client = peer
        for hop in reversed(_hops(request.headers, self.proxy_header)):
            address = _address(hop)
            if address is None:  # garbage in the chain: stop at the last hop we could read
                break
            client = address
            if not self._trusted(address):
                break
        return client

    def _untrusted_proxy(self, peer: Address) -> None:
        """Say once that a forwarding header arrives while no proxy is trusted (W004 of
        ``smsguard.checks``): behind a proxy, every client would count as the proxy."""
        self._proxy_said = True
        log.warning(
            "smsguard: a request from %s carries a %s header, but no proxy is trusted: if the app "
            "is behind a proxy, every client has the proxy's address and IPThrottle limits them all "
            "as one. Set SMSGUARD_TRUSTED_PROXIES (trusted_proxies=) to the proxy's addresses; a "
            "header from anyone else is ignored, as it is now.",
            peer,
            self.proxy_header,
        )

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)


def _address(text: str | None) -> Address | None:
    """An address from a peer or a forwarded hop (``1.2.3.4:80``, ``"[2001:db8::1]:443"``)."""
    # No address is longer than this (an IPv6 one in brackets, with a zone and a port, quoted):
    # longer text is refused before the cache, so a client cannot fill it with big strings.
    if not text or len(text) > 72:
        return None
    return _parse_address(text)


@functools.lru_cache(maxsize=4096)  # peers and proxies repeat: parse each once
def _parse_address(text: str) -> Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _hops(headers: Mapping[str, str], name: str) -> list[str]:
    """The client hops in header ``name``, left to right: the ``for=`` of ``Forwarded``, or a
    comma-separated list (``X-Forwarded-For``; a single address is a list of one)."""
    value = headers.get(name, "")
    if name != "forwarded":
        return [hop for hop in value.split(",") if hop.strip()]
    hops = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, hop = pair.strip().partition("=")
            if key.lower() == "for":
                hops.append(hop)
    return hops
