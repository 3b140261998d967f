"""Worker processes: gevent pywsgi serving the Falcon app, pre-forked workers, signals and graceful drain.

One worker serves in the process itself. With more, a master forks them; each opens its own
listening socket on the same address (SO_REUSEPORT, so the kernel spreads connections), and
the master restarts any that dies. SIGTERM/SIGINT: stop accepting, let in-flight requests and
streams finish for up to ``shutdown_timeout_s``, then stop.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable

import gevent
import gevent.event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from gateway.relay import CLIENT_SOCKET_KEY
from gateway.wire import http_date, read_headers

__all__ = ["Master", "WORKER_BOOT_ERROR", "listen", "raise_open_file_limit", "serve"]

log = logging.getLogger(__name__)

#: A worker that cannot boot exits with this; the master then halts instead of respawning forever.
WORKER_BOOT_ERROR = 3
#: Listen backlog; the kernel caps it at net.core.somaxconn.
_BACKLOG = 4096
#: How long the master waits after SIGTERM beyond the drain time before it SIGKILLs a worker.
_KILL_GRACE_S = 5.0
_MASTER_TICK_S = 0.2
#: Headers that pywsgi puts in the environ without the HTTP_ prefix.
_NOT_HTTP_KEYS = ("CONTENT_TYPE", "CONTENT_LENGTH")


class _Handler(WSGIHandler):
    """pywsgi's handler with TCP_NODELAY, drain awareness and the client socket in the environ."""

    def __init__(self, sock, address, server) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # NOTE: pywsgi writes head and body in separate sends; with Nagle on, every keep-alive
            # request after the first waits ~40 ms for the client's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server)

    def MessageClass(self, fp, *args):  # noqa: N802 (pywsgi's name)
        return read_headers(fp)

    def _headers(self):
        # The environ's HTTP_* keys straight from the parsed pairs (pywsgi re-splits header lines).
        for name, value in self.headers.items:
            if "_" in name:
                continue  # as pywsgi: a name with "_" could pose as a dash-named header
            key = name.replace("-", "_").upper()
            if key not in _NOT_HTTP_KEYS:
                yield "HTTP_" + key, value

    def finalize_headers(self):
        if self.provided_date is None:
            self.provided_date = date = http_date()
            self.response_headers.append((b"Date", date))
        super().finalize_headers()

    def read_requestline(self):
        # Between requests the connection is idle: a drain may cut it.
        idle = self.server.idle
        idle.add(self)
        try:
            return super().read_requestline()
        finally:
            idle.discard(self)

    def handle_one_request(self):
        if self.server.draining:
            return None
        return super().handle_one_request()

    def handle_one_response(self):
        if self.server.draining:
            self.close_connection = True
        return super().handle_one_response()

    def run_application(self):
        try:
            super().run_application()
        finally:
            if self.code == 413:
                # NOTE: do not read the rest of an oversized body just to keep the connection:
                # close it. pywsgi skips its discard when the input is in an error state.
                self.close_connection = True
                self.wsgi_input._chunked_input_error = True

    def get_environ(self):
        environ = super().get_environ()
        environ[CLIENT_SOCKET_KEY] = self.socket
        return environ


class GatewayServer(WSGIServer):
    handler_class = _Handler

    def __init__(self, listener: socket.socket, app: Callable, *, debug: bool = False) -> None:
        super().__init__(
            listener,
            app,
            spawn=Pool(),
            log=logging.getLogger("gateway.access") if debug else None,
            error_log=logging.getLogger("gateway.server"),
            # Set here so pywsgi does not resolve the host name (a DNS lookup) at start.
            environ={"SERVER_NAME": "budgateway"},
        )
        self.draining = False
        self.idle: set[_Handler] = set()

    def drain(self, timeout: float) -> None:
        """Stop accepting, close idle keep-alive connections, wait for in-flight requests, stop."""
        self.draining = True
        self.close()
        for handler in list(self.idle):
            try:
                handler.socket.shutdown(socket.SHUT_RD)
            except (OSError, AttributeError):
                pass
        self.pool.join(timeout=timeout)
        if self.pool:
            log.warning("%d requests still running after %.0f s; stopping them", len(self.pool), timeout)
            self.pool.kill(block=True, timeout=1)


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one: each connection, and each upstream one, is a file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.setblocking(False)
    return sock


