"""The upstream client on urllib3: a PoolManager with keep-alive pools, streamed bodies, errors translated.

urllib3 retries are off: routing alone decides retries and fallbacks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
)

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
    with_attempt_headers,
)

__all__ = ["Urllib3Client", "Urllib3Stream"]


def _translate(e: BaseException) -> ProviderError:
    """The ProviderError a urllib3 or socket error means; its detail names no address (the log has the label)."""
    if isinstance(e, (ConnectTimeoutError, ReadTimeoutError, TimeoutError)):
        return ProviderTimeout("upstream read or connect timed out")
    if isinstance(e, NewConnectionError):
        return ProviderConnectionError(f"cannot connect: {_reason(e)}")
    return ProviderConnectionError(f"connection failed: {_reason(e)}")


def _reason(e: BaseException) -> str:
    # urllib3 wraps the socket error in messages that carry the pool and URL: keep only the socket's reason.
    while e.__context__ is not None and isinstance(e, HTTPError):
        e = e.__context__
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return type(e).__name__


def _with_length(headers: Mapping[str, str], body: Body) -> Mapping[str, str]:
    # urllib3 sends a list body chunked unless told its length; upstreams want Content-Length.
    if isinstance(body, bytes):
        return headers
    return {**headers, "Content-Length": str(body_length(body))}


def _read_body(resp: urllib3.BaseHTTPResponse, limit: int) -> bytes:
    """The whole body, or ``over_limit`` as soon as it is known to be larger."""
    length = resp.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise over_limit(limit)
        return resp.read()
    # NOTE: not read(limit + 1): http.client would allocate a buffer of that size for every call.
    data = bytearray()
    while piece := resp.read1(READ_SIZE):
        data += piece
        if len(data) > limit:
            raise over_limit(limit)
    return bytes(data)


class Urllib3Client(UpstreamClient):
    """A pool of keep-alive connections per upstream host, shared by every provider of a worker."""

    def __init__(self, *, maxsize: int, connect_timeout_s: float, read_timeout_s: float, limits: UpstreamLimits) -> None:
        # NOTE: block=False with a large maxsize: a burst beyond it opens extra connections
        # instead of queueing requests behind the pool.
        self._pool = urllib3.PoolManager(
            num_pools=256,
            maxsize=maxsize,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            socket_options=SOCKET_OPTIONS,
            headers={"User-Agent": USER_AGENT},
        )
        self.limits = limits

    def _open(self, url: str, body: Body, headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        return self._pool.urlopen(
            "POST", url, body=body, headers=_with_length(headers, body), redirect=False, retries=False,
            preload_content=False,
        )

    def post(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> tuple[int, bytes]:
        """Send a request and read the whole answer: ``(status, body)``."""
        started = time.monotonic()
        try:
            stream = Urllib3Stream(self._open(url, body, with_attempt_headers(headers, attempt)), self.limits)
            return stream.status, stream.read_all()
        except (HTTPError, OSError) as e:
            raise _translate(e) from e
        finally:
            attempt.upstream_s += time.monotonic() - started

    def post_stream(self, url: str, body: Body, headers: Mapping[str, str], attempt: Attempt) -> UpstreamStream:
        """Send a request and return once the response head has arrived; the body is read as it comes."""
        started = time.monotonic()
        try:
            resp = self._open(url, body, with_attempt_headers(headers, attempt))
        except (HTTPError, OSError) as e:
            raise _translate(e) from e
        finally:
            attempt.upstream_s += time.monotonic() - started
        return Urllib3Stream(resp, self.limits)

    def close(self) -> None:
        self._pool.clear()


class Urllib3Stream(UpstreamStream):
    __slots__ = ("_resp", "_limits", "status", "content_type", "max_event_bytes", "_clean")

    def __init__(self, resp: urllib3.BaseHTTPResponse, limits: UpstreamLimits) -> None:
        self._resp = resp
        self._limits = limits
        self.status = resp.status
        self.content_type = resp.headers.get("content-type") or "application/octet-stream"
        self.max_event_bytes = limits.max_event_bytes
        self._clean = False

    def read_all(self) -> bytes:
        """Read the rest of the body and settle the connection."""
        try:
            data = _read_body(self._resp, self._limits.max_body_bytes)
            self._clean = True
            return data
        except (HTTPError, OSError) as e:
            raise _translate(e) from e
        finally:
            self.close()

    def __iter__(self) -> Iterator[bytes]:
        read1 = self._resp.read1
        try:
            while True:
                data = read1(READ_SIZE)
                if not data:
                    self._clean = True
                    return
                yield data
        except (HTTPError, OSError) as e:
            raise _translate(e) from e

    def close(self) -> None:
        resp = self._resp
        if not self._clean:
            # Abandoned mid-body (client gone, timeout, error): drop the socket, never reuse it.
            resp.close()
        resp.release_conn()
