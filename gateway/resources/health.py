"""``/health``, ``/status`` and ``/metrics``: open to all, never behind auth."""

from __future__ import annotations

import os
from collections.abc import Callable

import falcon

from gateway import __version__
from gateway.observe.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.stores.sync import RedisSync
from providers.jsonio import dumps

__all__ = ["Health", "MetricsResource", "Status"]


class Health:
    """``{"gateway": "ok"}``, with ``"redis": "ok" | "error"`` when the gateway syncs from Redis and
    ``"clickhouse": "ok" | "error"`` when it writes analytics there. Neither outage fails the check:
    the gateway serves on (keys from its last copy, analytics rows spooled)."""

    auth = False
    record = False
    _BODY = dumps({"gateway": "ok"})

    def __init__(self, sync: RedisSync | None = None, extra: Callable[[], dict[str, str]] | None = None) -> None:
        self._sync = sync
        self._extra = extra

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        state = {"gateway": "ok"}
        if self._sync is not None:
            state["redis"] = "ok" if self._sync.status == "ok" else "error"
        if self._extra is not None:
            state.update(self._extra())
        resp.data = self._BODY if len(state) == 1 else dumps(state)


class Status:
    auth = False
    record = False

    def __init__(self) -> None:
        self._body = dumps({"status": "ok", "version": __version__, "pid": os.getpid()})

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class MetricsResource:
    auth = False
    record = False

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.render()
