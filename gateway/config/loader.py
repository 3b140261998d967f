"""Read a TOML config with tomlkit and validate it into ``Config``, naming the key path of every error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError

from gateway.config import guard, limits, observe
from gateway.config.checker import Checker, ConfigError, key_path
from gateway.config.functions import TENSORZERO_SECTIONS
from gateway.config.providers import provider
from gateway.config.schema import (
    CAPABILITIES,
    Config,
    GatewaySettings,
    ModelConfig,
    RetryConfig,
)
from providers.http import CLIENT_KINDS

__all__ = ["ConfigError", "auth_enabled", "load_config", "load_config_text", "model_from_dict", "parse_bind"]


def parse_bind(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); raise ``ValueError`` with the reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f'"{value}" is not HOST:PORT')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'"{value}" has an invalid port')
    return host, int(port)


_TOP_KEYS = {"gateway", "models", "api_keys", "rate_limiting", "guardrails", *TENSORZERO_SECTIONS}
#: TensorZero's [gateway] keys the gateway takes without acting on them.
_GATEWAY_ACCEPTED = frozenset({
    "auth", "base_path", "cache", "disable_pseudonymous_usage_analytics",
    "fetch_and_encode_input_files_before_inference", "global_outbound_http_timeout_ms", "relay",
    "unstable_disable_feedback_target_validation", "unstable_error_json",
})
_MODEL_ACCEPTED = frozenset({"skip_relay", "namespace", "timeouts"})
_GATEWAY_KEYS = {
    "bind_address",
    "workers",
    "debug",
    "shutdown_timeout_s",
    "worker_timeout_s",
    "max_body_bytes",
    "header_timeout_s",
    "body_timeout_s",
    "keepalive_timeout_s",
    "max_connections",
    "max_upstream_body_bytes",
    "max_sse_event_bytes",
    "upstream_client",
    "authentication",
    "redis",
    "template_filesystem_access",
    *observe.SECTION_KEYS,
    *limits.SECTION_KEYS,
    *guard.SECTION_KEYS,
}
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_GRANT_KEYS = {"endpoint_id", "model_id", "project_id", "prompt_id", "prompt_version_id", "version"}
_AUTH_KEYS = {"enabled", "resync_interval_s"}
_REDIS_KEYS = {"max_connections", "timeout_s"}
_MODEL_KEYS = {"routing", "endpoints", "fallback_models", "retry_config", "providers", "pricing", "rate_limits",
               "guardrail_profile"}
_RETRY_KEYS = {"num_retries", "max_delay_s"}


def load_config(path: str, registry: Mapping[str, Any]) -> Config:
    """Load and validate the TOML file at ``path``; raise ``ConfigError`` listing every problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, [f"cannot read the file: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, [f"not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    return load_config_text(text, path, registry)


def load_config_text(text: str, source: str, registry: Mapping[str, Any]) -> Config:
    try:
        raw = tomlkit.parse(text).unwrap()
    except ParseError as e:
        raise ConfigError(source, [f"invalid TOML: {e}"]) from None
    c = Checker()
    top = c.table(raw, "", _TOP_KEYS)
    gateway = _gateway(c, top.get("gateway", {}))
    models_raw = c.table(top.get("models", {}), "models", None)
    models = {name: _model(c, name, m, registry) for name, m in models_raw.items()}
    for name, model in models.items():
        for i, other in enumerate(model.fallback_models):
            if other not in models:
                c.fail(f"models.{key_path(name)}.fallback_models[{i}]", f'model "{other}" is not defined under models')
            elif other == name:
                c.fail(f"models.{key_path(name)}.fallback_models[{i}]", "a model cannot fall back to itself")
    api_keys = _api_keys(c, top.get("api_keys", {}))
    rate_limiting = limits.rate_limiting(c, top.get("rate_limiting", {}))
    profiles = guard.guardrails(c, top.get("guardrails", {}))
    for name, model in models.items():
        if model.guardrail_profile is not None and model.guardrail_profile not in profiles:
            c.fail(f"models.{key_path(name)}.guardrail_profile",
                   f'profile "{model.guardrail_profile}" is not defined under guardrails')
    # NOTE: imported here: gateway.tensorzero builds on gateway.config, not the other way round.
    from gateway.tensorzero.config import read_tensorzero

    template_base = _template_base(c, top.get("gateway", {}))
    tensorzero = read_tensorzero(c, top, source, template_base)
    for name, function in tensorzero.functions.items():
        for variant in function.variants.values():
            model = getattr(variant.table, "model", None)
            if model is not None and model not in models and "::" not in model:
                c.fail(f"functions.{key_path(name)}.variants.{key_path(variant.name)}.model",
                       f'model "{model}" is not defined under models (nor a provider_type::model shorthand)')
    if c.errors:
        raise ConfigError(source, c.errors)
    return Config(gateway=gateway, models=MappingProxyType(models), api_keys=api_keys, source=source,
                  rate_limiting=rate_limiting, guardrails=MappingProxyType(profiles), tensorzero=tensorzero,
                  unimplemented=tuple(dict.fromkeys([*c.unimplemented, *tensorzero.unimplemented])))


def _template_base(c: Checker, gateway: Any) -> str | None:
    access = gateway.get("template_filesystem_access") if isinstance(gateway, dict) else None
    if access is None:
        return None
    d = c.table(access, "gateway.template_filesystem_access", {"base_path"}, frozenset({"enabled"}))
    return c.get(d, "base_path", "gateway.template_filesystem_access", (str,), None)


def _api_keys(c: Checker, data: Any) -> Mapping[str, Mapping[str, Mapping[str, Any]]]:
    keys = c.table(data, "api_keys", None)
    out = {}
    for key_hash, models in keys.items():
        path = f"api_keys.{key_path(key_hash)}"
        if not _SHA256_HEX.match(key_hash):
            c.fail(path, 'expected the lowercase sha256 hex of "bud-" + the key')
        grants = c.table(models, path, None)
        for model, fields in grants.items():
            mpath = f"{path}.{key_path(model)}"
            d = c.table(fields, mpath, None if model == "__metadata__" else _GRANT_KEYS)
            if model != "__metadata__":
                for need in ("endpoint_id", "model_id", "project_id"):
                    if not isinstance(d.get(need), str) or not d.get(need):
                        c.fail(f"{mpath}.{need}", "missing (a non-empty string)")
        out[key_hash] = MappingProxyType(dict(grants))
    return MappingProxyType(out)


def auth_enabled(config: Config, redis_url: str | None) -> bool:
    """Whether requests need a key; raise ``ConfigError`` when auth is asked for with no key source."""
    settings = config.gateway
    sources = bool(redis_url) or bool(config.api_keys)
    if settings.auth_enabled is None:
        return sources
    if settings.auth_enabled and not sources:
        raise ConfigError(config.source, [
            "gateway.authentication.enabled: true, but there is no key source: set TENSORZERO_REDIS_URL "
            "or add [api_keys] (the gateway never runs open when auth is asked for)"
        ])
    return settings.auth_enabled


def model_from_dict(name: str, data: Any, registry: Mapping[str, Any], source: str) -> ModelConfig:
    """One model table (a Redis model table entry) validated like a TOML model."""
    c = Checker()
    if isinstance(data, dict) and data.get("guardrail_profile") is None:
        data = {k: v for k, v in data.items() if k != "guardrail_profile"}  # budapp writes null for none
    model = _model(c, name, data, registry)
    if c.errors:
        raise ConfigError(source, c.errors)
    return model


def _gateway(c: Checker, data: Any) -> GatewaySettings:
    d = c.table(data, "gateway", _GATEWAY_KEYS, _GATEWAY_ACCEPTED)
    defaults = GatewaySettings()
    host, port = defaults.host, defaults.port
    bind = c.get(d, "bind_address", "gateway", (str,), None)
    if bind is not None:
        try:
            host, port = parse_bind(bind)
        except ValueError as e:
            c.fail("gateway.bind_address", str(e))
    workers = c.get(d, "workers", "gateway", (int,), defaults.workers)
    if workers < 0:
        c.fail("gateway.workers", f"must be >= 0 (0 = one per CPU), got {workers}")
        workers = defaults.workers
    upstream_client = c.get(d, "upstream_client", "gateway", (str,), defaults.upstream_client)
    if upstream_client not in CLIENT_KINDS:
        c.fail("gateway.upstream_client", f'unknown client "{upstream_client}" (one of: {", ".join(CLIENT_KINDS)})')
        upstream_client = defaults.upstream_client
    auth = c.table(d.get("authentication", {}), "gateway.authentication", _AUTH_KEYS)
    redis = c.table(d.get("redis", {}), "gateway.redis", _REDIS_KEYS)
    max_connections = c.get(redis, "max_connections", "gateway.redis", (int,), defaults.redis_max_connections)
    if max_connections < 1:
        c.fail("gateway.redis.max_connections", f"must be > 0, got {max_connections}")
        max_connections = defaults.redis_max_connections
    return GatewaySettings(
        metrics=observe.metrics(c, d.get("metrics", {})),
        observability=observe.observability(c, d.get("observability", {})),
        analytics=observe.analytics(c, d.get("analytics", {})),
        traces=observe.traces(c, d.get("export", {})),
        rate_limits=limits.rate_limit_settings(c, d.get("rate_limits", {})),
        usage_limits=limits.usage_limit_settings(c, d.get("usage_limits", {})),
        blocking=guard.blocking(c, d.get("blocking", {})),
        guardrails_window_chars=guard.stream_window_chars(c, d.get("guardrails", {})),
        auth_enabled=c.get(auth, "enabled", "gateway.authentication", (bool,), None),
        resync_interval_s=float(c.positive(auth, "resync_interval_s", "gateway.authentication", defaults.resync_interval_s)),
        redis_max_connections=max_connections,
        redis_timeout_s=float(c.positive(redis, "timeout_s", "gateway.redis", defaults.redis_timeout_s)),
        upstream_client=upstream_client,
        host=host,
        port=port,
        workers=workers,
        debug=c.get(d, "debug", "gateway", (bool,), defaults.debug),
        shutdown_timeout_s=float(c.positive(d, "shutdown_timeout_s", "gateway", defaults.shutdown_timeout_s, allow_zero=True)),
        max_body_bytes=c.positive(d, "max_body_bytes", "gateway", defaults.max_body_bytes),
        worker_timeout_s=float(c.positive(d, "worker_timeout_s", "gateway", defaults.worker_timeout_s)),
        header_timeout_s=float(c.positive(d, "header_timeout_s", "gateway", defaults.header_timeout_s)),
        body_timeout_s=float(c.positive(d, "body_timeout_s", "gateway", defaults.body_timeout_s)),
        keepalive_timeout_s=float(c.positive(d, "keepalive_timeout_s", "gateway", defaults.keepalive_timeout_s)),
        max_connections=c.count(d, "max_connections", "gateway", defaults.max_connections),
        max_upstream_body_bytes=c.count(d, "max_upstream_body_bytes", "gateway", defaults.max_upstream_body_bytes),
        max_sse_event_bytes=c.count(d, "max_sse_event_bytes", "gateway", defaults.max_sse_event_bytes),
    )


def _model(c: Checker, name: str, data: Any, registry: Mapping[str, Any]) -> ModelConfig:
    path = f"models.{key_path(name)}"
    d = c.table(data, path, _MODEL_KEYS, _MODEL_ACCEPTED)
    providers_raw = c.table(d.get("providers", {}), f"{path}.providers", None)
    providers = {p: provider(c, f"{path}.providers.{key_path(p)}", p, v, registry) for p, v in providers_raw.items()}
    routing = c.str_list(d, "routing", path, ())
    if "routing" not in d:
        c.fail(f"{path}.routing", "missing (the providers to try, in order)")
    elif not routing:
        c.fail(f"{path}.routing", "must name at least one provider")
    for i, p in enumerate(routing):
        if p not in providers:
            c.fail(f"{path}.routing[{i}]", f'provider "{p}" is not defined under {path}.providers')
    if len(set(routing)) != len(routing):
        c.fail(f"{path}.routing", "lists a provider twice")
    endpoints = c.str_list(d, "endpoints", path, ("chat",))
    for i, e in enumerate(endpoints):
        if e not in CAPABILITIES:
            c.fail(f"{path}.endpoints[{i}]", f'unknown capability "{e}" (one of: {", ".join(sorted(CAPABILITIES))})')
            continue
        for p in routing:
            ptype = providers[p].type if p in providers else None
            if ptype in registry and e not in registry[ptype].capabilities:
                c.fail(f"{path}.endpoints[{i}]", f'provider "{p}" (type "{ptype}") does not serve {e}')
    retry = c.table(d.get("retry_config", {}), f"{path}.retry_config", _RETRY_KEYS)
    num_retries = c.get(retry, "num_retries", f"{path}.retry_config", (int,), 0)
    if num_retries < 0:
        c.fail(f"{path}.retry_config.num_retries", f"must be >= 0, got {num_retries}")
        num_retries = 0
    return ModelConfig(
        name=name,
        routing=routing,
        endpoints=frozenset(endpoints),
        fallback_models=c.str_list(d, "fallback_models", path, ()),
        retry=RetryConfig(
            num_retries=num_retries,
            max_delay_s=float(c.positive(retry, "max_delay_s", f"{path}.retry_config", 10.0, allow_zero=True)),
        ),
        providers=MappingProxyType(providers),
        pricing=observe.pricing(c, d.get("pricing"), path),
        rate_limits=limits.rate_limits(c, d.get("rate_limits"), f"{path}.rate_limits"),
        guardrail_profile=c.get(d, "guardrail_profile", path, (str,), None),
    )
