"""A loopback HTTP/1.1 upstream that speaks OpenAI's chat-completions wire format, with scripted faults.

The upstream serves ``POST <any prefix>/chat/completions``. What it does is chosen by the request body's
``model`` field, which the gateway fills from the provider's configured ``model_name``:

``ok`` (or any name not listed below)
    A canned ``chat.completion`` whose content is ``upstream says hi`` (``CONTENT``) and whose usage is
    ``USAGE``. With ``"stream": true``: SSE events, a role delta, one content delta per word of ``CONTENT``,
    a final chunk with ``finish_reason: "stop"``, a usage chunk with ``choices: []`` when
    ``stream_options.include_usage`` is true, then ``data: [DONE]``. Streams use chunked encoding and keep
    the connection alive, as api.openai.com does.
``status-NNN``
    Answers status NNN with an OpenAI-shaped error body whose message is ``upstream error NNN``.
``slow-MS``
    Waits MS milliseconds, then answers as ``ok`` (streams: waits before the response head).
``stream-delay-MS-N``
    Streams a role delta, then N content deltas (``word0 `` ... ``wordN-1 ``) with MS milliseconds before
    each, then the final chunk and ``[DONE]``. Answers as ``ok`` when not streaming.
``reset``
    Reads the request, then resets the TCP connection (SO_LINGER 0 + close) without answering.
``reset-mid-stream-K``
    Sends the response head and K events (role delta first), then resets the connection.
``close-mid-stream-K``
    Sends the response head and K events, then ends the chunked body cleanly without ``[DONE]``.
``hang-after-headers``
    Sends a 200 response head (event-stream when streaming, else a ``Content-Length`` that never comes),
    then nothing until the client goes away.

Every request is recorded (path, lower-cased headers, parsed JSON body). When the client goes away before the
upstream finished answering (it closed the connection, or a write failed), the record's ``aborted_at`` is set
to ``time.monotonic()`` of the moment it was noticed: the upstream watches the socket while it waits, so a
closed connection is seen within ``_POLL_S`` even between events.
"""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = [
    "CONTENT",
    "USAGE",
    "RecordedRequest",
    "Upstream",
    "free_port",
    "refused_base_url",
]

CONTENT = "upstream says hi"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}

# How often a waiting handler looks at its socket to see whether the client went away.
_POLL_S = 0.02
# A hanging handler gives up after this long, so a stuck test cannot pin a thread forever.
_HANG_LIMIT_S = 60.0

_STATUS = re.compile(r"status-(\d{3})")
_SLOW = re.compile(r"slow-(\d+)")
_STREAM_DELAY = re.compile(r"stream-delay-(\d+)-(\d+)")
_RESET_MID = re.compile(r"reset-mid-stream-(\d+)")
_CLOSE_MID = re.compile(r"close-mid-stream-(\d+)")

