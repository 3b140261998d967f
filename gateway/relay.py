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
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import gevent

from gateway.outcome import Usage
from gateway.server.peer import ClientDisconnected
from gateway.sse import DONE, ModelRewriter, error_event, frame
from providers.base import TRANSLATION_ERRORS, ProviderError, ProviderTimeout, unexpected_shape
from providers.jsonio import dumps, loads

if TYPE_CHECKING:
    from gateway.config.schema import Pricing
    from gateway.outcome import Outcome
    from gateway.server.peer import Peer

__all__ = [
    "EventStream",
    "RawStream",
    "SSEStream",
    "StreamAborted",
    "StreamBody",
    "sse_error",
]

log = logging.getLogger(__name__)

#: How much of a streamed answer is kept for the analytics rows (``store_content``).
CAPTURE_LIMIT = 1024 * 1024

class StreamAborted(gevent.GreenletExit):
    """Ends a response whose format has no in-band error (audio bytes): the server then drops the
    connection without the closing chunk, so the client sees a truncated body, not a complete one."""


class StreamBody:
    """What every relayed stream shares: the first piece, the rest, the deadline, the client watcher,
    and the request's outcome, which learns when the first byte went out, how many bytes did, the
    usage the stream reported, and whether and why the stream was cut short."""

    __slots__ = ("_first", "_rest", "_deadline", "_peer", "label", "_on_close", "_watcher", "failed",
                 "_outcome", "_pricing", "_sent", "_ended", "_closed")

    def __init__(
        self,
        first: bytes,
        rest: Iterator[bytes],
        deadline: float | None,
        peer: Peer | None,
        label: str,
        outcome: Outcome | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self._first = first
        self._rest = rest
        self._deadline = deadline
        self._peer = peer
        self.label = label
        self._on_close: list[Callable[[StreamBody], None]] = []
        self._watcher: gevent.Greenlet | None = None
        #: Set when the stream ended early (an upstream failure, or the client left).
        self.failed = False
        self._outcome = outcome
        #: The answering model's price, for the cost of the usage the stream reports.
        self._pricing = pricing
        self._sent = 0
        self._ended = False
        self._closed = False

    def on_close(self, callback: Callable[[StreamBody], None]) -> None:
        self._on_close.append(callback)

    def __iter__(self) -> Iterator[bytes]:
        if self._peer is not None:
            self._watcher = self._peer.watch(gevent.getcurrent())
        return self._relay()

    #: Whether what the client gets is text worth keeping for the analytics rows (not audio bytes).
    textual = True

    def _relay(self) -> Iterator[bytes]:
        outcome = self._outcome
        capture = outcome.capture if outcome is not None and self.textual else None
        try:
            for piece in self._events(self._pieces()):
                if not self._sent and outcome is not None:
                    outcome.first_byte = time.monotonic()
                if capture is not None and self._sent < CAPTURE_LIMIT:
                    capture.append(piece)
                self._sent += len(piece)
                yield piece
            last = self._closing()
        except ProviderError as e:
            log.warning("stream from %s failed after its first byte: %s", self.label, e)
            self._cut("upstream", 504 if isinstance(e, ProviderTimeout) else 502, e)
            last = b"".join(self._failure(e))
        except ClientDisconnected:
            # Not swallowed: the server then drops the connection without the closing chunk, so a client
            # that only half-closed cannot take the cut stream for a whole one.
            self._cut("client", 499)
            raise
        self._ended = True
        self._sent += len(last)
        if capture is not None and last and self._sent - len(last) < CAPTURE_LIMIT:
            capture.append(last)
        # NOTE: the request ends before its last piece goes out, so a client that sends its next request
        # the moment it has the whole stream finds this one finished (its tokens settled, its lease freed).
        self.close()
        if last:
            yield last

    def _cut(self, reason: str, status: int, error: ProviderError | None = None) -> None:
        self.failed = True
        outcome = self._outcome
        if outcome is None or outcome.stream_cut:
            return
        outcome.stream_cut = True
        outcome.cut_reason = reason
        outcome.status = status
        if error is not None and outcome.attempts:
            attempt = outcome.attempts[-1]
            attempt.result = "cut"
            attempt.error = str(error)

    def _usage(self, usage: object, chunk: object = None) -> None:
        """A usage report in the stream (in ``chunk``): the outcome's usage and cost."""
        if self._outcome is not None:
            self._outcome.set_usage(Usage.parse(usage), self._pricing, chunk, streaming=True)

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        raise NotImplementedError

    def _closing(self) -> bytes:
        """What ends a stream whose upstream ended well (sent after the request has finished)."""
        return b""

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
        """Release the upstream and finish the request; once (the relay closes before its last piece,
        the server after it)."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.kill(block=False)
        try:
            self._rest.close()
        finally:
            if not self._ended:
                self._cut("client", 499)  # the server stopped before the end: the client left
            outcome = self._outcome
            if outcome is not None:
                outcome.bytes_out = self._sent
                if outcome.capture:
                    outcome.response_body = b"".join(outcome.capture)[:CAPTURE_LIMIT]
                if outcome.attempts:
                    attempt = outcome.attempts[-1]
                    attempt.duration_s = time.monotonic() - attempt.started
            for callback in self._on_close:
                callback(self)


def _error_payload(label: str, error: ProviderError) -> dict:
    return {"error": {"message": f"{label}: {error.public}", "type": "server_error", "param": None,
                      "code": "stream_failed"}}


def sse_error(label: str, error: ProviderError) -> bytes:
    """The error event that ends a named-event stream (Responses API, forwarded events)."""
    # NOTE: a blank line first, in case the failure cut an event in half.
    return b"\n\nevent: error\n" + frame(dumps(_error_payload(label, error)))


class SSEStream(StreamBody):
    """OpenAI chunk payloads (chat or legacy completions), model renamed for the client; the usage
    chunk is recorded, and dropped unless the client asked for it (``include_usage``)."""

    __slots__ = ("_rewrite", "_include_usage", "_window", "_watch")

    def __init__(self, first, rest, client_model: str, deadline, peer, label, *, include_usage: bool = True,
                 outcome: Outcome | None = None, pricing: Pricing | None = None) -> None:
        super().__init__(first, rest, deadline, peer, label, outcome, pricing)
        self._rewrite = ModelRewriter(client_model)
        self._include_usage = include_usage
        self._window = None
        self._watch: Callable[[dict], object] | None = None

    def hold_back(self, window) -> None:
        """A tap (``guard.window.StreamWindow``) that holds text back until it has scanned it."""
        self._window = window

    def watch(self, see: Callable[[dict], object]) -> None:
        """A tap that sees each chunk as it goes out (a TensorZero inference's record of its output)."""
        self._watch = see

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        rewrite = self._rewrite
        window = self._window
        watch = self._watch
        for payload in pieces:
            # PERF: a byte search first; with usage asked for, every chunk says "usage":null.
            if b'"usage"' in payload and b'"usage":null' not in payload and b'"usage": null' not in payload:
                payload = self._take_usage(payload)
                if payload is None:
                    continue
            if window is None and watch is None:
                yield frame(rewrite(payload))
                continue
            try:
                chunk = loads(payload)
            except ValueError as e:
                raise unexpected_shape("chunk", e) from e
            if window is None:
                if isinstance(chunk, dict):
                    watch(chunk)
                yield frame(rewrite(payload))
                continue
            for out in window.feed(chunk) if isinstance(chunk, dict) else ():
                if watch is not None:
                    watch(out)
                yield frame(rewrite(dumps(out)))
            if window.blocked:
                yield frame(rewrite(dumps(window.blocked_chunk())))
                return
        if window is not None:
            for out in window.close():
                if watch is not None:
                    watch(out)
                yield frame(rewrite(dumps(out)))
            if window.blocked:
                yield frame(rewrite(dumps(window.blocked_chunk())))

    def _closing(self) -> bytes:
        return DONE

    def _take_usage(self, payload: bytes) -> bytes | None:
        """Record the chunk's usage; the chunk as the client gets it (None: not at all)."""
        try:
            chunk = loads(payload)
        except ValueError:
            return payload
        if not isinstance(chunk, dict) or not isinstance(chunk.get("usage"), dict):
            return payload
        self._usage(chunk["usage"], chunk)
        if self._include_usage:
            return payload
        if not chunk.get("choices"):
            return None
        chunk["usage"] = None
        return dumps(chunk)

    def _failure(self, error: ProviderError) -> Iterator[bytes]:
        yield error_event(_error_payload(self.label, error))


class RawStream(StreamBody):
    """Upstream bytes exactly as they arrive. An event stream ends with an error event on failure;
    any other body (audio) is cut short so the client cannot take it for complete."""

    __slots__ = ("_sse",)

    def __init__(self, first, rest, content_type: str, deadline, peer, label, *,
                 outcome: Outcome | None = None) -> None:
        super().__init__(first, rest, deadline, peer, label, outcome)
        self._sse = content_type.startswith("text/event-stream")

    @property
    def textual(self) -> bool:
        return self._sse

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        return pieces

    def _failure(self, error: ProviderError) -> Iterator[bytes]:
        if not self._sse:
            raise StreamAborted()
        yield sse_error(self.label, error)


class ChunkTranslator(Protocol):
    """Turns OpenAI chunks into another API's framed events."""

    def feed(self, chunk: dict) -> bytes: ...

    def finish(self) -> bytes: ...


class EventStream(StreamBody):
    """Chunk payloads turned into another API's events by a translator; ``error(message, status)``
    frames a failure (the status of the provider's error when it had one, else 500)."""

    __slots__ = ("_translator", "_error", "_window")

    def __init__(self, first, rest, translator: ChunkTranslator, error: Callable[[str, int], bytes],
                 deadline, peer, label, *, outcome: Outcome | None = None, pricing: Pricing | None = None) -> None:
        super().__init__(first, rest, deadline, peer, label, outcome, pricing)
        self._translator = translator
        self._error = error
        self._window = None

    def hold_back(self, window) -> None:
        """A tap (``guard.window.StreamWindow``) on the OpenAI chunks, before they are translated."""
        self._window = window

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        feed = self._translator.feed
        window = self._window
        for payload in pieces:
            try:
                chunk = loads(payload)
                if b'"usage"' in payload and isinstance(chunk.get("usage"), dict):
                    self._usage(chunk["usage"], chunk)
                chunks = [chunk] if window is None else window.feed(chunk)
                if window is not None and window.blocked:
                    chunks.append(window.blocked_chunk())
                events = b"".join(feed(c) for c in chunks)
            except TRANSLATION_ERRORS as e:
                raise unexpected_shape("chunk", e) from e
            if events:
                yield events
            if window is not None and window.blocked:
                return
        if window is not None:
            held = window.close()
            if window.blocked:
                held.append(window.blocked_chunk())
            events = b"".join(feed(c) for c in held)
            if events:
                yield events

    def _closing(self) -> bytes:
        return self._translator.finish()

    def _failure(self, error: ProviderError) -> Iterator[bytes]:
        yield self._error(f"{self.label}: {error.public}", getattr(error, "status", 500))
