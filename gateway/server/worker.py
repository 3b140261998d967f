"""The worker process: gunicorn's gevent pywsgi worker, serving the app with our ``GatewayServer``.

gunicorn forks it from the master, monkey-patches it, builds the app (``GatewayApplication.load``),
then calls ``run``: serve, beat the heartbeat the master watches (a worker whose hub is blocked
stops beating and is replaced), check that the master is alive, and drain on SIGTERM.
"""

from __future__ import annotations

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


class GatewayWorker(GeventPyWSGIWorker):
    def init_signals(self) -> None:
        super().init_signals()
        self._stop = gevent.event.Event()
        # NOTE: handled in the hub, so the main loop wakes at once. Ctrl-C reaches the workers too
        # (one process group): like SIGTERM, a first SIGINT drains and a second one quits.
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self._on_stop_signal, sig)
        # Blocked by the master around fork (GatewayArbiter.spawn_worker): one sent meanwhile arrives now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _on_stop_signal(self, sig: int) -> None:
        if self.alive:
            self.alive = False
            self._stop.set()
        else:
            self.handle_quit(sig, None)

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
        server.start()
        log.info("worker %s serving (%d connections at most)", self.pid, plan.max_connections)
        while self.alive:
            self.notify()  # the heartbeat; it also exits when the master is gone
            self._stop.wait(_BEAT_S)
        log.info("worker %s draining (up to %.0f s)", self.pid, plan.shutdown_timeout_s)
        server.drain(plan.shutdown_timeout_s, tick=self.notify)
        log.info("worker %s stopped", self.pid)
