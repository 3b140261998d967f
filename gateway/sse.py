"""Server-sent events to clients: framing chunk payloads, the closing error event, the model rename.

Decoding an upstream's events is ``providers.sse``.
"""

from __future__ import annotations

import ujson

from providers.jsonio import NonFiniteNumberError, dumps

__all__ = ["DONE", "ModelRewriter", "frame", "error_event"]

DONE = b"data: [DONE]\n\n"


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def error_event(error: dict) -> bytes:
    """The event that ends a stream which failed after its first byte (never a silent truncation)."""
    return frame(dumps(error))


class ModelRewriter:
    """Puts the model name the client asked for into each chunk, re-encoding only when it must.

    The first chunk is parsed to learn the name the upstream writes (it may differ from the one
    sent, e.g. a dated snapshot); later chunks get a byte replacement of that exact JSON member.
    """

    __slots__ = ("_client_model", "_client_json", "_patterns", "_same")

    def __init__(self, client_model: str) -> None:
        self._client_model = client_model
        self._client_json = dumps(client_model)
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
            encoded = dumps(upstream)
            self._patterns = (b'"model":' + encoded, b'"model": ' + encoded)
        chunk["model"] = self._client_model
        try:
            return dumps(chunk)
        except NonFiniteNumberError:
            return payload  # relayed as the upstream wrote it, like every later chunk
