"""The upstream client on geventhttpclient: its connection pools (connect, TLS, timeouts), our request and answer.

geventhttpclient's ``HTTPClient.request`` rebuilds the request head through its multi-dict headers on
every call, and its response parser calls four Python methods per header into that multi-dict: the
largest parts of its cost here. This client writes the head itself (a prebuilt prefix per URL, head and
body in one write) and reads the answer with llhttp through httptools, keeping only the headers it uses.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping

import httptools
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
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
    send_all,
    with_attempt_headers,
)

__all__ = ["GeventClient", "GeventStream"]

_ERRORS = (OSError, httptools.HttpParserError, httptools.HttpParserUpgrade)
#: The most of an answer's head read before it must be complete.
_MAX_HEAD = 64 * 1024


def _translate(e: BaseException) -> ProviderError:
    """The ProviderError a socket or parse error means; its detail names no address (the log has the label)."""
    if isinstance(e, TimeoutError):
        return ProviderTimeout("upstream read or connect timed out")
    if isinstance(e, ConnectionRefusedError):
        return ProviderConnectionError("connection refused")
    if isinstance(e, httptools.HttpParserUpgrade):
        return ProviderConnectionError("upstream switched protocols (101)")
    if isinstance(e, httptools.HttpParserError):
        return ProviderConnectionError(f"invalid HTTP from upstream ({e})")
    reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
    return ProviderConnectionError(f"connection failed: {reason}")


def _set_socket_options(sock: socket.socket) -> None:
    for level, option, value in SOCKET_OPTIONS:
        sock.setsockopt(level, option, value)


class _Answer:
    """One upstream answer on a pooled connection: status and the headers we use, then the body as it comes.

    The connection goes back to the pool only when the body was read to its end and the upstream
    keeps it alive; otherwise it is closed.
    """

    __slots__ = ("_sock", "_pool", "_parser", "status", "content_type", "length", "_chunked", "_until_close",
                 "_head", "_body", "complete", "_keep")

    def __init__(self, sock: socket.socket, pool: ConnectionPool) -> None:
        self._sock = sock
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = "application/octet-stream"
        #: Content-Length, when the upstream sent one; and whether the body is chunked.
        self.length: int | None = None
        self._chunked = False
        #: Neither a length nor chunked: the body ends when the upstream closes (RFC 9112, section 6.3).
        self._until_close = False
        self._head = False
        self._body: list[bytes] = []
        self.complete = False
        self._keep = False

    def read_head(self) -> None:
        read = 0
        while not self._head:
            data = self._sock.recv(READ_SIZE)
            if not data:
                raise ProviderConnectionError("upstream closed the connection before its answer")
            self._feed(data)
            read += len(data)
            if read > _MAX_HEAD and not self._head:
                raise ProviderConnectionError(f"upstream answer head over {_MAX_HEAD} bytes")

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if not self.complete:
                raise
            self._keep = False  # garbage after a whole answer: that answer stands, the connection does not

    # --- llhttp callbacks ----------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # Bytes after the answer, unasked for: they are not this answer's, and the connection is unfit.
            self._keep = False
            return
        self.length = None
        self._chunked = False
        self.content_type = "application/octet-stream"  # NOTE: not that of an interim 1xx answer

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        if len(name) == 12 and name.lower() == b"content-type":
            self.content_type = value.decode("latin-1")
        elif len(name) == 14 and name.lower() == b"content-length":
            self.length = int(value)  # llhttp has checked it is digits
        elif len(name) == 17 and name.lower() == b"transfer-encoding":
            self._chunked = b"chunked" in value.lower()

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self._parser.get_status_code()
        if status >= 200:  # NOTE: an interim 1xx answer is followed by the real one
            self.status = status
            self._head = True
            # RFC 9112, section 6.3: with neither a length nor chunked coding, the body ends at the close.
            self._until_close = self.length is None and not self._chunked

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._head and not self.complete:
            self.complete = True
            self._keep = self._parser.should_keep_alive()

    # --- the body --------------------------------------------------------------------------------------

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives."""
        body = self._body
        feed = self._feed
        recv = self._sock.recv
        while True:
            if body:
                data = b"".join(body) if len(body) > 1 else body[0]
                body.clear()
                yield data
                continue
            if self.complete:
                return
            data = recv(READ_SIZE)
            if not data:
                if self._until_close:
                    self.complete = True
                    return
                raise ProviderConnectionError("upstream closed the connection before the end of the body")
            feed(data)

    def read(self, limit: int) -> bytes:
        """The whole body, or ``over_limit`` as soon as it is known to be larger."""
        if self.length is not None and self.length > limit:
            raise over_limit(limit)
        if self.complete:
            body = self._body
            return body[0] if len(body) == 1 else b"".join(body)
        size = 0
        pieces = []
        for piece in self.pieces():
            size += len(piece)
            if size > limit:
                raise over_limit(limit)
            pieces.append(piece)
        return b"".join(pieces)

    def release(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self.complete and self._keep:
            self._pool.return_socket(sock)
        else:
            self._pool.release_socket(sock)


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

    def _send(self, url: str, body: Body, headers: Mapping[str, str]) -> _Answer:
        """Write the request and read the response head; the response owns the connection from then on."""
        pool, prefix = self._target(url)
        head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode("latin-1")
        head = b"%s%sContent-Length: %d\r\n\r\n" % (prefix, head, body_length(body))
        sock = pool.get_socket()
        try:
            if isinstance(body, bytes):
                # PERF: one write, so head and a small body leave in one segment.
                send_all(sock, head + body)
            else:
                send_all(sock, head)
                for piece in body:
                    send_all(sock, piece)
            answer = _Answer(sock, pool)
            answer.read_head()
        except BaseException:
            pool.release_socket(sock)
            raise
        return answer

    def post(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> tuple[int, bytes]:
        started = time.monotonic()
        try:
            answer = self._send(url, body, with_attempt_headers(headers, attempt))
            try:
                return answer.status, answer.read(self.limits.max_body_bytes)
            finally:
                answer.release()
        except _ERRORS as e:
            raise _translate(e) from e
        finally:
            attempt.upstream_s += time.monotonic() - started

    def post_stream(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> GeventStream:
        started = time.monotonic()
        try:
            answer = self._send(url, body, with_attempt_headers(headers, attempt))
        except _ERRORS as e:
            raise _translate(e) from e
        finally:
            attempt.upstream_s += time.monotonic() - started
        return GeventStream(answer, self.limits)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._targets.clear()


class GeventStream(UpstreamStream):
    __slots__ = ("_answer", "_limits", "status", "content_type", "max_event_bytes")

    def __init__(self, answer: _Answer, limits: UpstreamLimits) -> None:
        self._answer = answer
        self._limits = limits
        self.status = answer.status
        self.content_type = answer.content_type
        self.max_event_bytes = limits.max_event_bytes

    def read_all(self) -> bytes:
        try:
            return self._answer.read(self._limits.max_body_bytes)
        except _ERRORS as e:
            raise _translate(e) from e
        finally:
            self._answer.release()

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._answer.pieces()
        except _ERRORS as e:
            raise _translate(e) from e

    def close(self) -> None:
        # Back to the pool when the body was read to its end; closed otherwise.
        self._answer.release()
