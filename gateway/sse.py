"""Server-sent events: splitting an upstream byte stream into events, and framing events for clients."""

from __future__ import annotations

import ujson

__all__ = ["DONE", "SSEDecoder", "ModelRewriter", "frame", "error_event"]

DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_event(error: dict) -> bytes:
    """The event that ends a stream which failed after its first byte (never a silent truncation)."""
    return frame(ujson.dumps(error, escape_forward_slashes=False).encode())


class SSEDecoder:
    """Feeds on raw bytes as they arrive; returns each complete event as ``(event_name, data)``.

    Follows the WHATWG event-stream rules that matter to LLM APIs: events end at a blank line,
    several ``data:`` lines join with ``\\n``, ``:`` lines are comments, CRLF and LF both end lines.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[bytes | None, bytes]]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            # NOTE: a CR at the very end may be half of a CRLF; it is normalised on the next feed.
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            self._buf = buf
            return []
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()
        events = []
        for block in blocks:
            # PERF: the usual event is one "data: {...}" line.
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append((None, block[6:]))
                continue
            event = self._parse(block)
            if event is not None:
                events.append(event)
        return events

    @staticmethod
    def _parse(block: bytes) -> tuple[bytes | None, bytes] | None:
        name = None
        data = []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value
        if not data and name is None:
            return None
        return name, b"\n".join(data)


class ModelRewriter:
    """Puts the model name the client asked for into each chunk, re-encoding only when it must.

    The first chunk is parsed to learn the name the upstream writes (it may differ from the one
    sent, e.g. a dated snapshot); later chunks get a byte replacement of that exact JSON member.
    """

    __slots__ = ("_client_model", "_client_json", "_patterns", "_same")

    def __init__(self, client_model: str) -> None:
        self._client_model = client_model
        self._client_json = ujson.dumps(client_model, escape_forward_slashes=False).encode()
        self._patterns: tuple[bytes, bytes] | None = None
        #: The upstream already writes the client's name: nothing to change.
        self._same = False

    def __call__(self, payload: bytes) -> bytes:
        if self._same:
            return payload
        patterns = self._patterns
        if patterns is not None:
            # PERF: no JSON round trip on the hot path of a stream.
            if patterns[0] in payload:
                return payload.replace(patterns[0], b'"model":' + self._client_json, 1)
            if patterns[1] in payload:
                return payload.replace(patterns[1], b'"model": ' + self._client_json, 1)
        return self._rewrite_parsed(payload)

    def _rewrite_parsed(self, payload: bytes) -> bytes:
        try:
            chunk = ujson.loads(payload)
        except ValueError:
            return payload
        if not isinstance(chunk, dict) or "model" not in chunk:
            return payload
        upstream = chunk["model"]
        if upstream == self._client_model:
            self._same = True
            return payload
        if self._patterns is None and isinstance(upstream, str):
            encoded = ujson.dumps(upstream, escape_forward_slashes=False).encode()
            self._patterns = (b'"model":' + encoded, b'"model": ' + encoded)
        chunk["model"] = self._client_model
        return ujson.dumps(chunk, escape_forward_slashes=False).encode()
