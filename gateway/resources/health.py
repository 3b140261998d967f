"""``/health``, ``/status`` and ``/metrics``: open to all, never behind auth."""

from __future__ import annotations

import os

import falcon

from gateway import __version__
from gateway.observe.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.stores.sync import RedisSync
from providers.jsonio import dumps

__all__ = ["Health", "MetricsResource", "Status"]


class Health:
    """``{"gateway": "ok"}``, and ``"redis": "ok" | "error"`` when the gateway syncs from Redis."""

    auth = False
    _BODY = dumps({"gateway": "ok"})

    def __init__(self, sync: RedisSync | None = None) -> None:
        self._sync = sync

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        if self._sync is None:
            resp.data = self._BODY
        else:
            resp.data = dumps({"gateway": "ok", "redis": "ok" if self._sync.status == "ok" else "error"})


class Status:
    auth = False

    def __init__(self) -> None:
        self._body = dumps({"status": "ok", "version": __version__, "pid": os.getpid()})

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class MetricsResource:
    auth = False

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = self._metrics.render()
