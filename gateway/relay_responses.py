"""Relaying a Responses API stream: its events decoded, passed on as they arrive, the last one held.

Unlike a forwarded byte stream, the gateway reads these events: the ``response`` objects of the
lifecycle events get the client's model name, ``response.completed`` gives the outcome its usage,
the terminal event (completed, incomplete, failed) goes out only after the request has finished (as
``[DONE]`` does on chat streams), and an output guardrail (``guard.responses_window``) may hold text
back. Without a guardrail, an event that is not a lifecycle event is re-framed without being parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.relay import StreamBody, sse_error
from gateway.sse import frame
from providers.base import unexpected_shape
from providers.jsonio import dumps, loads
from providers.sse import SSEDecoder

if TYPE_CHECKING:
    from gateway.config.schema import Pricing
    from gateway.outcome import Outcome

__all__ = ["ResponsesStream"]

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
#: The events whose ``response`` object the gateway reads (None: an event whose name is in its data).
_LIFECYCLE = frozenset({None, b"response.created", b"response.queued", b"response.in_progress",
                        *(name.encode() for name in _TERMINAL)})


class ResponsesStream(StreamBody):
    __slots__ = ("_model", "_max_event_bytes", "_window", "_terminal", "_sequence")

    def __init__(self, first, rest, client_model: str, deadline, peer, label, *, max_event_bytes: int,
                 outcome: Outcome | None = None, pricing: Pricing | None = None) -> None:
        super().__init__(first, rest, deadline, peer, label, outcome, pricing)
        self._model = client_model
        self._max_event_bytes = max_event_bytes
        self._window = None
        #: The terminal event, framed, sent by ``_closing``.
        self._terminal = b""
        #: The next ``sequence_number`` when a guardrail changes how many events there are.
        self._sequence = 0

    def hold_back(self, window) -> None:
        """A tap (``guard.responses_window.ResponsesWindow``) that holds text back until it has scanned it."""
        self._window = window

    def _events(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        decoder = SSEDecoder(self._max_event_bytes)
        window = self._window
        for piece in pieces:
            out = []
            for name, data in decoder.feed(piece):
                if self._terminal:  # something after the end: the end is not the end
                    out.append(self._terminal)
                    self._terminal = b""
                if window is None and name not in _LIFECYCLE:
                    out.append(_framed(name, data))  # PERF: nothing to read in it
                    continue
                event = _parsed(data)
                if event is None:
                    out.append(_framed(name, data))
                    continue
                events = [event] if window is None else window.feed(event)
                if window is not None and window.blocked:
                    self._terminal = self._emit(window.blocked_event())
                    if out:
                        yield b"".join(out)
                    return
                for one in events:
                    framed = self._emit(one)
                    if one.get("type") in _TERMINAL:
                        self._terminal = framed
                    else:
                        out.append(framed)
            if out:
                yield b"".join(out)
        if window is not None:
            held = window.close()
            if window.blocked:
                self._terminal = self._emit(window.blocked_event())
            elif held:
                yield b"".join(self._emit(one) for one in held)

    def _emit(self, event: dict) -> bytes:
        response = event.get("response")
        if isinstance(response, dict):
            if "model" in response:
                response["model"] = self._model
            if event.get("type") == "response.completed" and isinstance(response.get("usage"), dict):
                self._usage(response["usage"], response)
        if self._window is not None and "sequence_number" in event:
            event["sequence_number"] = self._sequence
            self._sequence += 1
        kind = event.get("type")
        return _framed(kind.encode() if isinstance(kind, str) else None, dumps(event))

    def _closing(self) -> bytes:
        return self._terminal

    def _failure(self, error):
        yield sse_error(self.label, error)


def _parsed(data: bytes) -> dict | None:
    try:
        event = loads(data)
    except ValueError as e:
        raise unexpected_shape("event", e) from e
    return event if isinstance(event, dict) else None


def _framed(name: bytes | None, data: bytes) -> bytes:
    return frame(data) if name is None else b"event: " + name + b"\n" + frame(data)
