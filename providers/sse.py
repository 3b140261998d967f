"""Server-sent events from an upstream: splitting a byte stream into events, in linear time, with a cap.

Follows the WHATWG event-stream rules that matter to LLM APIs: events end at a blank line, several
``data:`` lines join with ``\\n``, ``:`` lines are comments, CRLF, LF and a lone CR all end a line.
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

from providers.base import ProviderResponseError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder"]

#: The largest event an upstream may send (``[gateway] max_sse_event_bytes``).
DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024

Event = tuple[bytes | None, bytes]


class SSEDecoder:
    """Feeds on raw bytes as they arrive; returns each complete event as ``(event_name, data)``.

    Every byte is scanned once and copied at most twice however the upstream splits its writes, so one
    huge event costs what its size costs; an event over ``max_event_bytes`` (complete or not) raises
    ``ProviderResponseError``, which fails the attempt.
    """

    __slots__ = ("_buf", "_scan", "_cr", "_limit")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        #: Where the search for the next blank line resumes in ``_buf``.
        self._scan = 0
        #: The last feed ended with CR, which a LF at the start of the next one completes.
        self._cr = False
        self._limit = max_event_bytes

    def feed(self, data: bytes) -> list[Event]:
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        if buf:
            buf += data
            if buf.find(b"\n\n", self._scan) < 0:
                self._held(len(buf))
                return []
            data = bytes(buf)
            buf.clear()
        elif b"\n\n" not in data:
            if data:
                buf += data
                self._held(len(buf))
            return []
        blocks = data.split(b"\n\n")
        rest = blocks.pop()
        if rest:
            buf += rest
            self._held(len(buf))
        else:
            self._scan = 0
        limit = self._limit
        events = []
        for block in blocks:
            if len(block) > limit:
                raise ProviderResponseError(f"upstream sent an event over the limit of {limit} bytes")
            # PERF: the usual event is one "data: {...}" line.
            if block.startswith(b"data: ") and b"\n" not in block:
                events.append((None, block[6:]))
                continue
            event = _parse(block)
            if event is not None:
                events.append(event)
        return events

    def _held(self, size: int) -> None:
        """An incomplete event of ``size`` bytes is buffered: check it, and resume the search at its end."""
        if size > self._limit:
            raise ProviderResponseError(f"upstream sent an event over the limit of {self._limit} bytes")
        # NOTE: one byte back, in case the blank line straddles this feed and the next.
        self._scan = size - 1


def _parse(block: bytes) -> Event | None:
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
