"""The one upstream HTTP client interface every provider sends through, and the factory that picks its library.

Two implementations, chosen by ``[gateway] upstream_client``: urllib3 (``http_urllib3``) and
geventhttpclient (``http_gevent``). Both pool keep-alive connections per host, set TCP_NODELAY,
stream bodies as they arrive and raise only ``ProviderError``. ``make bench`` measures both.
"""

from __future__ import annotations

import abc
import socket
from collections.abc import Iterator, Mapping

from providers.base import Attempt

__all__ = [
    "Body",
    "CLIENT_KINDS",
    "DEFAULT_CLIENT",
    "READ_SIZE",
    "SOCKET_OPTIONS",
    "UpstreamClient",
    "UpstreamStream",
    "body_length",
    "create_client",
]

#: How much one streamed read may return; SSE events are far smaller, so each read is what arrived.
READ_SIZE = 65536

SOCKET_OPTIONS = [
    # NOTE: without TCP_NODELAY a small request body waits for the upstream's delayed ACK (~40 ms).
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
]

CLIENT_KINDS = ("urllib3", "geventhttpclient")
#: Measured by ``make bench``: geventhttpclient costs well under half urllib3's CPU per proxied request.
DEFAULT_CLIENT = "geventhttpclient"


#: A request body: bytes, or pieces sent one after another (a multipart form around a large file,
#: sent without joining it into one more copy).
Body = bytes | list[bytes]


def body_length(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(len(piece) for piece in body)


class UpstreamStream(abc.ABC):
    """A streamed response: ``status`` and ``content_type`` are known, iterating yields body bytes as they arrive."""

    status: int
    content_type: str

    @abc.abstractmethod
    def read_all(self) -> bytes:
        """Read the rest of the body (an error answer) and settle the connection."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Give the connection back when the body was read to its end, else drop it."""


class UpstreamClient(abc.ABC):
    """Pooled keep-alive connections to every upstream, shared by all providers of a worker."""

    @abc.abstractmethod
    def post(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> tuple[int, bytes]:
        """Send a request and read the whole answer: ``(status, body)``."""

    @abc.abstractmethod
    def post_stream(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> UpstreamStream:
        """Send a request and return once the response head has arrived."""

    @abc.abstractmethod
    def close(self) -> None: ...


def create_client(
    kind: str = DEFAULT_CLIENT,
    *,
    maxsize: int = 1024,
    connect_timeout_s: float = 10.0,
    read_timeout_s: float = 600.0,
) -> UpstreamClient:
    """Build the worker's client; call it after fork (pools hold sockets)."""
    if kind == "urllib3":
        from providers.http_urllib3 import Urllib3Client

        return Urllib3Client(maxsize=maxsize, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
    if kind == "geventhttpclient":
        from providers.http_gevent import GeventClient

        return GeventClient(maxsize=maxsize, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s)
    raise ValueError(f"unknown upstream client {kind!r} (one of: {', '.join(CLIENT_KINDS)})")
