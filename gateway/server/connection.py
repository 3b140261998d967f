"""One client connection: its requests read in order, each handed to the WSGI app, each answer written.

pywsgi's ``WSGIServer`` gives every accepted socket to ``Connection(sock, address, server).handle()``
in a greenlet of its own. This class replaces pywsgi's handler: llhttp parses (``request.py``), the
environ is minimal, a head and a small body leave in one ``send``, a stream leaves chunk by chunk
as it is produced. A request the server refuses (bad framing, too large, too slow) gets its JSON error
and the connection closes, so no byte of it can be read as another request.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import gevent
from gevent.hub import get_hub

from gateway.errors import ClientClosedError, InvalidRequestError, RequestTimeoutError, error_body
from gateway.loop import yield_to_loop
from gateway.server.peer import PEER_KEY, Peer
from gateway.server.request import Refusal, Request, RequestParser
from providers.http import send_all

if TYPE_CHECKING:
    from gateway.server.wsgi import GatewayServer

__all__ = ["Connection"]

log = logging.getLogger("gateway.server")
access_log = logging.getLogger("gateway.access")

#: How much one recv may return.
_READ_SIZE = 65536
#: Bodies up to this size leave in the same send as the head (one copy, one segment).
_JOIN_LIMIT = 65536
#: After refusing a request, how long the rest of its bytes are read and dropped, so that closing
#: does not reset the connection (and destroy the answer) before the client has read it.
_LINGER_S = 1.0
_LINGER_BYTES = 1024 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CHUNK_END = b"0\r\n\r\n"
_REASONS = {
    400: "Bad Request", 408: "Request Timeout", 414: "URI Too Long", 417: "Expectation Failed",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 505: "HTTP Version Not Supported",
}


class _Idle(Exception):
    """Ends the wait for the next request: the keep-alive time ran out, or the worker is draining."""


class _Timeout(Exception):
    """A read of the head ran out of time."""


class Connection:
    """pywsgi's ``handler_class``: serves one connection until it closes."""

    __slots__ = (
        "socket", "client_address", "server", "_parser", "_base", "_watcher", "_timers", "_idle_since",
        "_status", "_headers", "_sent", "_close",
    )

    def __init__(self, sock: socket.socket, address: tuple, server: GatewayServer) -> None:
        self.socket = sock
        self.client_address = address
        self.server = server
        self._watcher = None
        #: The idle wait's timers, by length (at most two: a new connection's, and keep-alive's).
        self._timers: dict[float, gevent.Timeout] = {}
        self._idle_since = 0.0
        self._status: str | None = None
        self._headers: list[tuple[str, str]] | None = None
        #: The current answer's head has been written.
        self._sent = False
        #: The connection ends after the current answer.
        self._close = False

    def handle(self) -> None:
        sock = self.socket
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # NOTE: a stream's chunks are small separate sends; with Nagle on, each waits for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self.server
        base = server.get_environ()
        base["REMOTE_ADDR"] = self.client_address[0] if self.client_address else ""
        base["REMOTE_PORT"] = str(self.client_address[1]) if self.client_address else ""
        base[PEER_KEY] = Peer(sock)
        self._base = base
        self._parser = RequestParser(base, server.limits, server.header_keys)
        try:
            self._serve_all()
        except (OSError, gevent.GreenletExit):
            pass  # the client went away, or a hang-up detected while a stream was relayed
        finally:
            if self._watcher is not None:
                self._watcher.close()
            for timer in self._timers.values():
                timer.close()

    def _serve_all(self) -> None:
        queue = self._parser.queue
        first = True
        while True:
            req = self._next(first)
            if req is None:
                return
            first = False
            if req.error is not None:
                self._refuse(req)
                return
            self._serve(req)
            queue.popleft()
            if self._close:
                self._linger()
                return
            if queue:
                # A pipelined request, read while the one before was served: its head's time starts
                # now, and the other connections get their turn first (a loop iteration, with I/O).
                if not queue[0].head_done:
                    queue[0].started = time.monotonic()
                yield_to_loop()

    # --- reading ---------------------------------------------------------------------------------

    def _next(self, first: bool) -> Request | None:
        """The next request whose head is complete (or refused); None when the connection should end."""
        parser = self._parser
        queue = parser.queue
        limits = self.server.limits
        while True:
            if queue:
                req = queue[0]
                if req.head_done or req.error is not None:
                    return req
                timeout = req.started + limits.header_timeout_s - time.monotonic()
                if timeout <= 0:
                    req.error = Refusal(408, "The request head did not arrive in time", "request_timeout")
                    return req
            elif parser.dead:
                return None
            else:
                # Nothing of the next request yet: the connection is idle (a new one must start soon).
                wait = limits.header_timeout_s if first else limits.keepalive_timeout_s
                if not self._wait_idle(wait):
                    return None
                timeout = limits.header_timeout_s
            try:
                data = self._recv(timeout)
            except _Timeout:
                continue  # the head's deadline is checked above
            if not data:
                return None
            parser.feed(data)

    def _recv(self, timeout: float) -> bytes:
        sock = self.socket
        sock.settimeout(timeout)
        try:
            return sock.recv(_READ_SIZE)
        except TimeoutError:
            raise _Timeout() from None

    def _wait_idle(self, timeout: float) -> bool:
        """Wait until the client sends the next request; False when it should be closed instead.

        A draining worker closes an idle connection once it has been idle for a moment (``drain``), so a
        client that was about to send is not cut off mid-request.
        """
        hub = get_hub()
        watcher = self._watcher
        if watcher is None:
            watcher = self._watcher = hub.loop.io(self.socket.fileno(), 1)
        # PERF: a timer per connection, restarted for each wait, not one made per request.
        timer = self._timers.get(timeout)
        if timer is None:
            timer = self._timers[timeout] = gevent.Timeout(timeout, _Idle)
        server = self.server
        self._idle_since = time.monotonic()
        server.idle.add(self)
        timer.start()
        try:
            hub.wait(watcher)
            return True
        except _Idle:
            return False
        finally:
            timer.cancel()
            server.idle.discard(self)

    def close_if_idle(self, idle_s: float) -> None:
        """From the drain: end the wait of a connection idle for ``idle_s`` or longer."""
        if self._watcher is not None and time.monotonic() - self._idle_since >= idle_s:
            get_hub().cancel_wait(self._watcher, _Idle(), close_watcher=False)

    def read_body(self, req: Request) -> None:
        """Read more of ``req``'s body into ``req.body``; raise the error the app should answer with."""
        if req.error is not None:
            raise InvalidRequestError(f"Malformed request body: {req.error}", code="invalid_body")
        if req.expect_continue and not req.continued and req.version == "1.1":
            req.continued = True
            send_all(self.socket, _CONTINUE)
        try:
            data = self._recv(self.server.limits.body_timeout_s)
        except _Timeout:
            raise RequestTimeoutError(
                f"The request body stalled for {self.server.limits.body_timeout_s:g} s"
            ) from None
        except OSError:
            raise ClientClosedError("The client closed the connection during the upload") from None
        if not data:
            raise ClientClosedError("The client closed the connection during the upload")
        self._parser.feed(data)
        if req.error is not None:
            raise InvalidRequestError(f"Malformed request body: {req.error}", code="invalid_body")

    # --- answering -------------------------------------------------------------------------------

    def _serve(self, req: Request) -> None:
        env = req.env
        env["wsgi.input"] = Body(self, req)
        self._status = self._headers = None
        self._sent = False
        self._close = not req.keep_alive
        started = time.monotonic()
        result = None
        try:
            result = self.server.application(env, self._start_response)
            written = self._write(req, result)
        except gevent.GreenletExit:
            self._close = True
            raise
        except OSError:
            self._close = True
            raise
        except Exception:
            # NOTE: Falcon turns every error into an answer; this is the last net, for a bug here.
            log.exception("the app failed on %s %s", env.get("REQUEST_METHOD"), env.get("PATH_INFO"))
            self._close = True
            if not self._sent:
                self._send_error(req, 500, "The gateway failed to process the request.", "internal_error")
            return
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    # NOTE: the last net again: what finishes a request (its callbacks) must not kill the connection.
                    log.exception("closing the answer to %s %s failed", env.get("REQUEST_METHOD"), env.get("PATH_INFO"))
        if access_log.isEnabledFor(logging.INFO) and self.server.access:
            # NOTE: the path only: a query string may carry a credential.
            access_log.info("%s %s %s %s %d %.1fms", env["REMOTE_ADDR"], env["REQUEST_METHOD"], env["PATH_INFO"],
                            self._status, written, (time.monotonic() - started) * 1000.0)

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info=None) -> Callable:
        if exc_info is not None and self._sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self._status = status
        self._headers = headers
        return self._write_legacy

    def _write_legacy(self, data: bytes) -> None:
        raise NotImplementedError("the WSGI write() callable is not supported; return an iterable")

    def _write(self, req: Request, result: Iterable[bytes]) -> int:
        """Write the answer; the number of body bytes written."""
        if not req.complete or req.upgrade or self.server.draining:
            # The rest of an unread body, or what follows an upgrade, cannot be told from a request.
            self._close = True
        sock = self.socket
        sock.settimeout(self.server.limits.body_timeout_s)
        if type(result) is list:
            body = result[0] if len(result) == 1 else b"".join(result)
            head = self._head(req, False)
            if req.env["REQUEST_METHOD"] == "HEAD":
                body = b""
            if len(body) <= _JOIN_LIMIT:
                send_all(sock, head + body)
            else:
                send_all(sock, head)
                send_all(sock, body)
            return len(body)
        return self._write_stream(req, iter(result))

    def _write_stream(self, req: Request, pieces) -> int:
        """A body of unknown length: chunked (RFC 9112, section 7.1), or to the close for HTTP/1.0."""
        chunked = req.version == "1.1"
        if not chunked:
            self._close = True
        first = b""
        for first in pieces:
            if first:
                break
        sock = self.socket
        written = len(first)
        head = self._head(req, chunked)
        if req.env["REQUEST_METHOD"] == "HEAD":
            send_all(sock, head)
            return 0
        if not chunked:
            send_all(sock, head + first)
            for piece in pieces:
                send_all(sock, piece)
                written += len(piece)
            return written
        send_all(sock, head + b"%x\r\n%s\r\n" % (len(first), first) if first else head)
        for piece in pieces:
            if piece:  # an empty chunk would end the body
                send_all(sock, b"%x\r\n%s\r\n" % (len(piece), piece))
                written += len(piece)
        send_all(sock, _CHUNK_END)
        return written

    def _head(self, req: Request, chunked: bool) -> bytes:
        status, headers = self._status, self._headers
        if status is None:
            raise RuntimeError("the app returned without calling start_response")
        server = self.server
        lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
        if lines.count("\n") != len(headers) or lines.count("\r") != len(headers):
            raise ValueError("a response header holds a line break")
        parts = [server.status_line(status), lines.encode("latin-1"), server.date_line()]
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if self._close:
            parts.append(b"Connection: close\r\n")
        elif req.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self._sent = True
        return b"".join(parts)

    # --- refusing ----------------------------------------------------------------------------------

    def _refuse(self, req: Request) -> None:
        error = req.error
        log.info("refused a request from %s: %s", self._base["REMOTE_ADDR"], error)
        self._send_error(req, error.status, str(error), error.code)
        self._linger()

    def _send_error(self, req: Request, status: int, message: str, code: str) -> None:
        """An answer of the server's own, in the error shape of the route it was sent to."""
        if req.url.startswith(b"/v1/messages"):
            from gateway.anthropic_messages import error_json

            body = error_json(message, status)
        else:
            body = error_body(message, "server_error" if status >= 500 else "invalid_request_error", code)
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        ).encode("latin-1")
        try:
            self.socket.settimeout(self.server.limits.body_timeout_s)
            send_all(self.socket, head + self.server.date_line() + b"\r\n" + body)
        except OSError:
            pass

    def _linger(self) -> None:
        """Close in two steps: no more writes, then drop what the client still sends for a moment.

        Closing a socket with unread input resets the connection, and a reset can destroy the answer
        in the client's buffers before it reads it (RFC 9112, section 9.6).
        """
        sock = self.socket
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + _LINGER_S
            dropped = 0
            while (left := deadline - time.monotonic()) > 0 and dropped < _LINGER_BYTES:
                sock.settimeout(left)
                data = sock.recv(_READ_SIZE)
                if not data:
                    return
                dropped += len(data)
                yield_to_loop()  # a fast sender must not hold the worker
        except OSError:
            pass


class Body:
    """``wsgi.input``: the request body, read from the socket only as the app asks for it."""

    __slots__ = ("_conn", "_req")

    def __init__(self, conn: Connection, req: Request) -> None:
        self._conn = conn
        self._req = req

    def read(self, size: int | None = -1) -> bytes:
        req = self._req
        buf = req.body
        if size is None or size < 0:
            while not req.complete:
                self._conn.read_body(req)
            data = bytes(buf)
            buf.clear()
            return data
        while len(buf) < size and not req.complete:
            self._conn.read_body(req)
        if len(buf) <= size:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:size])
            del buf[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        req = self._req
        buf = req.body
        while True:
            end = buf.find(b"\n")
            if end >= 0 or req.complete or size is not None and 0 <= size <= len(buf):
                break
            self._conn.read_body(req)
        end = len(buf) if end < 0 else end + 1
        if size is not None and 0 <= size < end:
            end = size
        data = bytes(buf[:end])
        del buf[:end]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")
