"""Putting the observers together for one app: which finish hooks run, the analytics writer, tracing.

``prepare`` runs in the master when a config is loaded (a bad GeoIP file is a config error there, and
the user-agent regexes are compiled once, before the fork); ``build`` runs in each worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config.checker import ConfigError
from gateway.config.schema import Config
from gateway.observe import geoip, useragent
from gateway.observe.clickhouse import connect
from gateway.observe.otlp import endpoint as otlp_endpoint
from gateway.observe.rows import AnalyticsRecorder
from gateway.observe.spool import Spool
from gateway.observe.tracing import Tracer, TraceStage, make_exporter
from gateway.observe.writer import AnalyticsWriter
from gateway.outcome import Outcome

if TYPE_CHECKING:
    # NOTE: not at run time: the master loads this before PROMETHEUS_MULTIPROC_DIR is set, and
    # prometheus_client picks its storage when it is first imported.
    from gateway.observe.metrics import Metrics

__all__ = ["Observers", "build", "clickhouse_url", "prepare"]

log = logging.getLogger(__name__)


def clickhouse_url(config: Config) -> str | None:
    """Where analytics go: ``TENSORZERO_CLICKHOUSE_URL``, else ``[gateway.observability] clickhouse_url``;
    None when observability is off or neither is set."""
    settings = config.gateway.observability
    if settings.enabled is False:
        return None
    return os.environ.get("TENSORZERO_CLICKHOUSE_URL") or settings.clickhouse_url


def _writes(config: Config) -> bool:
    settings = config.gateway.observability
    return settings.enabled is not False and (clickhouse_url(config) is not None or settings.spool_dir is not None)


def prepare(config: Config) -> None:
    """Check what can only be checked by opening it; raise ``ConfigError``."""
    if config.gateway.traces.enabled and otlp_endpoint() is None:
        raise ConfigError(config.source, ["gateway.export.otlp.traces.enabled: true, but "
                                          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is not set (where to send them)"])
    settings = config.gateway.observability
    if settings.enabled and clickhouse_url(config) is None:
        raise ConfigError(config.source, ["gateway.observability.enabled: true, but there is no ClickHouse: set "
                                          "TENSORZERO_CLICKHOUSE_URL or gateway.observability.clickhouse_url"])
    if not _writes(config):
        return
    analytics = config.gateway.analytics
    url = clickhouse_url(config)
    errors = []
    if url is not None:
        try:
            connect(url).close()
        except ValueError as e:
            errors.append(f"gateway.observability.clickhouse_url (or TENSORZERO_CLICKHOUSE_URL): {e}")
    if analytics.enabled:
        try:
            geoip.check(analytics.geoip_db_path, analytics.geoip_asn_db_path)
        except geoip.GeoIPError as e:
            errors.append(f"gateway.analytics: {e}")
        useragent.warm()
    if errors:
        raise ConfigError(config.source, errors)
    if url is not None and settings.spool_dir is None:
        log.warning("analytics: no [gateway.observability] spool_dir: while ClickHouse is away, rows wait in "
                    "memory (up to %d per worker) and are dropped beyond that", settings.queue_rows)


class Observers:
    """The finish hooks of every request, the stages they need, and what must be closed when the worker stops."""

    def __init__(self, hooks: list[Callable[[Outcome], None]], writer: AnalyticsWriter | None,
                 tracer: Tracer | None = None) -> None:
        self.hooks = hooks
        self.writer = writer
        self.tracer = tracer
        #: Pipeline stages, right after the context stage.
        self.stages = [TraceStage()] if tracer is not None else []

    def health(self) -> dict[str, str]:
        """What ``/health`` adds: ``clickhouse`` ok or error, when there is one."""
        if self.writer is None or self.writer.status is None:
            return {}
        return {"clickhouse": self.writer.status}

    def close(self, timeout: float) -> None:
        if self.writer is not None:
            self.writer.close(timeout)
        if self.tracer is not None:
            self.tracer.close(min(timeout, 2.0))


def build(config: Config, metrics: Metrics) -> Observers:
    hooks: list[Callable[[Outcome], None]] = [metrics.finished]
    writer = None
    if _writes(config):
        settings = config.gateway.observability
        analytics = config.gateway.analytics
        url = clickhouse_url(config)
        spool = Spool(settings.spool_dir, settings.spool_max_bytes) if settings.spool_dir else None
        writer = AnalyticsWriter(
            connect(url) if url else None, spool,
            batch_rows=settings.batch_rows, flush_interval_s=settings.flush_interval_ms / 1000.0,
            queue_rows=settings.queue_rows, count=metrics.analytics_rows_counter(), depth=metrics.queue_depth(),
        )
        lookup = geoip.GeoIP(analytics.geoip_db_path, analytics.geoip_asn_db_path) if analytics.enabled else None
        recorder = AnalyticsRecorder(writer.put, lookup, analytics=analytics.enabled,
                                     store_content=settings.store_content)
        hooks.append(recorder.finished)
        writer.start()
    tracer = None
    if config.gateway.traces.enabled:
        tracer = Tracer(make_exporter(config.gateway.traces.extra_headers), metrics.spans_dropped.inc)
        hooks.append(tracer.finished)
        tracer.start()
    return Observers(hooks, writer, tracer)
