"""A loopback HTTP/1.1 upstream that speaks OpenAI's wire format for every endpoint, with scripted faults.

The upstream serves ``POST <any prefix>/<OpenAI path>`` for chat and text completions, embeddings,
moderations, audio transcriptions, translations and speech, image generations, edits and variations,
and the Responses API. Every request is recorded (path with its query, lower-cased headers, the parsed
JSON body, or the parsed multipart form). What it does is chosen by the ``model`` field (of the JSON
body or the form), which the gateway fills from the provider's configured ``model_name``:

On every endpoint:

``status-NNN``
    Answers status NNN with an OpenAI-shaped error body whose message is ``upstream error NNN``.

On ``/chat/completions`` (``_chat``):

``ok`` (or any name not listed below)
    A canned ``chat.completion`` whose content is ``upstream says hi`` (``CONTENT``) and whose usage is
    ``USAGE``. With ``"stream": true``: SSE events, a role delta, one content delta per word of ``CONTENT``,
    a final chunk with ``finish_reason: "stop"``, a usage chunk with ``choices: []`` when
    ``stream_options.include_usage`` is true, then ``data: [DONE]``. Streams use chunked encoding and keep
    the connection alive, as api.openai.com does.
``tool-call``
    Calls each tool of the request once, the k-th with ``tool_arguments(k)`` (``finish_reason:
    "tool_calls"``; streamed, the arguments come in several deltas); once the last message is a ``tool``
    message, answers ``the tool said: <its content>`` instead.
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

On the other endpoints every model answers as OpenAI does, from the request (see each ``_`` method);
``gated`` (speech, Responses stream) sends the first piece, then waits for ``Upstream.release()``.

When the client goes away before the upstream finished answering (it closed the connection, or a write
failed), the record's ``aborted_at`` is set to ``time.monotonic()`` of the moment it was noticed: the
upstream watches the socket while it waits, so a closed connection is seen within ``_POLL_S``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import select
import socket
import struct
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from media import png_bytes

__all__ = [
    "CONTENT",
    "EMBEDDING_DIMENSIONS",
    "FLAGGED_WORD",
    "TOOL_ARGUMENTS",
    "TRANSCRIPT",
    "TRANSLATION",
    "USAGE",
    "FilePart",
    "Form",
    "Handler",
    "OpenAIHandler",
    "RecordedRequest",
    "Upstream",
    "embedding_vector",
    "free_port",
    "refused_base_url",
    "responses_events",
    "responses_object",
    "speech_bytes",
    "tool_arguments",
]

CONTENT = "upstream says hi"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
#: What the ``tool-call`` model passes to the first tool.
TOOL_ARGUMENTS = {"city": "Paris", "unit": "celsius"}
TRANSCRIPT = "upstream heard a tone"
TRANSLATION = "upstream translated a tone"
#: Each embedding's length unless the request asks for ``dimensions``.
EMBEDDING_DIMENSIONS = 4
#: A moderation input containing this word is flagged for violence.
FLAGGED_WORD = "forbidden"

# How often a waiting handler looks at its socket to see whether the client went away.
_POLL_S = 0.02
# A hanging (or gated) handler gives up after this long, so a stuck test cannot pin a thread forever.
_HANG_LIMIT_S = 60.0
#: How many pieces the speech audio is streamed in.
_SPEECH_PIECES = 4

_STATUS = re.compile(r"status-(\d{3})")
_SLOW = re.compile(r"slow-(\d+)")
_STREAM_DELAY = re.compile(r"stream-delay-(\d+)-(\d+)")
_RESET_MID = re.compile(r"reset-mid-stream-(\d+)")
_CLOSE_MID = re.compile(r"close-mid-stream-(\d+)")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_PARAM = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

_ERROR_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    422: ("invalid_request_error", "unprocessable"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
_AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg", "aac": "audio/aac",
                "flac": "audio/flac", "pcm": "audio/pcm"}
_MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                          "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent",
                          "sexual", "sexual/minors", "violence", "violence/graphic")


class _ClientGone(Exception):
    """The client closed or reset the connection while the upstream was still answering."""


@dataclass
class FilePart:
    """One file of a multipart form, as it arrived."""

    name: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Form:
    """A multipart/form-data body (RFC 7578): text fields and files, in the order they came."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[FilePart] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)

    def getall(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k == name]

    def files_named(self, *names: str) -> list[FilePart]:
        return [f for f in self.files if f.name in names]


