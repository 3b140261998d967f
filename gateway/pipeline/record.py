"""The last stage: record each request's status and latency once its answer has ended."""

from __future__ import annotations

import time
from typing import Any

import falcon

from gateway.observe.metrics import Metrics

__all__ = ["RecordStage"]


class RecordStage:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        ctx = req.context
        route = req.uri_template or "unmatched"
        # NOTE: label with the configured model name, never the raw client string (unbounded cardinality).
        model = ctx.route.name if ctx.route is not None else ""
        status = resp.status_code
        metrics = self._metrics
        if ctx.stream is None:
            metrics.observe(route, model, status, time.monotonic() - ctx.started)
            return
        started = ctx.started

        def finished(stream: Any) -> None:
            metrics.observe(route, model, status, time.monotonic() - started)

        ctx.stream.on_close(finished)
