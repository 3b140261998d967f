"""``/health``, ``/status`` and ``/metrics``: open to all, never behind auth."""

from __future__ import annotations

import os

import falcon

from gateway import __version__
from gateway.observe.metrics import CONTENT_TYPE_LATEST, Metrics
from gateway.resources.respond import dump_json

__all__ = ["Health", "MetricsResource", "Status"]


class Health:
    auth = False
    _BODY = dump_json({"gateway": "ok"})

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._BODY


class Status:
    auth = False

    def __init__(self) -> None:
        self._body = dump_json({"status": "ok", "version": __version__, "pid": os.getpid()})

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
