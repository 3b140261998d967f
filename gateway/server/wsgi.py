"""gevent's pywsgi ``WSGIServer`` with our connection handler, a bounded pool, and a graceful drain."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from email.utils import formatdate

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from gateway import __version__
from gateway.server.connection import Connection
from gateway.server.request import ServerLimits

__all__ = ["GatewayServer"]

log = logging.getLogger("gateway.server")

#: While draining, an idle keep-alive connection is closed once it has been idle this long: a busy
#: one gets ``Connection: close`` on its next answer instead, so no request is cut off in flight.
DRAIN_IDLE_S = 0.5
_DRAIN_SWEEP_S = 0.1
#: TensorZero's header naming the gateway's version, on every answer.
_VERSION_LINE = f"x-tensorzero-gateway-version: {__version__}\r\n".encode("latin-1")


class GatewayServer(WSGIServer):
    """One worker's server: at most ``max_connections`` connections, each served by a ``Connection``."""

    handler_class = Connection

    def __init__(
        self,
        listener: socket.socket,
        app: Callable,
        *,
        limits: ServerLimits,
        max_connections: int,
        access_log: bool = False,
        multiprocess: bool = False,
    ) -> None:
        super().__init__(
            listener,
            app,
            # NOTE: a full pool stops the accept loop; new connections wait in the listen backlog
            # while the connections already open are served.
            spawn=Pool(max_connections),
            log=None,
            error_log=logging.getLogger("gateway.server"),
            # SERVER_NAME is set so that pywsgi does not resolve the host name (a DNS lookup) at start.
            environ={"SERVER_NAME": "budgateway", "wsgi.multiprocess": multiprocess, "wsgi.multithread": False},
        )
        self.limits = limits
        self.access = access_log
        self.draining = False
        #: Connections waiting for their next request.
        self.idle: set[Connection] = set()
        #: Request header name -> environ key, shared by every connection of the worker.
        self.header_keys: dict[bytes, str | None] = {}
        self._status_lines: dict[str, bytes] = {}
        self._date_second = -1
        self._date_line = b""

    def status_line(self, status: str) -> bytes:
        try:
            return self._status_lines[status]
        except KeyError:
            line = b"HTTP/1.1 " + status.encode("latin-1") + b"\r\n"
            if len(self._status_lines) < 256:
                self._status_lines[status] = line
            return line

    def date_line(self) -> bytes:
        """The headers of every answer, the app's and the server's own errors alike: the Date (RFC 9110,
        section 6.6.1), formatted once a second, and the gateway's version."""
        now = int(time.time())
        if now != self._date_second:
            self._date_line = b"Date: " + formatdate(now, usegmt=True).encode("latin-1") + b"\r\n" + _VERSION_LINE
            self._date_second = now
        return self._date_line

    def drain(self, timeout: float, tick: Callable[[], None] = lambda: None) -> None:
        """Stop accepting; let in-flight requests and streams finish for up to ``timeout``; then stop.

        ``tick`` runs every sweep (the worker's heartbeat, so the master sees a draining worker alive).
        """
        self.draining = True
        self.close()
        deadline = time.monotonic() + timeout
        pool = self.pool
        while pool and time.monotonic() < deadline:
            for conn in list(self.idle):
                conn.close_if_idle(DRAIN_IDLE_S)
            tick()
            pool.join(timeout=min(_DRAIN_SWEEP_S, max(deadline - time.monotonic(), 0)))
        if pool:
            log.warning("%d connections still busy after %.0f s; stopping them", len(pool), timeout)
            pool.kill(block=True, timeout=1)
        gevent.sleep(0)
