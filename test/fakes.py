"""Stand-ins for the upstream client in unit tests of provider translation: fixed answers, no sockets.

They implement ``providers.http.UpstreamClient`` and ``UpstreamStream``, the interface providers send
through; what a real socket does is tested with real upstreams in ``test/integration``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import ujson

from providers.base import Attempt
from providers.http import UpstreamClient, UpstreamStream

__all__ = ["FakeClient", "FakeStream"]


class FakeStream(UpstreamStream):
    """An upstream streamed answer from fixed byte pieces; records whether it was closed."""

    def __init__(self, pieces: list[bytes], status: int = 200) -> None:
        self.status = status
        self.content_type = "text/event-stream"
        self._pieces = pieces
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces

    def read_all(self) -> bytes:
        return b"".join(self._pieces)

    def close(self) -> None:
        self.closed = True


class FakeClient(UpstreamClient):
    """Answers every request with a fixed status and body (or stream) and records what was sent."""

    def __init__(self, status: int = 200, body: bytes = b"", stream: FakeStream | None = None) -> None:
        self._answer = (status, body)
        self._stream = stream
        self.sent: list[tuple[str, dict, Mapping[str, str]]] = []

    def post(self, url: str, body: bytes, headers: Mapping[str, str], attempt: Attempt) -> tuple[int, bytes]:
        self.sent.append((url, ujson.loads(body), headers))
        return self._answer

    def post_stream(self, url: str, body: bytes, headers: Mapping[str, str], attempt: Attempt) -> FakeStream:
        self.sent.append((url, ujson.loads(body), headers))
        assert self._stream is not None
        return self._stream

    def close(self) -> None:
        pass
