"""The config tables of what a request leaves behind: metrics, analytics rows, traces, and model prices.

``[gateway.metrics]``, ``[gateway.observability]``, ``[gateway.analytics]``, ``[gateway.export.otlp.traces]``
and a model's ``pricing``, each read into its frozen object in ``schema``.
"""

from __future__ import annotations

import ipaddress
from types import MappingProxyType
from typing import Any

from gateway.config.checker import Checker
from gateway.config.schema import (
    AnalyticsConfig,
    MetricsConfig,
    ObservabilityConfig,
    Pricing,
    TracesConfig,
)

__all__ = ["analytics", "metrics", "observability", "pricing", "traces", "SECTION_KEYS"]

#: The keys of [gateway] this module reads.
SECTION_KEYS = frozenset({"metrics", "observability", "analytics", "export"})

_METRICS_KEYS = {"duration_buckets", "overhead_buckets", "ttft_buckets"}
_OBSERVABILITY_KEYS = {
    "enabled",
    "clickhouse_url",
    "store_content",
    "batch_rows",
    "flush_interval_ms",
    "queue_rows",
    "spool_dir",
    "spool_max_bytes",
}
_ANALYTICS_KEYS = {"enabled", "trusted_proxies", "geoip_db_path", "geoip_asn_db_path"}
_PRICING_KEYS = {"input_cost", "output_cost", "per_tokens", "currency", "cached_input_cost"}


def metrics(c: Checker, data: Any) -> MetricsConfig:
    d = c.table(data, "gateway.metrics", _METRICS_KEYS,
                frozenset({"tensorzero_inference_latency_overhead_seconds_buckets"}))
    defaults = MetricsConfig()
    return MetricsConfig(
        duration_buckets=_buckets(c, d, "duration_buckets", defaults.duration_buckets),
        overhead_buckets=_buckets(c, d, "overhead_buckets", defaults.overhead_buckets),
        ttft_buckets=_buckets(c, d, "ttft_buckets", defaults.ttft_buckets),
    )


def _buckets(c: Checker, d: dict, key: str, default: tuple[float, ...]) -> tuple[float, ...]:
    value = c.get(d, key, "gateway.metrics", (list,), None)
    if value is None:
        return default
    path = f"gateway.metrics.{key}"
    if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        c.fail(path, "expected a non-empty array of numbers (seconds)")
        return default
    if any(b <= a for a, b in zip(value, value[1:], strict=False)) or value[0] <= 0:
        c.fail(path, "must be positive and strictly ascending")
        return default
    return tuple(float(v) for v in value)


def observability(c: Checker, data: Any) -> ObservabilityConfig:
    path = "gateway.observability"
    d = c.table(data, path, _OBSERVABILITY_KEYS,
                frozenset({"async_writes", "batch_writes", "backend", "disable_automatic_migrations"}))
    defaults = ObservabilityConfig()
    url = c.get(d, "clickhouse_url", path, (str,), None) or None
    if url is not None and not url.startswith(("clickhouse://", "http://", "https://")):
        # NOTE: never echo the URL: it may carry a password.
        c.fail(f"{path}.clickhouse_url", "expected clickhouse://, http:// or https://")
        url = None
    return ObservabilityConfig(
        enabled=c.get(d, "enabled", path, (bool,), None),
        clickhouse_url=url,
        store_content=c.get(d, "store_content", path, (bool,), defaults.store_content),
        batch_rows=c.count(d, "batch_rows", path, defaults.batch_rows),
        flush_interval_ms=c.count(d, "flush_interval_ms", path, defaults.flush_interval_ms),
        queue_rows=c.count(d, "queue_rows", path, defaults.queue_rows),
        spool_dir=c.get(d, "spool_dir", path, (str,), None) or None,
        spool_max_bytes=c.count(d, "spool_max_bytes", path, defaults.spool_max_bytes),
    )


def analytics(c: Checker, data: Any) -> AnalyticsConfig:
    path = "gateway.analytics"
    d = c.table(data, path, _ANALYTICS_KEYS)
    defaults = AnalyticsConfig()
    proxies = c.str_list(d, "trusted_proxies", path, defaults.trusted_proxies)
    for i, cidr in enumerate(proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            c.fail(f"{path}.trusted_proxies[{i}]", f'"{cidr}" is not an IP address or CIDR range')
    return AnalyticsConfig(
        enabled=c.get(d, "enabled", path, (bool,), defaults.enabled),
        trusted_proxies=proxies,
        geoip_db_path=c.get(d, "geoip_db_path", path, (str,), None) or None,
        geoip_asn_db_path=c.get(d, "geoip_asn_db_path", path, (str,), None) or None,
    )


def traces(c: Checker, data: Any) -> TracesConfig:
    export = c.table(data, "gateway.export", {"otlp"})
    otlp = c.table(export.get("otlp", {}), "gateway.export.otlp", {"traces"})
    path = "gateway.export.otlp.traces"
    d = c.table(otlp.get("traces", {}), path, {"enabled", "extra_headers"}, frozenset({"format", "include_content"}))
    return TracesConfig(
        enabled=c.get(d, "enabled", path, (bool,), False),
        extra_headers=MappingProxyType(dict(c.str_map(d, "extra_headers", path))),
    )


def pricing(c: Checker, data: Any, path: str) -> Pricing | None:
    """A model's ``pricing`` table; None when the model has none (its cost is then unknown, never 0)."""
    if data is None:
        return None
    path = f"{path}.pricing"
    d = c.table(data, path, _PRICING_KEYS)
    for need in ("input_cost", "output_cost"):
        if need not in d:
            c.fail(f"{path}.{need}", "missing (the price per per_tokens tokens)")
    input_cost = c.positive(d, "input_cost", path, 0.0, allow_zero=True)
    output_cost = c.positive(d, "output_cost", path, 0.0, allow_zero=True)
    cached = c.positive(d, "cached_input_cost", path, None, allow_zero=True)
    return Pricing(
        input_cost=float(input_cost),
        output_cost=float(output_cost),
        per_tokens=c.count(d, "per_tokens", path, 1_000_000),
        currency=c.get(d, "currency", path, (str,), "USD") or "USD",
        cached_input_cost=None if cached is None else float(cached),
    )
