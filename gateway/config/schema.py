"""The validated, immutable configuration objects the gateway runs on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from providers.http import DEFAULT_CLIENT
from providers.jsonpointer import pointed

__all__ = [
    "ALGORITHMS",
    "CAPABILITIES",
    "AnalyticsConfig",
    "BlockingConfig",
    "GuardrailProfile",
    "GuardProviderConfig",
    "Config",
    "GatewaySettings",
    "MetricsConfig",
    "ModelConfig",
    "ObservabilityConfig",
    "Pricing",
    "ProviderConfig",
    "RateLimitRule",
    "RateLimitSettings",
    "RateLimitingConfig",
    "RateLimits",
    "RuleLimit",
    "RuleScope",
    "RetryConfig",
    "TimeoutsConfig",
    "TracesConfig",
    "UsageLimitSettings",
]

#: Every capability a model may declare in ``endpoints``.
CAPABILITIES = frozenset(
    {
        "chat",
        "completions",
        "embedding",
        "moderation",
        "audio_transcription",
        "audio_translation",
        "text_to_speech",
        "image_generation",
        "image_edit",
        "image_variation",
        "responses",
    }
)


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    """Per-provider timeouts in seconds; ``None`` means no limit beyond the client's defaults."""

    non_streaming_total_s: float | None = None
    streaming_ttft_s: float | None = None
    streaming_total_s: float | None = None


@dataclass(frozen=True, slots=True)
class RetryConfig:
    num_retries: int = 0
    max_delay_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    type: str
    model_name: str
    api_base: str | None
    api_key_location: str
    timeouts: TimeoutsConfig
    extra_headers: Mapping[str, str]
    extra_body: Mapping[str, Any]
    #: Type-specific keys, validated by the provider class.
    options: Mapping[str, Any]
    #: TensorZero's ``extra_body`` edits (``{pointer, value | delete}``), applied after ``extra_body``.
    body_edits: tuple[Mapping[str, Any], ...] = ()
    #: TensorZero's ``cost``: what an answer costs when its model has no ``pricing``.
    cost: PointerCost | None = None
    #: TensorZero's ``batch_cost``: the same for an answer of a provider's batch API (else ``cost``).
    batch_cost: PointerCost | None = None


@dataclass(frozen=True, slots=True)
class Pricing:
    """What a model's tokens cost, as budapp writes it: ``input_cost`` per ``per_tokens`` input tokens."""

    input_cost: float
    output_cost: float
    per_tokens: int = 1_000_000
    currency: str = "USD"
    #: The price of cached input tokens; None: they cost ``input_cost`` like any other.
    cached_input_cost: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
        """``input_tokens`` counts the cached ones too (OpenAI's ``prompt_tokens``)."""
        cached = min(cached_input_tokens, input_tokens) if self.cached_input_cost is not None else 0
        total = (input_tokens - cached) * self.input_cost + output_tokens * self.output_cost
        if cached:
            total += cached * self.cached_input_cost
        return total / self.per_tokens

    def cost_of(self, usage: Any, raw: Any = None, streaming: bool = False) -> float | None:
        """The cost of an answer's ``usage`` (``outcome.Usage``); None when it counts no input."""
        if usage.input_tokens is None:
            return None
        return self.cost(usage.input_tokens, usage.output_tokens or 0, usage.cached_input_tokens or 0)


@dataclass(frozen=True, slots=True)
class CostEntry:
    """One entry of TensorZero's ``cost``: a value read at a JSON Pointer, times ``rate`` per unit."""

    pointer: str
    pointer_streaming: str
    rate: float
    required: bool = False


@dataclass(frozen=True, slots=True)
class PointerCost:
    """TensorZero's ``cost`` of a provider: the sum of its entries over the answer (a stream's usage
    chunk); None when a ``required`` value is missing."""

    entries: tuple[CostEntry, ...]
    currency: str = "USD"

    def cost_of(self, usage: Any, raw: Any = None, streaming: bool = False) -> float | None:
        if raw is None:
            return None
        total = 0.0
        for entry in self.entries:
            value = pointed(raw, entry.pointer_streaming if streaming else entry.pointer)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                if entry.required:
                    return None
                continue
            total += value * entry.rate
        return total