_ERROR_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    422: ("invalid_request_error", "unprocessable"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


class _ClientGone(Exception):
    """The client closed or reset the connection while the upstream was still answering."""


@dataclass
class RecordedRequest:
    """One request as the upstream received it."""

    path: str
    headers: dict[str, str]
    body: object
    received_at: float
    aborted_at: float | None = None

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the kernel picked it a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_base_url() -> str:
    """An ``api_base`` whose connections are refused: a free port with no listener."""
    return f"http://127.0.0.1:{free_port()}/v1"


class Upstream:
    """The fault-scripted upstream, served from daemon threads of the test process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.upstream = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-upstream", daemon=True)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received since the last ``clear()``, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` until it holds or ``timeout`` seconds pass; returns its last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return predicate()
            time.sleep(_POLL_S)
        return True

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    upstream: Upstream


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # NOTE: without TCP_NODELAY each small write after the first can wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    # -- request ---------------------------------------------------------------------------------------

    def do_POST(self) -> None:
        raw = self._read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            received_at=time.monotonic(),
        )
        self.server.upstream._record(rec)
        if not self.path.split("?", 1)[0].endswith("/chat/completions"):
            self._send_json(404, _error(404, f"no route for {self.path}"))
            return
        if not isinstance(body, dict):
            self._send_json(400, _error(400, "upstream got a body that is not a JSON object"))
            return
        try:
            self._answer(body)
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            rec.aborted_at = time.monotonic()
            self.close_connection = True

    def do_GET(self) -> None:
        self._send_json(404, _error(404, f"no route for GET {self.path}"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- behaviours ------------------------------------------------------------------------------------

    def _answer(self, body: dict) -> None:
        model = str(body.get("model", ""))
        stream = body.get("stream") is True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if m := _STATUS.fullmatch(model):
            status = int(m.group(1))
            self._send_json(status, _error(status, f"upstream error {status}"))
        elif m := _SLOW.fullmatch(model):
            self._wait(int(m.group(1)) / 1000)
            self._complete(model, stream, include_usage)
        elif m := _STREAM_DELAY.fullmatch(model):
            if not stream:
                self._send_json(200, _completion(model))
                return
            delay, n = int(m.group(1)) / 1000, int(m.group(2))
            self._start_stream()
            self._send_event(_chunk(model, {"role": "assistant", "content": ""}))
            for i in range(n):
                self._wait(delay)
                self._send_event(_chunk(model, {"content": f"word{i} "}))
            self._finish_stream(model, include_usage)
        elif model == "reset":
            self._reset()
        elif m := _RESET_MID.fullmatch(model):
            self._start_stream()
            for event in _stream_events(model, include_usage)[: int(m.group(1))]:
                self._send_event(event)
            self._wait(_POLL_S)  # let the events leave before the RST discards unsent data
            self._reset()
        elif m := _CLOSE_MID.fullmatch(model):
            self._start_stream()
            for event in _stream_events(model, include_usage)[: int(m.group(1))]:
                self._send_event(event)
            self.wfile.write(b"0\r\n\r\n")
        elif model == "hang-after-headers":
            if stream:
                self._start_stream()
            else:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
            self._wait(_HANG_LIMIT_S)
            self.close_connection = True
        else:
            self._complete(model, stream, include_usage)

    def _complete(self, model: str, stream: bool, include_usage: bool) -> None:
        if not stream:
            self._send_json(200, _completion(model))
            return
        self._start_stream()
        for event in _stream_events(model, include_usage):
            self._send_event(event)
        self.wfile.write(b"0\r\n\r\n")

    # -- wire helpers ----------------------------------------------------------------------------------

    def _send_json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_event(self, data: bytes) -> None:
        frame = b"data: " + data + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))

    def _finish_stream(self, model: str, include_usage: bool) -> None:
        self._send_event(_chunk(model, {}, finish_reason="stop"))
        if include_usage:
            self._send_event(_usage_chunk(model))
        self._send_event(b"[DONE]")
        self.wfile.write(b"0\r\n\r\n")

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds``, but raise ``_ClientGone`` as soon as the client closes the connection."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while (left := deadline - time.monotonic()) > 0:
            if self.server.upstream._stopping.is_set():
                raise _ClientGone
            readable, _, _ = select.select([sock], [], [], min(left, _POLL_S * 5))
            if not readable:
                continue
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except (ConnectionResetError, BrokenPipeError) as e:
                raise _ClientGone from e
            if not peek:
                raise _ClientGone
            # A pipelined next request: not a disconnect; keep the remaining wait as plain sleep.
            time.sleep(max(0.0, deadline - time.monotonic()))
            return

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # NOTE: the socket only really closes once the makefile() objects that share it are closed.
        self.rfile.close()
        self.wfile.close()
        self.connection.close()
        self.close_connection = True


# -- payloads ------------------------------------------------------------------------------------------


def _error(status: int, message: str) -> dict:
    type_, code = _ERROR_TYPES.get(status, ("server_error", "upstream_failure"))
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _completion(model: str) -> dict:
    return {
        "id": "chatcmpl-upstream-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_upstream",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CONTENT},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": dict(USAGE),
    }


def _chunk(model: str, delta: dict, finish_reason: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-upstream-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
    ).encode()


def _usage_chunk(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-upstream-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": dict(USAGE),
        }
    ).encode()


def _stream_events(model: str, include_usage: bool) -> list[bytes]:
    """The ``data:`` payloads of a complete ``ok`` stream, ``[DONE]`` included."""
    words = CONTENT.split(" ")
    events = [_chunk(model, {"role": "assistant", "content": ""})]
    events += [_chunk(model, {"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    events.append(_chunk(model, {}, finish_reason="stop"))
    if include_usage:
        events.append(_usage_chunk(model))
    events.append(b"[DONE]")
    return events
