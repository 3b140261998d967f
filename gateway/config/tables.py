"""The shapes of the gateway's own tables, ``[gateway]``, ``[models.M]`` and ``[api_keys]``, as pydantic
models (``validation.StrictTable``): their keys, types and bounds. What a key refers to (a provider
named in ``routing``, a capability a provider type serves) is checked by ``loader`` once they are read.

A sub-table another module reads (metrics, observability, limits, blocking, guardrails; a model's
pricing, rate limits and providers) is taken here as it is and handed to that module.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from gateway.config.validation import StrictTable
from providers.http import CLIENT_KINDS

__all__ = ["GatewayTable", "GrantTable", "ModelTable", "TemplateAccessTable", "TENSORZERO_GATEWAY_KEYS",
           "TENSORZERO_MODEL_KEYS"]

#: TensorZero's [gateway] and [models.M] keys the gateway takes without acting on them.
TENSORZERO_GATEWAY_KEYS = ("auth", "base_path", "cache", "disable_pseudonymous_usage_analytics",
                           "fetch_and_encode_input_files_before_inference", "global_outbound_http_timeout_ms",
                           "relay", "unstable_disable_feedback_target_validation", "unstable_error_json")
TENSORZERO_MODEL_KEYS = ("skip_relay", "namespace", "timeouts")

class _Authentication(StrictTable):
    enabled: bool | None = None
    resync_interval_s: float | None = Field(None, gt=0)


class _Redis(StrictTable):
    max_connections: int | None = Field(None, gt=0)
    timeout_s: float | None = Field(None, gt=0)


class TemplateAccessTable(StrictTable):
    base_path: str | None = None
    enabled: Any = None  # TensorZero's, deprecated: it ignores it too


class GatewayTable(StrictTable):
    """None: not set (``GatewaySettings`` holds the defaults)."""

    bind_address: str | None = None
    workers: int | None = None
    debug: bool | None = None
    shutdown_timeout_s: float | None = Field(None, ge=0)
    worker_timeout_s: float | None = Field(None, gt=0)
    max_body_bytes: int | None = Field(None, gt=0)
    header_timeout_s: float | None = Field(None, gt=0)
    body_timeout_s: float | None = Field(None, gt=0)
    keepalive_timeout_s: float | None = Field(None, gt=0)
    max_connections: int | None = Field(None, gt=0)
    max_upstream_body_bytes: int | None = Field(None, gt=0)
    max_sse_event_bytes: int | None = Field(None, gt=0)
    upstream_client: str | None = None
    authentication: _Authentication = _Authentication()
    redis: _Redis = _Redis()
    template_filesystem_access: TemplateAccessTable | None = None
    # Read by observe, limits and guard:
    metrics: Any = None
    observability: Any = None
    analytics: Any = None
    export: Any = None
    rate_limits: Any = None
    usage_limits: Any = None
    blocking: Any = None
    guardrails: Any = None
    # TensorZero's, taken unused:
    auth: Any = None
    base_path: Any = None
    cache: Any = None
    disable_pseudonymous_usage_analytics: Any = None
    fetch_and_encode_input_files_before_inference: Any = None
    global_outbound_http_timeout_ms: Any = None
    relay: Any = None
    unstable_disable_feedback_target_validation: Any = None
    unstable_error_json: Any = None

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"must be >= 0 (0 = one per CPU), got {value}")
        return value

    @field_validator("upstream_client")
    @classmethod
    def _client(cls, value: str | None) -> str | None:
        if value is not None and value not in CLIENT_KINDS:
            raise ValueError(f'unknown client "{value}" (one of: {", ".join(CLIENT_KINDS)})')
        return value


class _Retry(StrictTable):
    num_retries: int = Field(0, ge=0)
    max_delay_s: float = Field(10.0, ge=0)


class ModelTable(StrictTable):
    #: None when absent: the loader says what it is for.
    routing: list[str] | None = None
    endpoints: list[str] = ["chat"]
    fallback_models: list[str] = []
    retry_config: _Retry = _Retry()
    providers: dict[str, Any] = {}
    pricing: Any = None
    rate_limits: Any = None
    guardrail_profile: str | None = None
    skip_relay: Any = None
    namespace: Any = None
    timeouts: Any = None


class GrantTable(StrictTable):
    """One model a key may use, as budapp writes it."""

    endpoint_id: str | None = None
    model_id: str | None = None
    project_id: str | None = None
    prompt_id: Any = None
    prompt_version_id: Any = None
    version: Any = None
