"""Prometheus metrics, correct with several worker processes (prometheus-client multiprocess mode).

The master sets ``PROMETHEUS_MULTIPROC_DIR`` before it forks workers and before prometheus_client
is imported; every worker then writes its samples to files there, and ``/metrics`` sums them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The gateway's metrics, on a registry of their own (no process-global registry)."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=True)
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.requests = Counter(
            "budgateway_requests",
            "HTTP requests served, by route, model and status.",
            ("route", "model", "status"),
            registry=self._registry,
        )
        self.duration = Histogram(
            "budgateway_request_duration_seconds",
            "Time from the request's arrival to the end of its answer (the last chunk of a stream).",
            ("route", "model"),
            buckets=_LATENCY_BUCKETS,
            registry=self._registry,
        )

        # PERF: labels() validates and locks on every call; the label sets are few (routes x models x
        # statuses), so each pair of children is looked up once.
        self._children: dict[tuple[str, str, int], tuple] = {}

    def observe(self, route: str, model: str, status: int, seconds: float) -> None:
        key = (route, model, status)
        try:
            count, duration = self._children[key]
        except KeyError:
            count = self.requests.labels(route, model, str(status))
            duration = self.duration.labels(route, model)
            self._children[key] = (count, duration)
        count.inc()
        duration.observe(seconds)

    def render(self) -> bytes:
        if self._multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self._registry)
