"""The config tables of what a request leaves behind: metrics, analytics rows, traces, and model prices.

``[gateway.metrics]``, ``[gateway.observability]``, ``[gateway.analytics]``, ``[gateway.export.otlp.traces]``
and a model's ``pricing``, each read through a ``StrictTable`` model into its frozen object in ``schema``.
"""

from __future__ import annotations

import ipaddress
from types import MappingProxyType
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, model_validator

from gateway.config.checker import Checker
from gateway.config.schema import (
    AnalyticsConfig,
    MetricsConfig,
    ObservabilityConfig,
    Pricing,
    TracesConfig,
)
from gateway.config.validation import StrictTable, read_table

__all__ = ["analytics", "metrics", "observability", "pricing", "traces", "SECTION_KEYS"]

#: The keys of [gateway] this module reads.
SECTION_KEYS = frozenset({"metrics", "observability", "analytics", "export"})


def _buckets(value: list[Any]) -> tuple[float, ...]:
    # NOTE: one message for the whole array, not one per element: a histogram's buckets go together.
    if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ValueError("expected a non-empty array of numbers (seconds)")
    if any(b <= a for a, b in zip(value, value[1:], strict=False)) or value[0] <= 0:
        raise ValueError("must be positive and strictly ascending")
    return tuple(float(v) for v in value)


def _clickhouse_url(url: str) -> str | None:
    if url and not url.startswith(("clickhouse://", "http://", "https://")):
        # NOTE: never echo the URL: it may carry a password.
        raise ValueError("expected clickhouse://, http:// or https://")
    return url or None


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f'"{value}" is not an IP address or CIDR range') from None
    return value


Buckets = Annotated[list[Any], AfterValidator(_buckets)]
#: A path; an empty string is the same as none.
Text = Annotated[str, AfterValidator(lambda value: value or None)]


class _Taking(StrictTable):
    """A table with keys of TensorZero's that the gateway takes without acting on (``unused``): they are
    dropped unread, and ``_unused`` lists them for the start-up warning."""

    unused: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _drop_unused(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if k not in cls.unused} if isinstance(data, dict) else data


def _unused(c: Checker, model: type[_Taking], data: Any, path: str) -> None:
    if isinstance(data, dict):
        c.unimplemented.extend(f"{path}.{key}" for key in data if key in model.unused)


def _given(table: StrictTable) -> dict[str, Any]:
    """The values a table sets; None means "not set", and the frozen object's default holds."""
    return {name: value for name, value in table if value is not None}


class _Metrics(_Taking):
    unused = frozenset({"tensorzero_inference_latency_overhead_seconds_buckets"})

    duration_buckets: Buckets | None = None
    overhead_buckets: Buckets | None = None
    ttft_buckets: Buckets | None = None


class _Observability(_Taking):
    unused = frozenset({"async_writes", "batch_writes", "backend", "disable_automatic_migrations"})

    enabled: bool | None = None
    clickhouse_url: Annotated[str, AfterValidator(_clickhouse_url)] | None = None
    store_content: bool | None = None
    batch_rows: int | None = Field(None, gt=0)
    flush_interval_ms: int | None = Field(None, gt=0)
    queue_rows: int | None = Field(None, gt=0)
    spool_dir: Text | None = None
    spool_max_bytes: int | None = Field(None, gt=0)


class _Analytics(StrictTable):
    enabled: bool | None = None
    trusted_proxies: Annotated[list[Annotated[str, AfterValidator(_cidr)]], AfterValidator(tuple)] | None = None
    geoip_db_path: Text | None = None
    geoip_asn_db_path: Text | None = None


class _Traces(_Taking):
    unused = frozenset({"format", "include_content"})

    enabled: bool | None = None
    extra_headers: dict[str, str] | None = None


class _Otlp(StrictTable):
    traces: _Traces = _Traces()


class _Export(StrictTable):
    otlp: _Otlp = _Otlp()


class _Pricing(StrictTable):
    # NOTE: JSON (a Redis model table entry) can say null; it is refused for every key, as it always was,
    # hence no ``| None`` here. input_cost and output_cost are required: ``pricing`` says so.
    input_cost: float = Field(0.0, ge=0)
    output_cost: float = Field(0.0, ge=0)
    per_tokens: int = Field(1_000_000, gt=0)
    currency: str = "USD"
    cached_input_cost: float = Field(None, ge=0)  # type: ignore[assignment]  # None: not priced apart


def metrics(c: Checker, data: Any) -> MetricsConfig:
    path = "gateway.metrics"
    _unused(c, _Metrics, data, path)
    return MetricsConfig(**_given(read_table(c, _Metrics, data, path) or _Metrics()))


def observability(c: Checker, data: Any) -> ObservabilityConfig:
    path = "gateway.observability"
    _unused(c, _Observability, data, path)
    return ObservabilityConfig(**_given(read_table(c, _Observability, data, path) or _Observability()))


def analytics(c: Checker, data: Any) -> AnalyticsConfig:
    return AnalyticsConfig(**_given(read_table(c, _Analytics, data, "gateway.analytics") or _Analytics()))


def traces(c: Checker, data: Any) -> TracesConfig:
    """``[gateway.export]``, of which only ``otlp.traces`` is read."""
    otlp = data.get("otlp") if isinstance(data, dict) else None
    _unused(c, _Traces, otlp.get("traces") if isinstance(otlp, dict) else None, "gateway.export.otlp.traces")
    table = (read_table(c, _Export, data, "gateway.export") or _Export()).otlp.traces
    return TracesConfig(enabled=bool(table.enabled), extra_headers=MappingProxyType(dict(table.extra_headers or {})))


def pricing(c: Checker, data: Any, path: str) -> Pricing | None:
    """A model's ``pricing`` table; None when the model has none (its cost is then unknown, never 0)."""
    if data is None:
        return None
    path = f"{path}.pricing"
    if isinstance(data, dict):
        # NOTE: told here rather than by the model: pydantic's "missing" would not say what the key means.
        for need in ("input_cost", "output_cost"):
            if need not in data:
                c.fail(f"{path}.{need}", "missing (the price per per_tokens tokens)")
    table = read_table(c, _Pricing, data, path) or _Pricing()
    return Pricing(input_cost=table.input_cost, output_cost=table.output_cost, per_tokens=table.per_tokens,
                   currency=table.currency or "USD", cached_input_cost=table.cached_input_cost)
