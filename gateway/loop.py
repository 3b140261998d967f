"""Cooperating with gevent's event loop from CPU-bound or busy code."""

from __future__ import annotations

import gevent

__all__ = ["yield_to_loop"]

#: The shortest timer: it fires on the loop's next iteration, after I/O has been polled.
_NEXT_ITERATION_S = 1e-6


def yield_to_loop() -> None:
    """Let the event loop go round once: poll I/O and run every greenlet that is ready.

    NOTE: ``gevent.sleep(0)`` is not enough: it may run this greenlet again before the loop polls I/O,
    so a busy greenlet that only sleeps(0) starves the clients waiting on their sockets.
    """
    gevent.sleep(_NEXT_ITERATION_S)
