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
from gateway.config.tables import (
    TENSORZERO_GATEWAY_KEYS,
    TENSORZERO_MODEL_KEYS,
    GatewayTable,
    GrantTable,
    ModelTable,
)
from gateway.config.validation import read_table

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
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


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
    gateway, template_base = _gateway(c, top.get("gateway", {}))
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

    tensorzero = read_tensorzero(c, top, source, template_base)
    for name, function in tensorzero.functions.items():
        for variant in function.variants.values():
            model = getattr(variant.table, "model", None)
            where = f"functions.{key_path(name)}.variants.{key_path(variant.name)}.model"
            if model is None or model in models:
                continue
            if "::" not in model:
                c.fail(where, f'model "{model}" is not defined under models (nor a provider_type::model shorthand)')
            elif model.split("::", 1)[0] not in registry:
                c.fail(where, f'shorthand "{model}": unknown provider type "{model.split("::", 1)[0]}"')
    if c.errors:
        raise ConfigError(source, c.errors)
    return Config(gateway=gateway, models=MappingProxyType(models), api_keys=api_keys, source=source,
                  rate_limiting=rate_limiting, guardrails=MappingProxyType(profiles), tensorzero=tensorzero,
                  unimplemented=tuple(dict.fromkeys([*c.unimplemented, *tensorzero.unimplemented])))


def _api_keys(c: Checker, data: Any) -> Mapping[str, Mapping[str, Mapping[str, Any]]]:
    keys = c.table(data, "api_keys", None)
    out = {}
    for key_hash, models in keys.items():
        path = f"api_keys.{key_path(key_hash)}"
        if not _SHA256_HEX.match(key_hash):
            c.fail(path, 'expected the lowercase sha256 hex of "bud-" + the key')
        grants = c.table(models, path, None)
        for model, fields in grants.items():
            if model == "__metadata__":
                continue
            mpath = f"{path}.{key_path(model)}"
            grant = read_table(c, GrantTable, fields, mpath)
            for need in ("endpoint_id", "model_id", "project_id"):
                if grant is not None and not getattr(grant, need):
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


def _accepted(c: Checker, table: Any, path: str, keys: tuple[str, ...]) -> None:
    """TensorZero's keys the table sets, for the start-up list of what is taken unused."""
    c.unimplemented.extend(f"{path}.{key}" for key in keys if key in table.model_fields_set)


def _gateway(c: Checker, data: Any) -> tuple[GatewaySettings, str | None]:
    """The settings, and the template base path (``[gateway.template_filesystem_access]``)."""
    t = read_table(c, GatewayTable, data, "gateway") or GatewayTable()
    _accepted(c, t, "gateway", TENSORZERO_GATEWAY_KEYS)
    access = t.template_filesystem_access
    if access is not None and "enabled" in access.model_fields_set:
        c.unimplemented.append("gateway.template_filesystem_access.enabled")
    given = {name: getattr(t, name) for name in _SETTINGS if getattr(t, name) is not None}
    if t.bind_address is not None:
        try:
            given["host"], given["port"] = parse_bind(t.bind_address)
        except ValueError as e:
            c.fail("gateway.bind_address", str(e))
    auth, redis = t.authentication, t.redis
    if auth.enabled is not None:
        given["auth_enabled"] = auth.enabled
    if auth.resync_interval_s is not None:
        given["resync_interval_s"] = auth.resync_interval_s
    if redis.max_connections is not None:
        given["redis_max_connections"] = redis.max_connections
    if redis.timeout_s is not None:
        given["redis_timeout_s"] = redis.timeout_s
    settings = GatewaySettings(
        **given,
        metrics=observe.metrics(c, _sub(t.metrics)),
        observability=observe.observability(c, _sub(t.observability)),
        analytics=observe.analytics(c, _sub(t.analytics)),
        traces=observe.traces(c, _sub(t.export)),
        rate_limits=limits.rate_limit_settings(c, _sub(t.rate_limits)),
        usage_limits=limits.usage_limit_settings(c, _sub(t.usage_limits)),
        blocking=guard.blocking(c, _sub(t.blocking)),
        guardrails_window_chars=guard.stream_window_chars(c, _sub(t.guardrails)),
    )
    return settings, access.base_path if access is not None else None


#: The [gateway] keys that are GatewaySettings fields of the same name.
_SETTINGS = ("workers", "debug", "shutdown_timeout_s", "worker_timeout_s", "max_body_bytes", "header_timeout_s",
             "body_timeout_s", "keepalive_timeout_s", "max_connections", "max_upstream_body_bytes",
             "max_sse_event_bytes", "upstream_client")


def _sub(value: Any) -> Any:
    return {} if value is None else value


def _model(c: Checker, name: str, data: Any, registry: Mapping[str, Any]) -> ModelConfig:
    path = f"models.{key_path(name)}"
    t = read_table(c, ModelTable, data, path) or ModelTable(routing=[])
    _accepted(c, t, path, TENSORZERO_MODEL_KEYS)
    providers = {p: provider(c, f"{path}.providers.{key_path(p)}", p, v, registry) for p, v in t.providers.items()}
    routing = tuple(t.routing or ())
    if t.routing is None and isinstance(data, dict) and "routing" not in data:
        c.fail(f"{path}.routing", "missing (the providers to try, in order)")
    elif t.routing is not None and not routing:
        c.fail(f"{path}.routing", "must name at least one provider")
    for i, p in enumerate(routing):
        if p not in providers:
            c.fail(f"{path}.routing[{i}]", f'provider "{p}" is not defined under {path}.providers')
    if len(set(routing)) != len(routing):
        c.fail(f"{path}.routing", "lists a provider twice")
    for i, e in enumerate(t.endpoints):
        if e not in CAPABILITIES:
            c.fail(f"{path}.endpoints[{i}]", f'unknown capability "{e}" (one of: {", ".join(sorted(CAPABILITIES))})')
            continue
        for p in routing:
            ptype = providers[p].type if p in providers else None
            if ptype in registry and e not in registry[ptype].capabilities:
                c.fail(f"{path}.endpoints[{i}]", f'provider "{p}" (type "{ptype}") does not serve {e}')
    return ModelConfig(
        name=name,
        routing=routing,
        endpoints=frozenset(e for e in t.endpoints if e in CAPABILITIES),
        fallback_models=tuple(t.fallback_models),
        retry=RetryConfig(num_retries=t.retry_config.num_retries, max_delay_s=float(t.retry_config.max_delay_s)),
        providers=MappingProxyType(providers),
        pricing=observe.pricing(c, t.pricing, path),
        rate_limits=limits.rate_limits(c, t.rate_limits, f"{path}.rate_limits"),
        guardrail_profile=t.guardrail_profile,
    )
