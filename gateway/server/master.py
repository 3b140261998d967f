"""The master process: gunicorn's arbiter over our workers, on one listening socket bound here.

The arbiter pre-forks ``[gateway] workers`` workers, replaces any that dies or stops beating, and
handles the signals: SIGTERM (or SIGINT) drains and stops, a second one stops at once; SIGHUP re-reads
the config and, when it is valid, starts new workers on it while the old ones drain (an invalid one is
logged and the running config keeps serving); SIGTTIN/SIGTTOU add or remove a worker. gunicorn is
how this is done, not a second config surface: every setting it needs comes from ``[gateway]``.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import resource
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from gateway.config.loader import ConfigError
from gateway.config.schema import Config, GatewaySettings
from gateway.server.request import ServerLimits

__all__ = ["STOP_SIGNALS", "ServePlan", "serve"]

log = logging.getLogger("gateway.master")

#: The signals a worker must not miss while it boots.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
#: Listen backlog; the kernel caps it at net.core.somaxconn.
_BACKLOG = 4096
#: How long the master waits beyond shutdown_timeout_s before it kills a draining worker.
_KILL_GRACE_S = 5.0
#: Descriptors a worker keeps beside its connections (listener, pipes, logs, Redis, libraries).
_FD_RESERVE = 300
#: Below this many connections a worker is far from what it is built for: say so louder.
_FEW_CONNECTIONS = 4096


@dataclass(frozen=True, slots=True)
class ServePlan:
    """What a worker's server needs from the config, worked out once in the master."""

    limits: ServerLimits
    max_connections: int
    shutdown_timeout_s: float
    access_log: bool


def plan(settings: GatewaySettings, open_files: int) -> ServePlan:
    # NOTE: a connection may hold an upstream socket too; beyond the open-file limit accept() fails.
    most = max((open_files - _FD_RESERVE) // 2, 1)
    if settings.max_connections > most:
        level = logging.WARNING if most < _FEW_CONNECTIONS else logging.INFO
        log.log(level, "gateway.max_connections is %d, but the open-file limit (%d) allows %d per worker",
                settings.max_connections, open_files, most)
    return ServePlan(
        limits=ServerLimits(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
        ),
        max_connections=min(settings.max_connections, most),
        shutdown_timeout_s=settings.shutdown_timeout_s,
        access_log=settings.debug,
    )


class _Logger(glogging.Logger):
    """gunicorn's logger interface on our logging setup: no handlers of its own, no access log."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.error_log = logging.getLogger("gateway.master")

    def setup(self, cfg) -> None:
        self.cfg = cfg
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True

    def access(self, resp, req, environ, request_time) -> None:
        pass


def _child_exit(server: Arbiter, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class GatewayApplication(BaseApplication):
    """The config, the plan, and the app factory; ``reread`` swaps in a new config when it is valid."""

    def __init__(self, config: Config, registry: Mapping, reload: Callable[[], Config], *,
                 listener_fd: int, workers: int, open_files: int, redis_url: str | None) -> None:
        self.config = config
        self.registry = registry
        self._reload = reload
        self._fd = listener_fd
        self._workers = workers
        self._open_files = open_files
        self.redis_url = redis_url
        self.plan = plan(config.gateway, open_files)
        super().__init__(prog="budgateway")

    def load_config(self) -> None:
        settings = self.config.gateway
        from gateway.server.worker import GatewayWorker

        for key, value in {
            "bind": [f"fd://{self._fd}"],
            "workers": self._workers,
            "worker_class": GatewayWorker,
            # NOTE: gunicorn takes whole seconds.
            "timeout": math.ceil(settings.worker_timeout_s),
            "graceful_timeout": math.ceil(settings.shutdown_timeout_s + _KILL_GRACE_S),
            "backlog": _BACKLOG,
            "logger_class": _Logger,
            "proc_name": "budgateway",
            "child_exit": _child_exit,
            "control_socket_disable": True,
            # NOTE: the heartbeat is a file each worker touches every second; keep it off the disk.
            "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        }.items():
            self.cfg.set(key, value)

    def load(self):
        """In a new worker, after fork and monkey-patching: build the app."""
        from gateway.app import create_app

        return create_app(self.config, self.registry, redis_url=self.redis_url)

    def reread(self) -> None:
        """Load the config file again; raise ``ConfigError`` (and keep the running one) if it is invalid."""
        config = self._reload()
        old = self.config.gateway
        if (config.gateway.host, config.gateway.port) != (old.host, old.port):
            log.warning("gateway.bind_address changed: it takes a restart; the old address keeps serving")
        self.config = config
        self.plan = plan(config.gateway, self._open_files)


class GatewayArbiter(Arbiter):
    """gunicorn's arbiter; a second SIGTERM or SIGINT stops at once, a bad config on SIGHUP changes nothing."""

    def __init__(self, app: GatewayApplication) -> None:
        self._stopping = False
        super().__init__(app)

    def signal(self, sig, frame) -> None:
        if self._stopping and sig in (signal.SIGTERM, signal.SIGINT):
            sig = signal.SIGQUIT  # the stop loop's cue to stop at once
        super().signal(sig, frame)

    def handle_term(self) -> None:
        self._stopping = True
        raise StopIteration

    handle_int = handle_term

    def spawn_worker(self):
        # NOTE: a stop signal that reaches a new worker before it has its own handlers would run the
        # master's (queue it in the child's copy of the arbiter) and be lost: the worker keeps the
        # signals blocked until GatewayWorker.init_signals has installed its handlers.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().spawn_worker()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def reload(self) -> None:
        try:
            self.app.reread()
        except ConfigError as e:
            log.error("SIGHUP: the config is invalid; the running config keeps serving:\n%s", e)
            return
        except Exception:
            # NOTE: whatever a reload trips on, the master must not go down with it (gunicorn's loop would stop).
            log.exception("SIGHUP: the config could not be reloaded; the running config keeps serving")
            return
        log.info("SIGHUP: config %s reloaded; new workers start, the old ones drain", self.app.config.source)
        super().reload()


def _share_metrics() -> str | None:
    """Before anything imports prometheus_client: the folder where workers' metrics meet; a temporary one
    (returned, to remove at exit) unless PROMETHEUS_MULTIPROC_DIR names one."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
        return None
    path = tempfile.mkdtemp(prefix="budgateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit to the hard one (every connection is a file); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def listen(host: str, port: int) -> socket.socket:
    """The listening socket the workers share. No SO_REUSEPORT: a second server on the port fails here."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(config: Config, registry: Mapping, reload: Callable[[], Config], *, host: str, port: int,
          workers: int, redis_url: str | None) -> int:
    """Bind, then run the arbiter until it stops; the exit code."""
    try:
        sock = listen(host, port)
    except OSError as e:
        hint = " (is another budgateway, or another program, serving it?)" if e.errno == errno.EADDRINUSE else ""
        log.error("cannot listen on %s:%d: %s%s", host, port, e.strerror, hint)
        return 1
    bound = sock.getsockname()
    log.info("budgateway listening on %s:%d with %d worker%s", bound[0], bound[1], workers, "" if workers == 1 else "s")
    open_files = raise_open_file_limit()
    temporary = _share_metrics()
    master = os.getpid()
    app = GatewayApplication(config, registry, reload, listener_fd=sock.detach(), workers=workers,
                             open_files=open_files, redis_url=redis_url)
    try:
        GatewayArbiter(app).run()
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    finally:
        if os.getpid() == master and temporary:
            shutil.rmtree(temporary, ignore_errors=True)
