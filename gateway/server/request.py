"""One HTTP/1.1 request as the connection parses it: head checks (RFC 9112), its environ, its body as read.

``RequestParser`` is the protocol object llhttp (through httptools) calls back while it parses; it
applies the rules llhttp leaves to the server (sizes, Host, Transfer-Encoding, Expect) and raises
``Refusal`` for a request the gateway must refuse before the app sees it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import httptools

__all__ = ["Refusal", "Request", "RequestParser", "ServerLimits"]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What a client may send, and how slowly (``[gateway]`` keys; RFC 9112 leaves the values to servers)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 8 * 1024
    max_headers: int = 100
    max_head_bytes: int = 64 * 1024


class Refusal(Exception):
    """A request answered by the server itself; the connection closes after the answer."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


#: Header names whose values the parser checks before they reach the environ.
_HOST, _LENGTH, _CODING, _EXPECT = "HTTP_HOST", "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "HTTP_EXPECT"
_CHECKED = frozenset({_HOST, _LENGTH, _CODING, _EXPECT})
#: CGI's names for the two headers the environ holds without the HTTP_ prefix.
_UNPREFIXED = {b"CONTENT_TYPE": "CONTENT_TYPE", b"CONTENT_LENGTH": "CONTENT_LENGTH"}
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
#: The framing a chunk may take beyond its data (its size line and line ends) before its extensions count.
_CHUNK_FRAMING = 32
#: Distinct header names whose environ key is remembered; more are computed each time.
_KEY_CACHE_SIZE = 512


class Request:
    """What the connection knows of one request: its environ, the state of its head and body."""

    __slots__ = ("env", "url", "started", "head_done", "complete", "body", "keep_alive", "version",
                 "expect_continue", "continued", "error", "upgrade")

    def __init__(self, env: dict) -> None:
        self.env = env
        self.url = b""
        #: ``time.monotonic()`` at its first byte: the head must be complete within header_timeout_s.
        self.started = time.monotonic()
        self.head_done = False
        self.complete = False
        #: Body bytes parsed and not yet read by the app.
        self.body = bytearray()
        self.keep_alive = False
        self.version = "1.1"
        self.expect_continue = False
        #: ``100 Continue`` was sent.
        self.continued = False
        #: Why this request (or the rest of its body) cannot be read; set once, the parser is then done.
        self.error: Refusal | None = None
        #: CONNECT or an Upgrade: what follows its head is not HTTP/1.1, so the connection ends after it.
        self.upgrade = False


