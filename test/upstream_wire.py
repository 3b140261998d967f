"""The HTTP/1.1 plumbing every loopback upstream shares: recorded requests, multipart forms, the base handler.

``Handler`` reads each POST (``Content-Length`` or chunked), parses its JSON or multipart/form-data body
(``parse_form``, RFC 7578), records it with its ``Upstream`` and calls ``answer``; subclasses speak a
provider's wire with its helpers (JSON, chunked bodies, server-sent events, waiting while watching the
socket, TCP resets). ``upstream``, ``upstream_azure`` and ``upstream_anthropic`` build on it.
"""

from __future__ import annotations

import json
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from upstream import Upstream

__all__ = [
    "HANG_LIMIT_S",
    "POLL_S",
    "FilePart",
    "Form",
    "Handler",
    "RecordedRequest",
    "Server",
    "free_port",
    "openai_error",
    "parse_form",
    "refused_base_url",
]

# How often a waiting handler looks at its socket to see whether the client went away.
POLL_S = 0.02
# A hanging (or gated) handler gives up after this long, so a stuck test cannot pin a thread forever.
HANG_LIMIT_S = 60.0

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


def openai_error(status: int, message: str, param: str | None = None) -> dict:
    """OpenAI's error body for ``status``: every OpenAI endpoint's failures, the base handler's stray GETs."""
    type_, code = _ERROR_TYPES.get(status, ("server_error", "upstream_failure"))
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


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


class Server(ThreadingHTTPServer):
    """The threaded server an ``Upstream`` runs; ``upstream`` is the one that owns it."""

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
    server: Server

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
        self.send_json(404, openai_error(404, f"no route for GET {self.path}"))

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
            readable, _, _ = select.select([sock], [], [], min(left, POLL_S * (1 if until else 5)))
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
        self.wait(HANG_LIMIT_S, self.server.upstream.gate)

    def reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # NOTE: the socket only really closes once the makefile() objects that share it are closed.
        self.rfile.close()
        self.wfile.close()
        self.connection.close()
        self.close_connection = True
