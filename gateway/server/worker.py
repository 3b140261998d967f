"""The worker process: gunicorn's gevent pywsgi worker, serving the app with our ``GatewayServer``.

gunicorn forks it from the master, monkey-patches it, builds the app (``GatewayApplication.load``),
then calls ``run``: serve, beat the heartbeat the master watches (a worker whose hub is blocked
stops beating and is replaced), check that the master is alive, and drain on SIGTERM.
"""

from __future__ import annotations

import gc
import logging
import signal

import gevent
import gevent.event
from gunicorn.workers.ggevent import GeventPyWSGIWorker

from gateway.server.master import STOP_SIGNALS
from gateway.server.wsgi import GatewayServer

__all__ = ["GatewayWorker"]

log = logging.getLogger("gateway.worker")

#: How often the heartbeat and the master's liveness are checked.
_BEAT_S = 1.0
#: After the drain, how long the analytics queue may take to reach ClickHouse before it is spooled.
_FLUSH_S = 3.0


class GatewayWorker(GeventPyWSGIWorker):
    def init_signals(self) -> None:
        super().init_signals()
        self._stop = gevent.event.Event()
        # NOTE: handled in the hub, so the main loop wakes at once. SIGINT drains like SIGTERM: Ctrl-C,
        # or systemd stopping the unit, signals the whole process group, and the master then signals
        # the worker again, so a repeat must not cut the drain short. To stop at once the master sends
        # SIGQUIT (on its own second SIGTERM or SIGINT), which gunicorn's handler obeys.
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self._on_stop_signal)
        # Blocked by the master around fork (GatewayArbiter.spawn_worker): one sent meanwhile arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _on_stop_signal(self) -> None:
        self.alive = False
        self._stop.set()

    def run(self) -> None:
        plan = self.app.plan
        server = GatewayServer(
            self.sockets[0],
            self.wsgi,
            limits=plan.limits,
            max_connections=plan.max_connections,
            access_log=plan.access_log,
            multiprocess=self.cfg.workers > 1,
        )
        # PERF: what exists now (modules, config, the app) lives as long as the worker; out of the
        # collector's sight, a full collection only walks what requests make (rows queued for analytics
        # among them), so it no longer stalls the hub for tens of milliseconds.
        gc.collect()
        gc.freeze()
        server.start()
        log.info("worker %s serving (%d connections at most)", self.pid, plan.max_connections)
        while self.alive:
            self.notify()  # the heartbeat; it also exits when the master is gone
            self._stop.wait(_BEAT_S)
        log.info("worker %s draining (up to %.0f s)", self.pid, plan.shutdown_timeout_s)
        server.drain(plan.shutdown_timeout_s, tick=self.notify)
        shutdown = getattr(self.wsgi, "shutdown", None)
        if shutdown is not None:
            shutdown(_FLUSH_S)  # the analytics queue: written, or spooled
        log.info("worker %s stopped", self.pid)
