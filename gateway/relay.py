"""Relaying a provider's stream to the client, piece by piece as it arrives, never buffered whole.

A ``StreamBody`` is the WSGI body of a streamed answer. Iterating it yields what the client gets;
a failure after the first byte ends the stream the way its format allows (an error event); closing
it (at the end, or when the client goes away) closes the upstream at once and runs the callbacks
that finish the request (metrics).

- ``SSEStream``: OpenAI chunk payloads framed as ``data:`` events, model renamed, ``[DONE]`` last.
- ``RawStream``: upstream bytes as they are (Responses API events, audio).
- ``EventStream``: chunk payloads turned into another event format by a translator (Anthropic's).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import gevent
import ujson
from gevent.socket import wait_read

from gateway.sse import DONE, ModelRewriter, error_event, frame
from providers.base import ProviderError, ProviderTimeout

__all__ = [
    "CLIENT_SOCKET_KEY",
    "ClientDisconnected",
    "EventStream",
    "RawStream",
    "SSEStream",
    "StreamAborted",
    "StreamBody",
]

log = logging.getLogger(__name__)

#: The WSGI environ key under which the server puts the client's socket (for hang-up detection).
CLIENT_SOCKET_KEY = "budgateway.client_socket"


class ClientDisconnected(gevent.GreenletExit):
    """Thrown into the request greenlet when the client hung up while it waits on the upstream.

    A ``GreenletExit``: should it land outside the stream (in a write), pywsgi and the pool end the
    connection quietly, as for any hang-up.
    """


class StreamAborted(gevent.GreenletExit):
    """Ends a response whose format has no in-band error (audio bytes): pywsgi then drops the
    connection without the closing chunk, so the client sees a truncated body, not a complete one."""


class StreamBody:
    """What every relayed stream shares: the first piece, the rest, the deadline, the client watcher."""

    __slots__ = ("_first", "_rest", "_deadline", "_client", "label", "_on_close", "_watcher", "failed")

    def __init__(
        self,
        first: bytes,
        rest: Iterator[bytes],
        deadline: float | None,
        client_socket: socket.socket | None,
        label: str,
    ) -> None:
        self._first = first
        self._rest = rest
        self._deadline = deadline
        self._client = client_socket
        self.label = label
        self._on_close: list[Callable[[StreamBody], None]] = []
        self._watcher: gevent.Greenlet | None = None
        #: Set when the stream ended early (an upstream failure, or the client left): for metrics.
        self.failed = False

    def on_close(self, callback: Callable[[StreamBody], None]) -> None:
        self._on_close.append(callback)

    def __iter__(self) -> Iterator[bytes]:
        if self._client is not None:
            self._watcher = gevent.spawn(_watch_client, self._client, gevent.getcurrent())
        return self._relay()

    def _relay(self) -> Iterator[bytes]:
        try:
            yield from self._events(self._pieces())
        except ProviderError as e:
            self.failed = True
            log.warning("stream from %s failed after its first byte: %s", self.label, e)
            yield from self._failure(e)
        except ClientDisconnected:
            self.failed = True

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        raise NotImplementedError

    def _failure(self, error: ProviderError) -> Iterator[bytes]:
        """What ends the stream after an upstream failure."""
        raise StreamAborted()

    def _pieces(self) -> Iterator[bytes]:
        """The first piece, then the rest, within the stream's deadline."""
        yield self._first
        rest = self._rest
        if self._deadline is None:
            yield from rest
            return
        while True:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderTimeout("streaming total timeout ran out")
            with gevent.Timeout(remaining, ProviderTimeout("streaming total timeout ran out")):
                try:
                    piece = next(rest)
                except StopIteration:
                    return
            yield piece

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
        try:
            self._rest.close()
        finally:
            for callback in self._on_close:
                callback(self)


def _error_payload(label: str, error: ProviderError) -> dict:
    return {"error": {"message": f"{label}: {error}", "type": "server_error", "param": None, "code": "stream_failed"}}


class SSEStream(StreamBody):
    """OpenAI chunk payloads (chat or legacy completions), model renamed for the client."""

    __slots__ = ("_rewrite",)

    def __init__(self, first, rest, client_model: str, deadline, client_socket, label) -> None:
        super().__init__(first, rest, deadline, client_socket, label)
        self._rewrite = ModelRewriter(client_model)

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        rewrite = self._rewrite
        for payload in pieces:
            yield frame(rewrite(payload))
        yield DONE

    def _failure(self, error: ProviderError) -> Iterator[bytes]:
        yield error_event(_error_payload(self.label, error))


class RawStream(StreamBody):
    """Upstream bytes exactly as they arrive. An event stream ends with an error event on failure;
    any other body (audio) is cut short so the client cannot take it for complete."""

    __slots__ = ("_sse",)

    def __init__(self, first, rest, content_type: str, deadline, client_socket, label) -> None:
        super().__init__(first, rest, deadline, client_socket, label)
        self._sse = content_type.startswith("text/event-stream")

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        return pieces

    def _failure(self, error: ProviderError) -> Iterator[bytes]:
        if not self._sse:
            raise StreamAborted()
        # NOTE: a blank line first, in case the failure cut an event in half.
        yield b"\n\nevent: error\n" + frame(ujson.dumps(_error_payload(self.label, error)).encode())


class ChunkTranslator(Protocol):
    """Turns OpenAI chunks into another API's framed events."""

    def feed(self, chunk: dict) -> bytes: ...

    def finish(self) -> bytes: ...


class EventStream(StreamBody):
    """Chunk payloads turned into another API's events by a translator; ``error(message, status)``
    frames a failure (the status of the provider's error when it had one, else 500)."""

    __slots__ = ("_translator", "_error")

    def __init__(self, first, rest, translator: ChunkTranslator, error: Callable[[str, int], bytes],
                 deadline, client_socket, label) -> None:
        super().__init__(first, rest, deadline, client_socket, label)
        self._translator = translator
        self._error = error

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        feed = self._translator.feed
        for payload in pieces:
            events = feed(ujson.loads(payload))
            if events:
                yield events
        yield self._translator.finish()

    def _failure(self, error: ProviderError) -> Iterator[bytes]:
        yield self._error(f"{self.label}: {error}", getattr(error, "status", 500))


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