#: The rate-limit algorithms a model may use.
ALGORITHMS = ("sliding_window", "fixed_window", "token_bucket")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A model's ``rate_limits`` (budapp's format, plus our token limits and concurrency); each set one holds."""

    algorithm: str = "sliding_window"
    requests_per_second: int | None = None
    requests_per_minute: int | None = None
    requests_per_hour: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_hour: int | None = None
    #: The token bucket's capacity (default: the limit itself).
    burst_size: int | None = None
    max_concurrent_requests: int | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    routing: tuple[str, ...]
    endpoints: frozenset[str]
    fallback_models: tuple[str, ...]
    retry: RetryConfig
    providers: Mapping[str, ProviderConfig]
    pricing: Pricing | None = None
    rate_limits: RateLimits | None = None
    #: The id of the guardrail profile that scans this model's input and output.
    guardrail_profile: str | None = None


#: Histogram buckets (seconds) for whole requests and streams: a cached answer to a ten-minute stream.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Histogram buckets (seconds) for the gateway's own time per request: tens of microseconds up.
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Private and loopback ranges: the load balancers and proxies in front of a gateway, by default.
TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """[gateway.metrics]: histogram buckets, in seconds."""

    duration_buckets: tuple[float, ...] = DURATION_BUCKETS
    overhead_buckets: tuple[float, ...] = OVERHEAD_BUCKETS
    ttft_buckets: tuple[float, ...] = DURATION_BUCKETS


@dataclass(frozen=True, slots=True)
class ObservabilityConfig:
    """[gateway.observability]: where analytics rows go, and how they are written."""

    #: None: use ClickHouse when a URL is given (env TENSORZERO_CLICKHOUSE_URL first); False: never.
    enabled: bool | None = None
    clickhouse_url: str | None = None
    #: Keep the request and answer bodies in ``ModelInference.raw_request`` / ``raw_response``.
    store_content: bool = True
    batch_rows: int = 500
    flush_interval_ms: int = 1000
    #: Rows held in memory per worker before they go to the spool.
    queue_rows: int = 10_000
    #: The JSONL spool for rows ClickHouse could not take (None: no spool; rows wait in the queue).
    spool_dir: str | None = None
    spool_max_bytes: int = 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AnalyticsConfig:
    """[gateway.analytics]: the per-request ``GatewayAnalytics`` row and its enrichment."""

    enabled: bool = True
    trusted_proxies: tuple[str, ...] = TRUSTED_PROXIES
    geoip_db_path: str | None = None
    geoip_asn_db_path: str | None = None


@dataclass(frozen=True, slots=True)
class TracesConfig:
    """[gateway.export.otlp.traces]: OTLP/HTTP export (the endpoint is OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)."""

    enabled: bool = False
    extra_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """[gateway.rate_limits]: what applies to models without limits of their own, and Redis failure."""

    enabled: bool = True
    default_requests_per_minute: int | None = None
    default_algorithm: str = "sliding_window"
    default_max_concurrent_requests: int | None = None
    #: Redis down or slow: check against this process's own limiter (True) or answer 503 (False).
    fail_open: bool = True
    redis_timeout_ms: float = 20.0
    #: A concurrency lease not renewed for this long (its gateway died) no longer counts.
    lease_ttl_s: float = 30.0


@dataclass(frozen=True, slots=True)
class UsageLimitSettings:
    """[gateway.usage_limits]: budapp's per-user quotas (``usage_limit:{user_id}``)."""

    #: None: on when Redis is configured.
    enabled: bool | None = None
    #: The quota table never loaded (Redis down since start): serve (True) or answer 503 (False).
    fail_open: bool = True