@dataclass
class RecordedRequest:
    """One request as the upstream received it: ``body`` is the parsed JSON, ``form`` a parsed form."""

    path: str
    headers: dict[str, str]
    body: object
    received_at: float
    form: Form | None = None
    aborted_at: float | None = None

    @property
    def model(self) -> str | None:
        if self.form is not None:
            return self.form.get("model")
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def route(self) -> str:
        """The path without its query."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the kernel picked it a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused_base_url() -> str:
    """An ``api_base`` whose connections are refused: a free port with no listener."""
    return f"http://127.0.0.1:{free_port()}/v1"


def embedding_vector(index: int, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """The embedding of the ``index``-th input: values float32 holds exactly, so base64 round-trips."""
    return [(-1.0) ** k * (index + 1 + k * 0.25) for k in range(dimensions)]


def tool_arguments(k: int) -> dict:
    """What tool-calling models pass to the k-th tool of a request: ``TOOL_ARGUMENTS`` to the first."""
    return dict(TOOL_ARGUMENTS) if k == 0 else {**TOOL_ARGUMENTS, "call": k}


def speech_bytes(text: str, response_format: str = "mp3") -> bytes:
    """The audio ``/audio/speech`` answers for ``text``: 6 KiB of bytes derived from it, behind an ID3 tag."""
    digest = hashlib.sha256(text.encode()).digest()
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + response_format.encode() + digest * 192


def parse_form(content_type: str, raw: bytes) -> Form | None:
    """A multipart/form-data body, or None when it is not well-formed (no boundary, no closing delimiter)."""
    m = _BOUNDARY.search(content_type)
    if not m:
        return None
    delimiter = b"\r\n--" + m.group(1).encode()
    segments = (b"\r\n" + raw).split(delimiter)
    if len(segments) < 2 or not segments[-1].startswith(b"--"):
        return None
    form = Form()
    for segment in segments[1:-1]:
        head, sep, data = segment.partition(b"\r\n\r\n")
        if not sep:
            return None
        headers = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if name.strip():
                headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        params = {k: re.sub(r"\\(.)", r"\1", v) for k, v in _PARAM.findall(disposition)}
        if "filename" in params:
            name, filename = params.get("name", ""), params["filename"]
            form.files.append(FilePart(name, filename, headers.get("content-type"), data))
        else:
            form.fields.append((params.get("name", ""), data.decode("utf-8")))
    return form


class Upstream:
    """A scripted upstream served from daemon threads of the test process; ``handler`` speaks its wire."""

    def __init__(self, handler: type[Handler] | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        #: What ``gated`` models wait for before they finish answering.
        self.gate = threading.Event()
        self._server = _Server(("127.0.0.1", 0), handler or OpenAIHandler)
        self._server.upstream = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-upstream", daemon=True)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.gate.set()
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
        self.gate.clear()

    def release(self) -> None:
        """Let ``gated`` answers finish."""
        self.gate.set()

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


class Handler(BaseHTTPRequestHandler):
    """Reads and records each POST, then calls ``answer``; the wire helpers every upstream shares."""

    protocol_version = "HTTP/1.1"
    # NOTE: without TCP_NODELAY each small write after the first can wait ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:
        raw = self._read_body()
        content_type = self.headers.get("Content-Type", "")
        form, body = None, None
        if content_type.startswith("multipart/form-data"):
            form = parse_form(content_type, raw)
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        rec = RecordedRequest(path=self.path, headers={k.lower(): v for k, v in self.headers.items()},
                              body=body, received_at=time.monotonic(), form=form)
        self.server.upstream._record(rec)
        try:
            self.answer(rec)
        except (_ClientGone, BrokenPipeError, ConnectionResetError):
            rec.aborted_at = time.monotonic()
            self.close_connection = True

    def do_GET(self) -> None:
        self.send_json(404, _error(404, f"no route for GET {self.path}"))

    def answer(self, rec: RecordedRequest) -> None:
        raise NotImplementedError

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

    # -- wire helpers ----------------------------------------------------------------------------------

    def send_json(self, status: int, obj: dict) -> None:
        self.send_bytes(status, json.dumps(obj).encode(), "application/json")

    def send_bytes(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self, content_type: str = "text/event-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def send_event(self, data: bytes, name: str | None = None) -> None:
        """One server-sent event, with an ``event:`` line when ``name`` is given."""
        head = b"event: " + name.encode() + b"\n" if name else b""
        self.send_chunk(head + b"data: " + data + b"\n\n")

    def wait(self, seconds: float, until: threading.Event | None = None) -> None:
        """Sleep ``seconds`` or until ``until`` is set; raise ``_ClientGone`` as soon as the client leaves."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while (left := deadline - time.monotonic()) > 0:
            if self.server.upstream._stopping.is_set():
                raise _ClientGone
            if until is not None and until.is_set():
                return
            readable, _, _ = select.select([sock], [], [], min(left, _POLL_S * (1 if until else 5)))
            if not readable:
                continue
            try:
                peek = sock.recv(1, socket.MSG_PEEK)
            except (ConnectionResetError, BrokenPipeError) as e:
                raise _ClientGone from e
            if not peek:
                raise _ClientGone
            # A pipelined next request: not a disconnect; keep the remaining wait without watching.
            left = max(0.0, deadline - time.monotonic())
            if until is None:
                time.sleep(left)
            else:
                until.wait(left)
            return

    def wait_gate(self) -> None:
        self.wait(_HANG_LIMIT_S, self.server.upstream.gate)

    def reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # NOTE: the socket only really closes once the makefile() objects that share it are closed.
        self.rfile.close()
        self.wfile.close()
        self.connection.close()
        self.close_connection = True


