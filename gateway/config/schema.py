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
    max_body_bytes: int = 100 * 1024 * 1024
    #: The upstream HTTP library: "geventhttpclient" (default) or "urllib3" (see providers/http.py).
    upstream_client: str = DEFAULT_CLIENT


@dataclass(frozen=True, slots=True)
class Config:
    gateway: GatewaySettings
    models: Mapping[str, ModelConfig]
    #: Where the config came from (a path, or "<default>"), for messages.
    source: str