class RequestParser:
    """Feeds a connection's bytes to llhttp; each request found goes on ``queue`` in order (pipelining).

    The counts of the message being parsed live here (one is parsed at a time): its fields, their sizes
    as llhttp hands them over, its Host headers, the bytes fed while its head was incomplete from the
    start to the end of a read (which bounds what llhttp may hold of a field not yet ended), and, for a
    chunked body, the bytes fed beyond the body's own: chunk sizes, extensions and trailer fields, which
    are bounded the same way (an endless trailer or extension is refused, not buffered).
    """

    __slots__ = ("queue", "_parser", "_parsing", "_base", "_limits", "_keys", "dead", "_fields", "_head_bytes",
                 "_head_fed", "_hosts", "_framing", "_chunks", "_max_field", "_max_fields", "_max_head")

    def __init__(self, base_env: Mapping, limits: ServerLimits, keys: dict[bytes, str | None]) -> None:
        self.queue: deque[Request] = deque()
        self._parser = httptools.HttpRequestParser(self)
        self._parsing: Request | None = None
        self._base = base_env
        self._limits = limits
        #: Header name -> environ key (None: a name with "_", dropped); shared by the worker's connections.
        self._keys = keys
        #: The parser stopped (an error or an upgrade): nothing more is read from this connection.
        self.dead = False
        self._fields = self._head_bytes = self._head_fed = self._hosts = self._framing = self._chunks = 0
        self._max_field = limits.max_header_bytes
        self._max_fields = limits.max_headers
        self._max_head = limits.max_head_bytes

    def feed(self, data: bytes) -> None:
        req = self._parsing
        in_body = req is not None and req.head_done and not req.complete
        if req is not None and req.head_done:
            req = None
        if in_body:
            self._framing += len(data)  # less what on_body hands over: the framing around the body
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop_at_upgrade()
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            self._fail(cause if isinstance(cause, Refusal) else Refusal(400, "Malformed HTTP request", "invalid_http"))
        except httptools.HttpParserError as e:
            self._fail(Refusal(400, f"Malformed HTTP request: {e}", "invalid_http"))
        else:
            if req is not None and req is self._parsing and not req.head_done:
                # NOTE: a bound on memory, not an exact count: the read the head began in is not counted.
                self._head_fed += len(data)
                if self._head_fed > self._max_head:
                    self._fail(Refusal(431, _too_large(self._limits), "headers_too_large"))
            elif in_body and not self._parsing.complete and self._framing > self._max_head + _CHUNK_FRAMING * self._chunks:
                self._fail(Refusal(431, "Chunk extensions or trailer fields too large", "headers_too_large"))

    def _fail(self, refusal: Refusal) -> None:
        self.dead = True
        req = self._parsing
        if req is None or req.complete:
            req = Request(dict(self._base))
            self.queue.append(req)
        req.error = refusal

    def _stop_at_upgrade(self) -> None:
        self.dead = True
        if self._parsing is not None:
            self._parsing.upgrade = True

    # --- llhttp callbacks (httptools looks them up by name) -----------------------------------------

    def on_message_begin(self) -> None:
        req = self._parsing = Request(self._base.copy())
        self.queue.append(req)
        self._fields = self._head_bytes = self._head_fed = self._hosts = self._framing = self._chunks = 0

    def on_url(self, url: bytes) -> None:
        # NOTE: called once per piece when the request line arrives in several reads.
        req = self._parsing
        req.url += url
        if len(req.url) > self._limits.max_request_line:
            raise Refusal(414, f"The request line is over {self._limits.max_request_line} bytes", "uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._parsing
        if req.head_done:
            return  # a trailer field of a chunked body: not part of the request's head
        size = len(name) + len(value)
        self._fields += 1
        self._head_bytes += size + 4
        if size > self._max_field or self._fields > self._max_fields or self._head_bytes > self._max_head:
            raise Refusal(431, _too_large(self._limits), "headers_too_large")
        try:
            key = self._keys[name]
        except KeyError:
            key = self._key(name)
        if key is None:
            return
        text = value.decode("latin-1")
        env = req.env
        if key in _CHECKED:
            self._check(req, key, text)
        elif key in env:
            env[key] += ", " + text  # RFC 9110, section 5.3: repeated fields combine with commas
            return
        env[key] = text

    def _key(self, name: bytes) -> str | None:
        # NOTE: as other WSGI servers: a name with "_" could pose as its dash-named twin in the environ.
        key = None if b"_" in name else name.upper().replace(b"-", b"_")
        key = None if key is None else _UNPREFIXED.get(key) or "HTTP_" + key.decode("latin-1")
        if len(self._keys) < _KEY_CACHE_SIZE:
            self._keys[name] = key
        return key

    def _check(self, req: Request, key: str, value: str) -> None:
        if key == _HOST:
            self._hosts += 1
            if self._hosts > 1:
                raise Refusal(400, "A request must carry one Host header", "invalid_host")
        elif key == _LENGTH:
            # RFC 9112, section 6.3: several or invalid lengths are an unrecoverable framing error.
            if key in req.env or not value.isdigit() or not value.isascii():
                raise Refusal(400, "Invalid or repeated Content-Length", "invalid_content_length")
        elif key == _CODING:
            if key in req.env or value.lower() != "chunked":
                raise Refusal(400, "Transfer-Encoding must be exactly chunked", "invalid_transfer_encoding")
        elif value.lower() == "100-continue":
            req.expect_continue = True
        else:
            raise Refusal(417, f"Unsupported expectation: {value}", "expectation_failed")

    def on_headers_complete(self) -> None:
        req = self._parsing
        req.head_done = True
        parser = self._parser
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise Refusal(505, f"HTTP/{version} is not supported: use HTTP/1.1", "http_version_not_supported")
        env = req.env
        if _LENGTH in env and _CODING in env:
            # RFC 9112, section 6.3: both means a smuggling attempt; llhttp refuses it too.
            raise Refusal(400, "Content-Length and Transfer-Encoding together", "invalid_content_length")
        if not self._hosts and version == "1.1":
            raise Refusal(400, "An HTTP/1.1 request must carry a Host header", "invalid_host")
        req.version = version
        # RFC 9112, section 6.1: a Transfer-Encoding in HTTP/1.0 makes its framing suspect: close after.
        req.keep_alive = parser.should_keep_alive() and not (version == "1.0" and _CODING in env)
        env["REQUEST_METHOD"] = parser.get_method().decode("latin-1")
        env["SERVER_PROTOCOL"] = _PROTOCOLS[version]
        url = req.url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
        elif url == b"*":
            path, query = url, b""
        else:
            # RFC 9112, section 3.2.2: absolute-form, e.g. from a client that takes us for a proxy.
            parsed = httptools.parse_url(url)
            path, query = parsed.path or b"/", parsed.query or b""
        if b"%" in path:
            path = unquote_to_bytes(path)
        # PEP 3333: PATH_INFO holds the path's bytes as latin-1.
        env["PATH_INFO"] = path.decode("latin-1")
        env["QUERY_STRING"] = query.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._parsing.body += body
        self._framing -= len(body)

    def on_chunk_header(self) -> None:
        self._chunks += 1

    def on_message_complete(self) -> None:
        self._parsing.complete = True


def _too_large(limits: ServerLimits) -> str:
    return (
        f"Request headers too large: at most {limits.max_headers} headers of {limits.max_header_bytes} "
        f"bytes each, {limits.max_head_bytes} bytes in all"
    )