class OpenAIHandler(Handler):
    """OpenAI's endpoints, found by the path's last segments (any prefix: the api_base may have one)."""

    #: OpenAI path -> (method name, whether the body is a multipart form); longest paths first.
    ROUTES = {
        "/chat/completions": ("_chat", False),
        "/audio/transcriptions": ("_transcription", True),
        "/audio/translations": ("_translation", True),
        "/audio/speech": ("_speech", False),
        "/images/generations": ("_image_generation", False),
        "/images/edits": ("_image_edit", True),
        "/images/variations": ("_image_variation", True),
        "/completions": ("_text_completion", False),
        "/embeddings": ("_embeddings", False),
        "/moderations": ("_moderations", False),
        "/responses": ("_responses", False),
    }

    def openai_path(self, rec: RecordedRequest) -> str | None:
        """The OpenAI path the request is for, or None after answering an error itself."""
        path = next((p for p in self.ROUTES if rec.route.endswith(p)), None)
        if path is None:
            self.send_json(404, _error(404, f"no route for {self.path}"))
        return path

    def answer(self, rec: RecordedRequest) -> None:
        path = self.openai_path(rec)
        if path is None:
            return
        method, multipart = self.ROUTES[path]
        if multipart and rec.form is None:
            self.send_json(400, _error(400, "upstream expected a well-formed multipart/form-data body"))
            return
        if not multipart and not isinstance(rec.body, dict):
            self.send_json(400, _error(400, "upstream got a body that is not a JSON object"))
            return
        if m := _STATUS.fullmatch(rec.model or ""):
            status = int(m.group(1))
            self.send_json(status, _error(status, f"upstream error {status}"))
            return
        getattr(self, method)(rec.form if multipart else rec.body)

    # -- chat ------------------------------------------------------------------------------------------

    def _chat(self, body: dict) -> None:
        model = str(body.get("model", ""))
        stream = body.get("stream") is True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if m := _SLOW.fullmatch(model):
            self.wait(int(m.group(1)) / 1000)
            self._complete(model, stream, include_usage)
        elif m := _STREAM_DELAY.fullmatch(model):
            if not stream:
                self.send_json(200, _completion(model))
                return
            delay, n = int(m.group(1)) / 1000, int(m.group(2))
            self.start_chunked()
            self.send_event(_chunk(model, {"role": "assistant", "content": ""}))
            for i in range(n):
                self.wait(delay)
                self.send_event(_chunk(model, {"content": f"word{i} "}))
            self._finish_stream(model, include_usage)
        elif model == "reset":
            self.reset()
        elif m := _RESET_MID.fullmatch(model):
            self.start_chunked()
            for event in _stream_events(model, include_usage)[: int(m.group(1))]:
                self.send_event(event)
            self.wait(_POLL_S)  # let the events leave before the RST discards unsent data
            self.reset()
        elif m := _CLOSE_MID.fullmatch(model):
            self.start_chunked()
            for event in _stream_events(model, include_usage)[: int(m.group(1))]:
                self.send_event(event)
            self.end_chunked()
        elif model == "hang-after-headers":
            if stream:
                self.start_chunked()
            else:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
            self.wait(_HANG_LIMIT_S)
            self.close_connection = True
        elif model == "tool-call":
            self._tool_call(body, stream, include_usage)
        else:
            self._complete(model, stream, include_usage)

    def _complete(self, model: str, stream: bool, include_usage: bool) -> None:
        if not stream:
            self.send_json(200, _completion(model))
            return
        self.start_chunked()
        for event in _stream_events(model, include_usage):
            self.send_event(event)
        self.end_chunked()

    def _finish_stream(self, model: str, include_usage: bool) -> None:
        self.send_event(_chunk(model, {}, finish_reason="stop"))
        if include_usage:
            self.send_event(_usage_chunk(model))
        self.send_event(b"[DONE]")
        self.end_chunked()

    def _tool_call(self, body: dict, stream: bool, include_usage: bool) -> None:
        model = body["model"]
        last = (body.get("messages") or [{}])[-1]
        if last.get("role") == "tool":
            text = f"the tool said: {last.get('content')}"
            if not stream:
                self.send_json(200, _completion(model, text))
                return
            self.start_chunked()
            self.send_event(_chunk(model, {"role": "assistant", "content": text}))
            self._finish_stream(model, include_usage)
            return
        calls = []
        for k, tool in enumerate(body["tools"]):
            function = {"name": tool["function"]["name"], "arguments": json.dumps(tool_arguments(k))}
            calls.append({"id": f"call_upstream_{k + 1}", "type": "function", "function": function})
        if not stream:
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            self.send_json(200, _completion(model, message=message, finish_reason="tool_calls"))
            return
        self.start_chunked()
        for k, call in enumerate(calls):
            # One call after another, as OpenAI streams them: the opening delta, then the arguments in pieces.
            opening = {"index": k, **call, "function": {**call["function"], "arguments": ""}}
            delta = {"role": "assistant", "content": None} if k == 0 else {}
            self.send_event(_chunk(model, {**delta, "tool_calls": [opening]}))
            arguments = call["function"]["arguments"]
            third = len(arguments) // 3
            for piece in (arguments[:third], arguments[third:2 * third], arguments[2 * third:]):
                more = {"index": k, "function": {"arguments": piece}}
                self.send_event(_chunk(model, {"tool_calls": [more]}))
        self.send_event(_chunk(model, {}, finish_reason="tool_calls"))
        if include_usage:
            self.send_event(_usage_chunk(model))
        self.send_event(b"[DONE]")
        self.end_chunked()

    # -- text completions, embeddings, moderations -------------------------------------------------------

    def _text_completion(self, body: dict) -> None:
        model = body["model"]
        if body.get("stream") is not True:
            choice = {"text": CONTENT, "index": 0, "logprobs": None, "finish_reason": "stop"}
            self.send_json(200, _text_object(model, [choice], usage=dict(USAGE)))
            return
        self.start_chunked()
        for i, word in enumerate(CONTENT.split(" ")):
            text = word if i == 0 else " " + word
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": None}
            self.send_event(json.dumps(_text_object(model, [choice])).encode())
        done = {"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}
        self.send_event(json.dumps(_text_object(model, [done])).encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            self.send_event(json.dumps(_text_object(model, [], usage=dict(USAGE))).encode())
        self.send_event(b"[DONE]")
        self.end_chunked()

    def _embeddings(self, body: dict) -> None:
        inputs = body.get("input")
        if isinstance(inputs, str) or isinstance(inputs, list) and inputs and isinstance(inputs[0], int):
            count = 1
        elif isinstance(inputs, list) and inputs:
            count = len(inputs)
        else:
            self.send_json(400, _error(400, "'input' must be a non-empty string or array"))
            return
        dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
        data = []
        for i in range(count):
            vector: list[float] | str = embedding_vector(i, dimensions)
            if body.get("encoding_format") == "base64":
                # Little-endian float32, as OpenAI packs them.
                vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        usage = {"prompt_tokens": 2 * count, "total_tokens": 2 * count}
        self.send_json(200, {"object": "list", "data": data, "model": body["model"], "usage": usage})

    def _moderations(self, body: dict) -> None:
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        results = []
        for text in texts:
            flagged = FLAGGED_WORD in str(text)
            results.append({
                "flagged": flagged,
                "categories": {c: flagged and c == "violence" for c in _MODERATION_CATEGORIES},
                "category_scores": {c: 0.97 if flagged and c == "violence" else 0.001
                                    for c in _MODERATION_CATEGORIES},
                "category_applied_input_types": {c: ["text"] for c in _MODERATION_CATEGORIES},
            })
        self.send_json(200, {"id": "modr-upstream-1", "model": body["model"], "results": results})

    # -- audio -----------------------------------------------------------------------------------------

    def _transcription(self, form: Form) -> None:
        self._audio(form, "transcribe", TRANSCRIPT)

    def _translation(self, form: Form) -> None:
        self._audio(form, "translate", TRANSLATION)

    def _audio(self, form: Form, task: str, text: str) -> None:
        files = form.files_named("file")
        if not files:
            self.send_json(400, _error(400, "upstream got no 'file' part", param="file"))
            return
        try:
            with wave.open(io.BytesIO(files[0].data)) as w:
                duration = w.getnframes() / w.getframerate()
        except (wave.Error, EOFError):
            self.send_json(400, _error(400, "Invalid file format: upstream wants a WAV file", param="file"))
            return
        fmt = form.get("response_format") or "json"
        if fmt == "json":
            usage = {"type": "duration", "seconds": max(1, round(duration))}
            self.send_json(200, {"text": text, "usage": usage})
        elif fmt == "verbose_json":
            segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": text, "tokens": [1, 2, 3],
                       "temperature": float(form.get("temperature") or 0), "avg_logprob": -0.2,
                       "compression_ratio": 1.0, "no_speech_prob": 0.01}
            verbose = {"task": task, "language": form.get("language") or "english", "duration": duration,
                       "text": text, "segments": [segment]}
            if "word" in form.getall("timestamp_granularities[]"):
                step = duration / len(text.split())
                verbose["words"] = [{"word": w, "start": i * step, "end": (i + 1) * step}
                                    for i, w in enumerate(text.split())]
            self.send_json(200, verbose)
        elif fmt in ("text", "srt", "vtt"):
            self.send_bytes(200, _subtitles(fmt, text, duration).encode(), "text/plain; charset=utf-8")
        else:
            self.send_json(400, _error(400, f"unsupported response_format {fmt!r}", param="response_format"))

    def _speech(self, body: dict) -> None:
        fmt = body.get("response_format") or "mp3"
        if not body.get("input") or not body.get("voice") or fmt not in _AUDIO_TYPES:
            self.send_json(400, _error(400, "speech needs input, voice and a known response_format"))
            return
        audio = speech_bytes(body["input"], fmt)
        self.start_chunked(_AUDIO_TYPES[fmt])
        size = -(-len(audio) // _SPEECH_PIECES)
        for i in range(0, len(audio), size):
            self.send_chunk(audio[i:i + size])
            if i == 0 and body["model"] == "gated":
                self.wait_gate()
        self.end_chunked()

    # -- images ----------------------------------------------------------------------------------------

    def _image_generation(self, body: dict) -> None:
        n = body.get("n") or 1
        if body.get("response_format") == "b64_json":
            image = base64.b64encode(png_bytes()).decode()
            data = [{"b64_json": image, "revised_prompt": body.get("prompt")}] * n
        else:
            data = [{"url": f"https://images.upstream.test/{i}.png", "revised_prompt": body.get("prompt")}
                    for i in range(n)]
        self.send_json(200, {"created": int(time.time()), "data": data})

    def _image_edit(self, form: Form) -> None:
        if form.get("prompt") is None:
            self.send_json(400, _error(400, "upstream got no 'prompt'", param="prompt"))
            return
        self._images_back(form)

    def _image_variation(self, form: Form) -> None:
        self._images_back(form)

    def _images_back(self, form: Form) -> None:
        """Each uploaded image back as ``b64_json`` (``n`` copies of the first for variations)."""
        images = form.files_named("image", "image[]")
        if not images:
            self.send_json(400, _error(400, "upstream got no 'image' part", param="image"))
            return
        if len(images) == 1:
            images = images * int(form.get("n") or 1)
        data = [{"b64_json": base64.b64encode(f.data).decode()} for f in images]
        self.send_json(200, {"created": int(time.time()), "data": data})

    # -- responses -------------------------------------------------------------------------------------

    def _responses(self, body: dict) -> None:
        """The Responses API: one message output; streamed as its named, numbered events."""
        model = body["model"]
        if body.get("stream") is not True:
            self.send_json(200, responses_object(model, "completed", CONTENT))
            return
        self.start_chunked()
        for i, (name, event) in enumerate(responses_events(model)):
            self.send_event(json.dumps({"type": name, **event, "sequence_number": i}).encode(), name)
            if name == "response.output_text.delta" and model == "gated":
                self.wait_gate()
        self.end_chunked()


# -- payloads ------------------------------------------------------------------------------------------


def _error(status: int, message: str, param: str | None = None) -> dict:
    type_, code = _ERROR_TYPES.get(status, ("server_error", "upstream_failure"))
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _completion(model: str, text: str = CONTENT, *, message: dict | None = None,
                finish_reason: str = "stop") -> dict:
    return {
        "id": "chatcmpl-upstream-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_upstream",
        "choices": [
            {
                "index": 0,
                "message": message or {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
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


def _text_object(model: str, choices: list[dict], usage: dict | None = None) -> dict:
    obj = {"id": "cmpl-upstream-1", "object": "text_completion", "created": int(time.time()), "model": model,
           "choices": choices}
    if usage is not None:
        obj["usage"] = usage
    return obj


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def _subtitles(fmt: str, text: str, duration: float) -> str:
    if fmt == "text":
        return text + "\n"
    if fmt == "srt":
        return f"1\n{_timestamp(0, ',')} --> {_timestamp(duration, ',')}\n{text}\n\n"
    return f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(duration, '.')}\n{text}\n\n"


def _message_item(status: str, text: str | None) -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    content = [] if text is None else [part]
    return {"id": "msg_upstream_1", "type": "message", "status": status, "role": "assistant",
            "content": content}


def responses_object(model: str, status: str, text: str | None) -> dict:
    """A Responses API ``response`` object holding one assistant message (none while in progress)."""
    done = status == "completed"
    usage = {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10}
    return {
        "id": "resp_upstream_1", "object": "response", "created_at": int(time.time()), "status": status,
        "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None,
        "model": model, "output": [_message_item("completed", text)] if done else [],
        "parallel_tool_calls": True, "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage if done else None, "user": None,
        "metadata": {},
    }


def responses_events(model: str) -> Iterator[tuple[str, dict]]:
    """The events of a streamed response, in OpenAI's order, without ``type`` and ``sequence_number``."""
    ids = {"item_id": "msg_upstream_1", "output_index": 0, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield "response.created", {"response": responses_object(model, "in_progress", None)}
    yield "response.in_progress", {"response": responses_object(model, "in_progress", None)}
    yield "response.output_item.added", {"output_index": 0, "item": _message_item("in_progress", None)}
    yield "response.content_part.added", {**ids, "part": empty}
    for i, word in enumerate(CONTENT.split(" ")):
        yield "response.output_text.delta", {**ids, "delta": word if i == 0 else " " + word, "logprobs": []}
    yield "response.output_text.done", {**ids, "text": CONTENT, "logprobs": []}
    yield "response.content_part.done", {**ids, "part": {**empty, "text": CONTENT}}
    yield "response.output_item.done", {"output_index": 0, "item": _message_item("completed", CONTENT)}
    yield "response.completed", {"response": responses_object(model, "completed", CONTENT)}
