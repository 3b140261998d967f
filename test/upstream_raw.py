"""A loopback upstream that answers each model with bytes a test scripts: faulty, oversized or ill-typed answers.

``RawUpstream.on(model, answer)`` makes requests whose body names ``model`` get ``answer``: raw bytes
written as they are (a whole HTTP response, or garbage), a list of pieces written one after another, or
a callable given the handler. The connection closes after every answer. ``response`` and ``sse``
build the usual answers; the rest is up to the test.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from upstream import Upstream
from upstream_wire import Handler, RecordedRequest, openai_error

__all__ = ["RawUpstream", "chunk", "response", "sse"]

Answer = bytes | list[bytes] | Callable[[Handler], None]


def response(status: int, body: bytes, content_type: str = "application/json", *, length: int | None = None) -> bytes:
    """A whole HTTP/1.1 response; ``length`` overrides the Content-Length it announces."""
    head = (f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(*payloads: bytes, done: bool = True) -> list[bytes]:
    """A chunked event-stream response: one ``data:`` event per payload, then ``[DONE]``."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    events = [chunk(b"data: " + p + b"\n\n") for p in payloads]
    if done:
        events.append(chunk(b"data: [DONE]\n\n"))
    return [head, *events, b"0\r\n\r\n"]


class RawHandler(Handler):
    def answer(self, rec: RecordedRequest) -> None:
        script = self.server.upstream.scripts.get(rec.model or "")
        self.close_connection = True
        if script is None:
            self.send_json(404, openai_error(404, f"nothing scripted for {rec.model!r}"))
        elif callable(script):
            script(self)
        else:
            for piece in script if isinstance(script, list) else [script]:
                self.connection.sendall(piece)


class RawUpstream(Upstream):
    def __init__(self) -> None:
        super().__init__(RawHandler)
        self.scripts: dict[str, Answer] = {}

    def on(self, model: str, answer: Answer) -> None:
        self.scripts[model] = answer


def completion_json(**fields: object) -> bytes:
    """A chat.completion body with ``fields`` replacing its defaults (to give them the wrong types)."""
    body = {"id": "chatcmpl-raw", "object": "chat.completion", "created": 0, "model": "raw",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    body.update(fields)
    return json.dumps(body).encode()
