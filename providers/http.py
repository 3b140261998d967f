"""The one upstream HTTP client interface every provider sends through, and the factory that picks its library.

Two implementations, chosen by ``[gateway] upstream_client``: urllib3 (``http_urllib3``) and
geventhttpclient (``http_gevent``). Both pool keep-alive connections per host, set TCP_NODELAY,
stream bodies as they arrive, read a whole answer only up to ``UpstreamLimits.max_body_bytes`` and
raise only ``ProviderError``, whose messages never carry the upstream's address. ``make bench``
measures both.
"""

from __future__ import annotations

import abc
import socket
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version

from providers.base import Attempt, ProviderResponseError
from providers.sse import DEFAULT_MAX_EVENT_BYTES

__all__ = [
    "Body",
    "CLIENT_KINDS",
    "DEFAULT_CLIENT",
    "READ_SIZE",
    "SOCKET_OPTIONS",
    "USER_AGENT",
    "UpstreamClient",
    "UpstreamLimits",
    "UpstreamStream",
    "over_limit",
    "send_all",
    "body_length",
    "create_client",
    "with_attempt_headers",
]

#: How much one streamed read may return; SSE events are far smaller, so each read is what arrived.
READ_SIZE = 65536

SOCKET_OPTIONS = [
    # NOTE: without TCP_NODELAY a small request body waits for the upstream's delayed ACK (~40 ms).
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
]

try:
    USER_AGENT = f"budgateway/{version('budgateway')}"
except PackageNotFoundError:  # run from a source tree that was never installed
    USER_AGENT = "budgateway"

CLIENT_KINDS = ("urllib3", "geventhttpclient")
#: Measured by ``make bench``: geventhttpclient costs well under half urllib3's CPU per proxied request.
DEFAULT_CLIENT = "geventhttpclient"


#: A request body: bytes, or pieces sent one after another (a multipart form around a large file,
#: sent without joining it into one more copy).
Body = bytes | list[bytes]


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)``, in one system call when the kernel takes it all, as it does a usual answer.

    PERF: gevent's sendall asks the kernel for SO_SNDBUF (a getsockopt) on every call.
    """
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])


def body_length(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(len(piece) for piece in body)


class UpstreamLimits:
    """How much of an upstream's answer the gateway holds: a whole body, and one event of a stream."""

    __slots__ = ("max_body_bytes", "max_event_bytes")

    def __init__(self, max_body_bytes: int = 64 * 1024 * 1024, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_body_bytes = max_body_bytes
        self.max_event_bytes = max_event_bytes


def over_limit(limit: int) -> ProviderResponseError:
    return ProviderResponseError(f"upstream answer is over the limit of {limit} bytes for a whole body")


class UpstreamStream(abc.ABC):
    """A streamed response: ``status`` and ``content_type`` are known, iterating yields body bytes as they arrive.

    ``max_event_bytes`` is the cap for a decoder of this stream's events (``providers.sse``).
    """

    status: int
    content_type: str
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES

    @abc.abstractmethod
    def read_all(self) -> bytes:
        """Read the rest of the body (at most ``max_body_bytes``) and settle the connection."""

    @abc.abstractmethod
    def __iter__(self) -> Iterator[bytes]: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Give the connection back when the body was read to its end, else drop it."""


class UpstreamClient(abc.ABC):
    """Pooled keep-alive connections to every upstream, shared by all providers of a worker."""

    @abc.abstractmethod
    def post(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> tuple[int, bytes]:
        """Send a request and read the whole answer (at most ``max_body_bytes``): ``(status, body)``."""

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
    limits: UpstreamLimits | None = None,
) -> UpstreamClient:
    """Build the worker's client; call it after fork (pools hold sockets)."""
    options = {"maxsize": maxsize, "connect_timeout_s": connect_timeout_s, "read_timeout_s": read_timeout_s,
               "limits": limits or UpstreamLimits()}
    if kind == "urllib3":
        from providers.http_urllib3 import Urllib3Client

        return Urllib3Client(**options)
    if kind == "geventhttpclient":
        from providers.http_gevent import GeventClient

        return GeventClient(**options)
    raise ValueError(f"unknown upstream client {kind!r} (one of: {', '.join(CLIENT_KINDS)})")


def with_attempt_headers(headers: Mapping[str, str], attempt: Attempt) -> Mapping[str, str]:
    """The request's headers and those the gateway adds for the attempt (its ``traceparent``)."""
    return {**headers, **attempt.headers} if attempt.headers else headers
