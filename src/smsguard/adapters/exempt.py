"""Requests a Gate lets through unjudged: the Gate's ``exempt_networks`` (client addresses or
networks: an office, a monitoring probe) and ``exempt`` (a callable given the request).

An exempt request's send is neither judged nor counted (no limit, no country list, no blacklist)
nor reported: the endpoint gets an allowed Decision whose ``policy`` says what exempted it
(``exempt_networks`` or ``exempt``) and whose reason is ``exempt``; under ``action="issue"`` the
code is issued all the same. A code's check (``action="verify"``) is never exempt: the code is
what proves the number. A callable that raises exempts nothing (the request is judged).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from smsguard.errors import ConfigError

if TYPE_CHECKING:
    from smsguard.adapters.incoming import Incoming

log = logging.getLogger("smsguard")

NETWORKS: Final = "exempt_networks"
CALLABLE: Final = "exempt"


class Exemption:
    """``networks`` (CIDRs or addresses) and ``when`` (a callable given the request)."""

    __slots__ = ("networks", "when")

    def __init__(self, networks: Iterable[str] = (), when: Callable[[Incoming], Any] | None = None) -> None:
        if isinstance(networks, str):
            networks = [networks]
        try:
            self.networks = tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)
        except (ValueError, AttributeError) as exc:
            raise ConfigError(f"exempt_networks: {exc} (CIDRs or addresses)") from None
        if when is not None and not callable(when):
            raise ConfigError("exempt must be a callable given the request")
        self.when = when

    def __bool__(self) -> bool:
        return bool(self.networks) or self.when is not None

    def of(
        self, request: Incoming, client: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    ) -> str | None:
        """What exempts ``request`` from the client address ``client`` (``NETWORKS`` or
        ``CALLABLE``), or None."""
        if client is not None and any(client in network for network in self.networks):
            return NETWORKS
        if self.when is not None:
            try:
                if self.when(request):
                    return CALLABLE
            except Exception as exc:
                log.warning("smsguard: the exempt callable failed on a request: %r", exc)
        return None
