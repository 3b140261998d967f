"""The upstream client on geventhttpclient: gevent-native sockets and a C HTTP parser, one pool per host."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Mapping

from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPParseError, HTTPSocketPoolResponse
from geventhttpclient.url import URL

from providers.base import Attempt, ProviderConnectionError, ProviderTimeout
from providers.http import READ_SIZE, SOCKET_OPTIONS, UpstreamClient, UpstreamStream

__all__ = ["GeventClient", "GeventStream"]

_ERRORS = (OSError, HTTPParseError)


def _translate(e: BaseException, url: str) -> Exception:
    if isinstance(e, TimeoutError):
        return ProviderTimeout(f"upstream timed out ({url})")
    if isinstance(e, ConnectionRefusedError):
        return ProviderConnectionError(f"cannot connect to {url}: {e.strerror}")
    reason = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
    return ProviderConnectionError(f"connection to {url} failed: {reason}")


def _set_socket_options(sock: socket.socket) -> None:
    for level, option, value in SOCKET_OPTIONS:
        sock.setsockopt(level, option, value)


class GeventClient(UpstreamClient):
    """One ``HTTPClient`` (a keep-alive connection pool) per upstream host and port."""

    def __init__(self, *, maxsize: int, connect_timeout_s: float, read_timeout_s: float) -> None:
        self._options = {
            # NOTE: geventhttpclient blocks a request when the pool is at its size, where urllib3
            # opens one more; a large size keeps bursts (10k open streams) from queueing.
            "concurrency": max(maxsize, 16384),
            "connection_timeout": connect_timeout_s,
            "network_timeout": read_timeout_s,
        }
        self._hosts: dict[tuple[str, str, int], HTTPClient] = {}
        #: url -> (client, request-uri); a handful of entries, one per configured endpoint.
        self._targets: dict[str, tuple[HTTPClient, str]] = {}

    def _target(self, url: str) -> tuple[HTTPClient, str]:
        try:
            return self._targets[url]
        except KeyError:
            pass
        parsed = URL(url)
        key = (parsed.scheme, parsed.host, parsed.port)
        client = self._hosts.get(key)
        if client is None:
            client = HTTPClient.from_url(parsed, **self._options)
            # NOTE: the pool's documented hook for socket options; geventhttpclient sets none itself.
            client._connection_pool.after_connect = _set_socket_options
            self._hosts[key] = client
        target = self._targets[url] = (client, parsed.request_uri)
        return target

    def post(self, url: str, body: bytes, headers: Mapping[str, str], attempt: Attempt) -> tuple[int, bytes]:
        client, uri = self._target(url)
        started = time.monotonic()
        try:
            resp = client.request("POST", uri, body=body, headers=headers)
            try:
                return resp.status_code, resp.read()
            finally:
                resp.release()
        except _ERRORS as e:
            raise _translate(e, url) from e
        finally:
            attempt.upstream_s += time.monotonic() - started

    def post_stream(self, url: str, body: bytes, headers: Mapping[str, str], attempt: Attempt) -> GeventStream:
        client, uri = self._target(url)
        started = time.monotonic()
        try:
            resp = client.request("POST", uri, body=body, headers=headers)
        except _ERRORS as e:
            raise _translate(e, url) from e
        finally:
            attempt.upstream_s += time.monotonic() - started
        return GeventStream(resp, url)

    def close(self) -> None:
        for client in self._hosts.values():
            client.close()
        self._hosts.clear()
        self._targets.clear()


class GeventStream(UpstreamStream):
    __slots__ = ("_resp", "_url", "status")

    def __init__(self, resp: HTTPSocketPoolResponse, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status_code

    def read_all(self) -> bytes:
        try:
            return self._resp.read()
        except _ERRORS as e:
            raise _translate(e, self._url) from e
        finally:
            self._resp.release()

    def __iter__(self) -> Iterator[bytes]:
        # NOTE: geventhttpclient's read(n) waits for n bytes; a stream needs each piece as it comes,
        # so this loop does what read() does inside, minus the wait: recv once, parse, hand over.
        resp = self._resp
        buffer = resp._body_buffer
        try:
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
                    raise ProviderConnectionError(f"connection to {self._url} closed before the end of the body")
                data = sock.recv(READ_SIZE)
                resp.feed(data)
                if not data and not resp.message_complete:
                    raise ProviderConnectionError(f"connection to {self._url} closed before the end of the body")
        except _ERRORS as e:
            raise _translate(e, self._url) from e

    def close(self) -> None:
        # Back to the pool when the body was read to its end; geventhttpclient closes it otherwise.
        self._resp.release()
