"""A lean Redis client for the request path: commands and pipelines over pooled connections, RESP2.

The rate limiter makes a Redis round trip for every limited request, and redis-py's general
machinery (its pool, retry wrapper and parser) costs about twice the round trip itself; this client
does only what the limiter needs, with the same exceptions as redis-py (``redis.ConnectionError``,
``redis.TimeoutError``, ``redis.ResponseError``, ``NoScriptError``), so callers catch one family.
Every socket is gevent's (after monkey-patching); a whole call takes at most ``timeout_s``; a
connection that failed or timed out is closed, never reused, and a pooled one Redis has closed is
replaced without failing the call.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence

import gevent.lock
import redis
from redis.connection import SSLConnection, parse_url
from redis.exceptions import NoScriptError

__all__ = ["OneWay", "RespClient"]

_CRLF = b"\r\n"
#: How long a write on the one-way connection may wait before it is given up.
_ONE_WAY_TIMEOUT_S = 2.0


class _Connection:
    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise redis.ConnectionError("Redis closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while True:
            end = self.buf.find(_CRLF)
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            self._fill()

    def reply(self):
        """One reply: an int, bytes, None, a list, or a ``ResponseError`` (returned, not raised)."""
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buf) < size + 2:
                self._fill()
            value = bytes(self.buf[:size])
            del self.buf[: size + 2]
            return value
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        if kind == b"+":
            return rest
        if kind == b"-":
            message = rest.decode(errors="replace")
            return NoScriptError(message) if message.startswith("NOSCRIPT") else redis.ResponseError(message)
        raise redis.ConnectionError(f"unexpected reply from Redis ({kind!r})")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _pack(commands: Sequence[Sequence]) -> bytes:
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, bytes):
                data = arg
            elif isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, float):
                data = repr(arg).encode()
            else:
                data = str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespClient:
    """Commands to the Redis at ``url``; at most ``max_connections`` open at once."""

    def __init__(self, url: str, max_connections: int, timeout_s: float) -> None:
        params = parse_url(url)
        #: A unix socket's path, or (host, port).
        self._address = params["path"] if "path" in params else (params.get("host", "localhost"),
                                                                 int(params.get("port", 6379)))
        self._tls = params.get("connection_class") is SSLConnection
        self._hello = []
        if params.get("password"):
            user = params.get("username")
            self._hello.append(("AUTH", user, params["password"]) if user else ("AUTH", params["password"]))
        if params.get("db"):
            self._hello.append(("SELECT", params["db"]))
        self._timeout = self.timeout_s = timeout_s
        self._idle: list[_Connection] = []
        self._slots = gevent.lock.BoundedSemaphore(max_connections)

    def connect(self) -> _Connection:
        """A new connection, set up (AUTH, SELECT); socket errors are left to the caller to map."""
        if isinstance(self._address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(self._address)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(self._address, timeout=self._timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self._address[0])
        conn = _Connection(sock)
        try:
            if self._hello:
                conn.send(_pack(self._hello))
                for _ in self._hello:
                    answer = conn.reply()
                    if isinstance(answer, Exception):
                        raise redis.ConnectionError(f"Redis refused the connection's setup: {answer}")
        except BaseException:
            conn.close()
            raise
        return conn

    def pipeline(self, commands: Sequence[Sequence]) -> list:
        """Send ``commands`` in one round trip; each answer, an error answer as a ``ResponseError``.

        The whole call, a wait for a free connection included, takes at most ``timeout_s``."""
        payload = _pack(commands)
        conn = None
        timer = gevent.Timeout(self._timeout)
        timer.start()
        acquired = False
        try:
            self._slots.acquire()
            acquired = True
            while self._idle:
                # A pooled connection Redis has closed (a restart, its idle timeout) fails before any
                # answer: the next one is tried, then a new one.
                conn = self._idle.pop()
                try:
                    conn.send(payload)
                    return self._answers(conn, commands)
                except (OSError, redis.ConnectionError):
                    conn.close()
                    conn = None
            conn = self.connect()
            conn.send(payload)
            return self._answers(conn, commands)
        except gevent.Timeout as e:
            if e is not timer:
                raise
            if conn is not None:
                conn.close()
            raise redis.TimeoutError("Redis did not answer in time") from None
        except TimeoutError as e:  # a socket's own timeout
            if conn is not None:
                conn.close()
            raise redis.TimeoutError("Redis did not answer in time") from e
        except (OSError, ValueError) as e:
            if conn is not None:
                conn.close()
            raise redis.ConnectionError(f"Redis connection failed ({type(e).__name__})") from e
        except BaseException:
            # A greenlet killed mid-answer (its client left): the connection's state is unknown.
            if conn is not None:
                conn.close()
            raise
        finally:
            timer.close()
            if acquired:
                self._slots.release()

    def _answers(self, conn: _Connection, commands: Sequence[Sequence]) -> list:
        answers = [conn.reply() for _ in commands]
        self._idle.append(conn)
        return answers

    def execute(self, *command):
        """One command; an error answer is raised."""
        answer = self.pipeline((command,))[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _open(sock: socket.socket) -> bool:
    """Whether a connection Redis never writes to (replies off) is still open: anything readable on it
    is its end."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    return False


class OneWay:
    """Commands whose answers no one needs (settlements, lease releases), written at once, in order,
    on a connection of their own with ``CLIENT REPLY OFF``: no reply is sent, so none is waited for
    or read. They are written before the request's answer leaves, so a client's next request,
    through any gateway, reaches Redis well after them. Scripts go as EVAL (there is no reply to
    say NOSCRIPT). A write that fails drops the connection; the next write opens a new one."""

    def __init__(self, client: RespClient) -> None:
        self._client = client
        self._conn: _Connection | None = None
        self._lock = gevent.lock.Semaphore()

    def send(self, commands: Sequence[Sequence]) -> None:
        """Write ``commands``; raise ``redis.ConnectionError`` when that fails (they are then lost)."""
        payload = _pack(commands)
        with self._lock:
            try:
                if self._conn is not None and not _open(self._conn.sock):
                    self.close()  # Redis closed it (a restart): what is written now must not be lost
                if self._conn is None:
                    with gevent.Timeout(self._client.timeout_s, redis.TimeoutError("connecting to Redis timed out")):
                        conn = self._client.connect()
                    conn.sock.settimeout(_ONE_WAY_TIMEOUT_S)
                    conn.send(_pack([("CLIENT", "REPLY", "OFF")]))
                    self._conn = conn
                self._conn.send(payload)
            except (OSError, redis.RedisError) as e:
                self.close()
                raise redis.ConnectionError(f"Redis connection failed ({type(e).__name__})") from e

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
