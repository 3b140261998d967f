"""Relaying a provider's chunk stream to the client as SSE, chunk by chunk, never buffered whole.

``SSEStream`` is the WSGI body of a streamed answer. Iterating it yields framed events as they
arrive; a failure after the first byte ends the stream with an error event; closing it (at the
end, or when the client goes away) closes the upstream at once.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator

import gevent
from gevent.socket import wait_read

from gateway.sse import DONE, ModelRewriter, error_event, frame
from providers.base import ChunkStream, ProviderError, ProviderTimeout

__all__ = ["CLIENT_SOCKET_KEY", "ClientDisconnected", "SSEStream"]

#: The WSGI environ key under which the server puts the client's socket (for hang-up detection).
CLIENT_SOCKET_KEY = "budgateway.client_socket"

log = logging.getLogger(__name__)


class ClientDisconnected(gevent.GreenletExit):
    """Thrown into the request greenlet when the client hung up while it waits on the upstream.

    A ``GreenletExit``: should it land outside the stream (in a write), pywsgi and the pool end the
    connection quietly, as for any hang-up.
    """


class SSEStream:
    """The response body of a streamed answer; ``close()`` runs the completion callbacks."""

    __slots__ = ("_first", "_rest", "_rewrite", "_deadline", "_client", "_label", "_on_close", "_watcher", "failed")

    def __init__(
        self,
        first: bytes,
        rest: ChunkStream,
        client_model: str,
        deadline: float | None,
        client_socket: socket.socket | None,
        label: str,
    ) -> None:
        self._first = first
        self._rest = rest
        self._rewrite = ModelRewriter(client_model)
        self._deadline = deadline
        self._client = client_socket
        self._label = label
        self._on_close: list[Callable[[SSEStream], None]] = []
        self._watcher: gevent.Greenlet | None = None
        #: Set when the stream ended with an error event (or the client left): for metrics.
        self.failed = False

    def on_close(self, callback: Callable[[SSEStream], None]) -> None:
        self._on_close.append(callback)

    def __iter__(self) -> Iterator[bytes]:
        if self._client is not None:
            self._watcher = gevent.spawn(_watch_client, self._client, gevent.getcurrent())
        return self._events()

    def _events(self) -> Iterator[bytes]:
        rewrite = self._rewrite
        yield frame(rewrite(self._first))
        rest = self._rest
        try:
            if self._deadline is None:
                for payload in rest:
                    yield frame(rewrite(payload))
            else:
                yield from self._until_deadline(rest)
        except ProviderError as e:
            self.failed = True
            log.warning("stream from %s failed after its first event: %s", self._label, e)
            yield error_event(
                {"error": {"message": f"{self._label}: {e}", "type": "server_error", "param": None, "code": "stream_failed"}}
            )
            return
        except ClientDisconnected:
            self.failed = True
            return
        yield DONE

    def _until_deadline(self, rest: ChunkStream) -> Iterator[bytes]:
        rewrite = self._rewrite
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderTimeout("streaming total timeout ran out")
            with gevent.Timeout(remaining, ProviderTimeout("streaming total timeout ran out")):
                try:
                    payload = next(rest)
                except StopIteration:
                    return
            yield frame(rewrite(payload))

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
        try:
            self._rest.close()
        finally:
            for callback in self._on_close:
                callback(self)


def _watch_client(sock: socket.socket, request: gevent.Greenlet) -> None:
    """Wait until the client's socket reads EOF, then interrupt the request greenlet.

    Without this, a client that leaves while the upstream is quiet is noticed only at the next
    write, and the upstream keeps generating for nobody.
    """
    try:
        wait_read(sock.fileno())
        if sock.recv(1, socket.MSG_PEEK):
            return  # the client sent more (pipelining): not a hang-up
    except OSError:
        pass
    request.kill(ClientDisconnected(), block=False)
