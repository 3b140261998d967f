"""The upstream client on geventhttpclient: its connection pools and C response parser, our request head.

geventhttpclient's ``HTTPClient.request`` rebuilds the request head through its multi-dict headers on
every call, the largest part of its cost here; this client writes the head itself (a prebuilt prefix
per URL) and sends head and body in one write, then lets the library parse the answer.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping

from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.response import HTTPParseError, HTTPSocketPoolResponse
from geventhttpclient.url import URL

from providers.base import Attempt, ProviderConnectionError, ProviderError, ProviderTimeout
from providers.http import (
    READ_SIZE,
    SOCKET_OPTIONS,
    USER_AGENT,
    Body,
    UpstreamClient,
    UpstreamLimits,
    UpstreamStream,
    body_length,
    over_limit,
)

__all__ = ["GeventClient", "GeventStream"]

_ERRORS = (OSError, HTTPParseError)


def _translate(e: BaseException) -> ProviderError:
    """The ProviderError a socket or parse error means; its detail names no address (the log has the label)."""
    if isinstance(e, TimeoutError):
        return ProviderTimeout("upstream read or connect timed out")
    if isinstance(e, ConnectionRefusedError):
        return ProviderConnectionError("connection refused")
    if isinstance(e, HTTPParseError):
        return ProviderConnectionError(f"invalid HTTP from upstream ({type(e).__name__})")
    reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
    return ProviderConnectionError(f"connection failed: {reason}")


def _set_socket_options(sock: socket.socket) -> None:
    for level, option, value in SOCKET_OPTIONS:
        sock.setsockopt(level, option, value)


class GeventClient(UpstreamClient):
    """One geventhttpclient connection pool per upstream scheme, host and port."""

    def __init__(self, *, maxsize: int, connect_timeout_s: float, read_timeout_s: float, limits: UpstreamLimits) -> None:
        self._options = {
            # NOTE: geventhttpclient blocks a request when the pool is at its size, where urllib3
            # opens one more; a large size keeps bursts (10k open streams) from queueing.
            "size": max(maxsize, 16384),
            "connection_timeout": connect_timeout_s,
            "network_timeout": read_timeout_s,
        }
        self.limits = limits
        self._pools: dict[tuple[str, str, int], ConnectionPool] = {}
        #: url -> (pool, request-line-and-fixed-headers); a handful, one per configured endpoint.
        self._targets: dict[str, tuple[ConnectionPool, bytes]] = {}

    def _target(self, url: str) -> tuple[ConnectionPool, bytes]:
        try:
            return self._targets[url]
        except KeyError:
            pass
        parsed = URL(url)
        key = (parsed.scheme, parsed.host, parsed.port)
        pool = self._pools.get(key)
        if pool is None:
            cls = SSLConnectionPool if parsed.scheme == "https" else ConnectionPool
            pool = cls(parsed.host, parsed.port, parsed.host, parsed.port, **self._options)
            # NOTE: the pool's hook for socket options; geventhttpclient sets none itself.
            pool.after_connect = _set_socket_options
            self._pools[key] = pool
        default_port = 443 if parsed.scheme == "https" else 80
        host = parsed.host if parsed.port == default_port else f"{parsed.host}:{parsed.port}"
        prefix = f"POST {parsed.request_uri} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
        target = self._targets[url] = (pool, prefix.encode("latin-1"))
        return target

    def _send(self, url: str, body: Body, headers: Mapping[str, str]) -> HTTPSocketPoolResponse:
        """Write the request and read the response head; the response owns the connection from then on."""
        pool, prefix = self._target(url)
        head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode("latin-1")
        head = b"%s%sContent-Length: %d\r\n\r\n" % (prefix, head, body_length(body))
        sock = pool.get_socket()
        try:
            if isinstance(body, bytes):
                # PERF: one write, so head and a small body leave in one segment.
                sock.sendall(head + body)
            else:
                sock.sendall(head)
                for piece in body:
                    sock.sendall(piece)
        except BaseException:
            pool.release_socket(sock)
            raise
        # On any failure (a timeout included) the response closes the socket and frees its pool slot.
        return HTTPSocketPoolResponse(sock, pool, block_size=READ_SIZE, method="POST")

    def post(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> tuple[int, bytes]:
        started = time.monotonic()
        try:
            resp = self._send(url, body, headers)
            try:
                return resp.status_code, _read_body(resp, self.limits.max_body_bytes)
            finally:
                resp.release()
        except _ERRORS as e:
            raise _translate(e) from e
        finally:
            attempt.upstream_s += time.monotonic() - started

    def post_stream(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> GeventStream:
        started = time.monotonic()
        try:
            resp = self._send(url, body, headers)
        except _ERRORS as e:
            raise _translate(e) from e
        finally:
            attempt.upstream_s += time.monotonic() - started
        return GeventStream(resp, self.limits)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._targets.clear()


def _read_body(resp: HTTPSocketPoolResponse, limit: int) -> bytes:
    """The whole body, or ``over_limit`` as soon as it is known to be larger (the connection is dropped)."""
    length = resp.content_length
    if length is not None and length <= limit:
        return resp.read()
    if length is not None:
        raise over_limit(limit)
    data = bytearray()
    for piece in _pieces(resp):
        data += piece
        if len(data) > limit:
            raise over_limit(limit)
    return bytes(data)


def _pieces(resp: HTTPSocketPoolResponse) -> Iterator[bytes]:
    """The body as it arrives.

    NOTE: geventhttpclient's read(n) waits for n bytes; a stream needs each piece as it comes, so this
    loop does what read() does inside, minus the wait: recv once, parse, hand over.
    """
    buffer = resp._body_buffer
    while True:
        if buffer:
            data = bytes(buffer)
            del buffer[:]
            yield data
            continue
        if resp.message_complete:
            return
        sock = resp._sock
        if sock is None:
            raise ProviderConnectionError("upstream closed the connection before the end of the body")
        data = sock.recv(READ_SIZE)
        resp.feed(data)
        if not data and not resp.message_complete:
            raise ProviderConnectionError("upstream closed the connection before the end of the body")


class GeventStream(UpstreamStream):
    __slots__ = ("_resp", "_limits", "status", "content_type", "max_event_bytes")

    def __init__(self, resp: HTTPSocketPoolResponse, limits: UpstreamLimits) -> None:
        self._resp = resp
        self._limits = limits
        self.status = resp.status_code
        self.content_type = resp.get("content-type") or "application/octet-stream"
        self.max_event_bytes = limits.max_event_bytes

    def read_all(self) -> bytes:
        try:
            return _read_body(self._resp, self._limits.max_body_bytes)
        except _ERRORS as e:
            raise _translate(e) from e
        finally:
            self._resp.release()

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from _pieces(self._resp)
        except _ERRORS as e:
            raise _translate(e) from e

    def close(self) -> None:
        # Back to the pool when the body was read to its end; geventhttpclient closes it otherwise.
        self._resp.release()
