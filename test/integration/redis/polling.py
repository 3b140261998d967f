"""Waiting for the gateway to see a change in Redis: a predicate polled under a deadline, not a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

#: The contract: a change written to Redis is effective in the gateway within this.
CHANGE_VISIBLE_S = 1.0
#: From the gateway answering /health until its first full load from Redis is done (``"redis": "ok"``).
INITIAL_LOAD_TIMEOUT_S = 10.0
POLL_S = 0.02


def wait_until(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``predicate()`` first held, or None if it did not within ``timeout`` seconds."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        if predicate():
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL_S)


def redis_health(gateway) -> str | None:
    """What the gateway's ``/health`` says about Redis (None when it says nothing of it)."""
    resp = gateway.request("GET", "/health")
    assert resp.status == 200, resp
    return resp.json().get("redis")


def wait_loaded(gateway, timeout: float = INITIAL_LOAD_TIMEOUT_S) -> None:
    """Until the gateway's first full load from Redis is done; fails (at once if the log shows a crash)."""
    wait_until(lambda: redis_health(gateway) == "ok" or "Traceback" in gateway.log(), timeout)
    assert redis_health(gateway) == "ok", f"no full load from redis within {timeout} s:\n{gateway.log()}"