@dataclass(frozen=True, slots=True)
class BlockingConfig:
    """[gateway.blocking]: blocking rules from Redis and from here (budapp's rule objects, checked)."""

    enabled: bool = False
    rules: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class GuardProviderConfig:
    """One provider of a guardrail profile: its ``type`` and its type's settings."""

    name: str
    type: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class GuardrailProfile:
    """[guardrails."ID"]: what is scanned, by which providers, and what a provider failure does."""

    id: str
    guard_types: frozenset[str]
    providers: tuple[GuardProviderConfig, ...]
    execution_mode: str = "parallel"
    failure_mode: str = "best_effort"
    severity_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    host: str = "0.0.0.0"
    port: int = 3000
    workers: int = 1
    debug: bool = False
    shutdown_timeout_s: float = 30.0
    #: A worker that has not beaten its heartbeat for this long (its hub is blocked) is replaced.
    worker_timeout_s: float = 30.0
    max_body_bytes: int = 100 * 1024 * 1024
    #: The request head must arrive within this; a stalled body gets 408; an idle connection closes.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 75.0
    #: Connections one worker serves at once; more wait in the listen backlog.
    max_connections: int = 10_000
    #: The largest whole upstream answer read, and the largest event of an upstream stream.
    max_upstream_body_bytes: int = 64 * 1024 * 1024
    max_sse_event_bytes: int = 8 * 1024 * 1024
    #: The upstream HTTP library: "geventhttpclient" (default) or "urllib3" (see providers/http.py).
    upstream_client: str = DEFAULT_CLIENT
    #: [gateway.authentication] enabled: None means "on when there is a key source" (Redis or [api_keys]).
    auth_enabled: bool | None = None
    #: [gateway.authentication] resync_interval_s: the full Redis resync behind the notifications.
    resync_interval_s: float = 60.0
    #: [gateway.redis]: the connection pool blocks at this size rather than failing under load.
    redis_max_connections: int = 1024
    redis_timeout_s: float = 5.0
    metrics: MetricsConfig = MetricsConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    analytics: AnalyticsConfig = AnalyticsConfig()
    traces: TracesConfig = TracesConfig()
    rate_limits: RateLimitSettings = RateLimitSettings()
    usage_limits: UsageLimitSettings = UsageLimitSettings()
    blocking: BlockingConfig = BlockingConfig()
    #: [gateway.guardrails] stream_window_chars: streamed text held back per output scan.
    guardrails_window_chars: int = 50


@dataclass(frozen=True, slots=True)
class RuleLimit:
    """One ``RESOURCE_per_WINDOW`` of a TensorZero rule: a bucket of ``capacity`` that gains
    ``refill_rate`` at the end of each window (counted from the bucket's first use)."""

    resource: str  # "model_inferences", "tokens" or "cost"
    window_s: int
    capacity: float
    refill_rate: float


@dataclass(frozen=True, slots=True)
class RuleScope:
    """One scope entry: ``tag_key``/``tag_value``, or ``api_key_public_id`` (``tag_key`` None)."""

    tag_key: str | None
    value: str


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    limits: tuple[RuleLimit, ...]
    scope: tuple[RuleScope, ...] = ()
    priority: int = 0
    always: bool = False
    #: A digest of the rule's definition: its counters' name, so changing a rule starts it afresh.
    digest: str = ""


@dataclass(frozen=True, slots=True)
class RateLimitingConfig:
    """TensorZero's ``[rate_limiting]``."""

    enabled: bool = True
    default_cost: float = 1.0
    rules: tuple[RateLimitRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewaySettings
    models: Mapping[str, ModelConfig]
    #: [api_keys."<sha256 hex>"."<model>"]: keys for deployments without Redis, as budapp's entries.
    api_keys: Mapping[str, Mapping[str, Mapping[str, Any]]]
    #: Where the config came from (a path, or "<default>"), for messages.
    source: str
    rate_limiting: RateLimitingConfig = RateLimitingConfig()
    guardrails: Mapping[str, GuardrailProfile] = field(default_factory=lambda: MappingProxyType({}))
    #: TensorZero's functions, metrics and templates (``gateway.tensorzero.config.TensorZeroConfig``).
    tensorzero: Any = None
    #: Key paths TensorZero defines that the config sets and the gateway does not act on.
    unimplemented: tuple[str, ...] = ()
