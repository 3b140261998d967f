"""Who the client is: the socket peer, or, behind a trusted proxy, the address the proxy vouches for.

A peer inside ``[gateway.analytics] trusted_proxies`` (load balancers, the playground) may name the
client in a header; the first of ``CLIENT_HEADERS`` that holds a valid address wins. In
``X-Forwarded-For`` each proxy appends the address it saw, so the client is the right-most address
that is not itself a trusted proxy (anything left of it may be forged by the client).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

__all__ = ["CLIENT_HEADERS", "ClientAddress"]

#: The headers a trusted proxy may name the client in, in the order they are believed.
CLIENT_HEADERS = (
    "x-playground-client-ip",
    "x-original-client-ip",
    "x-forwarded-for",
    "x-real-ip",
    "cf-connecting-ip",
    "true-client-ip",
)
#: The same, as WSGI environ keys (PERF: one dict lookup each, no header-name folding per request).
_ENVIRON_KEYS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in CLIENT_HEADERS)
#: Distinct peers remembered as trusted or not (a gateway sees few: its load balancers).
_PEER_CACHE = 4096

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(value: str) -> _Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[v6]:port"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "v4:port"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """Finds a request's client address and the proxy chain it came through."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in trusted_proxies)
        self._peers: dict[str, bool] = {}

    def _trusted(self, address: _Address) -> bool:
        return any(address in network for network in self._networks)

    def peer_trusted(self, peer: str) -> bool:
        try:
            return self._peers[peer]
        except KeyError:
            address = _parse(peer)
            trusted = address is not None and self._trusted(address)
            if len(self._peers) >= _PEER_CACHE:
                self._peers.clear()
            self._peers[peer] = trusted
            return trusted

    def resolve(self, peer: str, environ: Mapping[str, str]) -> tuple[str, str]:
        """``(client_ip, proxy_chain)`` from the WSGI ``environ``. The chain is the forwarded-for
        addresses and the peer, comma-separated, or empty for a direct client."""
        if not self._networks or not self.peer_trusted(peer):
            return peer, ""
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        chain = f"{forwarded}, {peer}" if forwarded else peer
        for name, key in _ENVIRON_KEYS:
            value = environ.get(key)
            if not value:
                continue
            if name == "x-forwarded-for":
                found = self._from_forwarded_for(value)
            else:
                found = _parse(value)
            if found is not None:
                return str(found), chain
        return peer, chain

    def _from_forwarded_for(self, value: str) -> _Address | None:
        addresses = [a for a in (_parse(part) for part in value.split(",")) if a is not None]
        for address in reversed(addresses):
            if not self._trusted(address):
                return address
        # Every hop is a trusted proxy: the left-most is the nearest thing to a client there is.
        return addresses[0] if addresses else None
