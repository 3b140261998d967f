"""The validated, immutable configuration objects the gateway runs on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from providers.http import DEFAULT_CLIENT

__all__ = [
    "CAPABILITIES",
    "Config",
    "GatewaySettings",
    "ModelConfig",
    "ProviderConfig",
    "RetryConfig",
    "TimeoutsConfig",
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


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    routing: tuple[str, ...]
    endpoints: frozenset[str]
    fallback_models: tuple[str, ...]
    retry: RetryConfig
    providers: Mapping[str, ProviderConfig]


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


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewaySettings
    models: Mapping[str, ModelConfig]
    #: [api_keys."<sha256 hex>"."<model>"]: keys for deployments without Redis, as budapp's entries.
    api_keys: Mapping[str, Mapping[str, Mapping[str, Any]]]
    #: Where the config came from (a path, or "<default>"), for messages.
    source: str