def serve(listener: socket.socket, app_factory: Callable[[], Callable], *, debug: bool, shutdown_timeout_s: float) -> int:
    """Serve until SIGTERM or SIGINT, then drain. Runs in a worker (or the only process)."""
    app = app_factory()
    server = GatewayServer(listener, app, debug=debug)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    server.start()
    host, port = server.address[:2]
    log.info("worker %d serving on %s:%d", os.getpid(), host, port)
    stop.wait()
    log.info("worker %d draining (up to %.0f s)", os.getpid(), shutdown_timeout_s)
    server.drain(shutdown_timeout_s)
    log.info("worker %d stopped", os.getpid())
    return 0


class Master:
    """Forks the workers, restarts those that die, and stops them all on SIGTERM/SIGINT."""

    def __init__(
        self,
        host: str,
        port: int,
        workers: int,
        worker_main: Callable[[socket.socket], int],
        *,
        shutdown_timeout_s: float,
    ) -> None:
        self._host = host
        self._port = port
        self._count = workers
        self._worker_main = worker_main
        self._shutdown_timeout_s = shutdown_timeout_s
        self._workers: dict[int, int] = {}  # pid -> slot
        self._signals: list[int] = []
        self._metrics_dir: str | None = None

    def share_metrics(self) -> None:
        """Before anything imports prometheus_client: give the workers a shared metrics folder."""
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if path:
            os.makedirs(path, exist_ok=True)
            for name in os.listdir(path):
                if name.endswith(".db"):
                    os.unlink(os.path.join(path, name))
        else:
            self._metrics_dir = path = tempfile.mkdtemp(prefix="budgateway-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = path

    def run(self) -> int:
        # Hold the address (bound, not listening: the kernel only hands connections to listeners)
        # so a port 0 resolves once and every worker binds the same one.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        reserve = socket.socket(family, socket.SOCK_STREAM)
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserve.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserve.bind((self._host, self._port))
        self._port = reserve.getsockname()[1]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: self._signals.append(signum))
        log.info("master %d starting %d workers on %s:%d", os.getpid(), self._count, self._host, self._port)
        try:
            for slot in range(self._count):
                self._spawn(slot)
            code = self._loop()
        finally:
            reserve.close()
            if self._metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        return code

    def _spawn(self, slot: int) -> None:
        pid = os.fork()
        if pid:
            self._workers[pid] = slot
            return
        # In the worker: gevent's fork has re-initialised the hub.
        code = WORKER_BOOT_ERROR
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            try:
                listener = listen(self._host, self._port, reuse_port=True)
            except OSError as e:
                log.error("worker %d cannot listen on %s:%d: %s", os.getpid(), self._host, self._port, e)
                os._exit(WORKER_BOOT_ERROR)
            code = self._worker_main(listener)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            os._exit(code)

    def _loop(self) -> int:
        while True:
            if self._signals:
                return self._stop()
            for pid, status in self._reap():
                slot = self._workers.pop(pid)
                self._mark_dead(pid)
                code = os.waitstatus_to_exitcode(status)
                if code == WORKER_BOOT_ERROR:
                    log.error("worker %d could not boot; stopping", pid)
                    self._stop()
                    return 1
                log.warning("worker %d exited with %s; starting another", pid, code)
                self._spawn(slot)
            time.sleep(_MASTER_TICK_S)

    def _reap(self) -> list[tuple[int, int]]:
        done = []
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if not pid:
                break
            if pid in self._workers:
                done.append((pid, status))
        return done

    def _stop(self) -> int:
        log.info("master stopping %d workers", len(self._workers))
        for pid in self._workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self._shutdown_timeout_s + _KILL_GRACE_S
        while self._workers and time.monotonic() < deadline:
            for pid, _status in self._reap():
                self._workers.pop(pid, None)
                self._mark_dead(pid)
            time.sleep(0.05)
        for pid in list(self._workers):
            log.warning("worker %d did not stop in time; killing it", pid)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        return 0

    @staticmethod
    def _mark_dead(pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
