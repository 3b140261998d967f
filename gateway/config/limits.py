"""The config tables of limits: a model's ``rate_limits``, ``[gateway.rate_limits]``,
``[gateway.usage_limits]`` and TensorZero's ``[rate_limiting]`` with its ``[[rate_limiting.rules]]``.

A model's ``rate_limits`` is read the same way from TOML, from a Redis model table entry and from a
``rate_limit:config:{model}`` message, so all three say the same thing in the same words.
"""

from __future__ import annotations

import hashlib
from typing import Any

import ujson

from gateway.config.checker import Checker
from gateway.config.schema import (
    ALGORITHMS,
    RateLimitingConfig,
    RateLimitRule,
    RateLimits,
    RateLimitSettings,
    RuleLimit,
    RuleScope,
    UsageLimitSettings,
)

__all__ = ["SECTION_KEYS", "rate_limit_settings", "rate_limiting", "rate_limits", "usage_limit_settings"]

#: The keys of [gateway] this module reads.
SECTION_KEYS = frozenset({"rate_limits", "usage_limits"})

_COUNTS = ("requests_per_second", "requests_per_minute", "requests_per_hour", "tokens_per_minute",
           "tokens_per_hour", "burst_size", "max_concurrent_requests")
_MODEL_KEYS = {"algorithm", "enabled", *_COUNTS}
_SETTINGS_KEYS = {"enabled", "default_requests_per_minute", "default_algorithm", "default_max_concurrent_requests",
                  "fail_open", "redis_timeout_ms", "lease_ttl_s"}
_USAGE_KEYS = {"enabled", "fail_open"}
_RESOURCES = ("model_inferences", "tokens", "cost")
_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 7 * 86_400, "month": 30 * 86_400}
_RULE_LIMIT_KEYS = {f"{r}_per_{w}" for r in _RESOURCES for w in _WINDOWS}
_RULE_KEYS = {"priority", "always", "scope", *_RULE_LIMIT_KEYS}
#: The scope values with a meaning of their own.
EACH, TOTAL = "tensorzero::each", "tensorzero::total"


def _algorithm(c: Checker, d: dict, key: str, path: str, default: str) -> str:
    value = c.get(d, key, path, (str,), default)
    if value not in ALGORITHMS:
        c.fail(f"{path}.{key}", f'unknown algorithm "{value}" (one of: {", ".join(ALGORITHMS)})')
        return default
    return value


def rate_limits(c: Checker, data: Any, path: str) -> RateLimits | None:
    """A model's ``rate_limits`` table; None when it has none (or only nulls, as budapp may write)."""
    if data is None:
        return None
    d = c.table(data, path, _MODEL_KEYS)
    # NOTE: budapp writes null for a limit it does not set; TOML cannot say null at all.
    d = {k: v for k, v in d.items() if v is not None}
    counts = {key: c.count(d, key, path, None) for key in _COUNTS}
    return RateLimits(
        algorithm=_algorithm(c, d, "algorithm", path, "sliding_window"),
        enabled=c.get(d, "enabled", path, (bool,), True),
        **counts,
    )


def rate_limits_json(raw: bytes | str, where: str) -> tuple[RateLimits | None, list[str]]:
    """A ``rate_limits`` object written as JSON (a control-plane message), and the problems found."""
    try:
        data = ujson.loads(raw)
    except ValueError:
        return None, [f"{where}: not JSON"]
    c = Checker()
    limits = rate_limits(c, data, where)
    return limits, c.errors


def rate_limit_settings(c: Checker, data: Any) -> RateLimitSettings:
    path = "gateway.rate_limits"
    d = c.table(data, path, _SETTINGS_KEYS)
    defaults = RateLimitSettings()
    return RateLimitSettings(
        enabled=c.get(d, "enabled", path, (bool,), defaults.enabled),
        default_requests_per_minute=c.count(d, "default_requests_per_minute", path, None),
        default_algorithm=_algorithm(c, d, "default_algorithm", path, defaults.default_algorithm),
        default_max_concurrent_requests=c.count(d, "default_max_concurrent_requests", path, None),
        fail_open=c.get(d, "fail_open", path, (bool,), defaults.fail_open),
        redis_timeout_ms=float(c.positive(d, "redis_timeout_ms", path, defaults.redis_timeout_ms)),
        lease_ttl_s=float(c.positive(d, "lease_ttl_s", path, defaults.lease_ttl_s)),
    )


def usage_limit_settings(c: Checker, data: Any) -> UsageLimitSettings:
    path = "gateway.usage_limits"
    d = c.table(data, path, _USAGE_KEYS)
    return UsageLimitSettings(
        enabled=c.get(d, "enabled", path, (bool,), None),
        fail_open=c.get(d, "fail_open", path, (bool,), True),
    )


def rate_limiting(c: Checker, data: Any) -> RateLimitingConfig:
    """TensorZero's ``[rate_limiting]`` and its rules, checked as TensorZero checks them."""
    d = c.table(data, "rate_limiting", {"enabled", "default_cost", "rules"})
    rules_raw = c.get(d, "rules", "rate_limiting", (list,), [])
    rules = tuple(r for i, raw in enumerate(rules_raw) if (r := _rule(c, raw, f"rate_limiting.rules[{i}]")))
    return RateLimitingConfig(
        enabled=c.get(d, "enabled", "rate_limiting", (bool,), True),
        default_cost=float(c.positive(d, "default_cost", "rate_limiting", 1.0)),
        rules=rules,
    )


def _rule(c: Checker, data: Any, path: str) -> RateLimitRule | None:
    d = c.table(data, path, _RULE_KEYS)
    limits = []
    for key in sorted(k for k in d if k in _RULE_LIMIT_KEYS):
        resource, _, window = key.rpartition("_per_")
        limit = _rule_limit(c, d[key], f"{path}.{key}", resource)
        if limit is not None:
            limits.append(RuleLimit(resource, _WINDOWS[window], *limit))
    if not limits and not any(k in _RULE_LIMIT_KEYS for k in d):
        c.fail(path, "sets no limit (e.g. model_inferences_per_minute = 10)")
    always = c.get(d, "always", path, (bool,), False)
    priority = c.get(d, "priority", path, (int,), None)
    if always and "priority" in d:
        c.fail(f"{path}.priority", "cannot be set together with always = true")
    elif not always and "priority" not in d:
        c.fail(f"{path}.priority", "missing (an integer; or set always = true)")
    scope = []
    for i, entry in enumerate(c.get(d, "scope", path, (list,), [])):
        found = _scope(c, entry, f"{path}.scope[{i}]")
        if found is not None:
            scope.append(found)
    rule = RateLimitRule(tuple(limits), tuple(scope), priority or 0, always)
    digest = hashlib.sha256(repr((rule.limits, rule.scope, rule.priority, rule.always)).encode()).hexdigest()[:16]
    return RateLimitRule(rule.limits, rule.scope, rule.priority, rule.always, digest) if limits else None


def _rule_limit(c: Checker, value: Any, path: str, resource: str) -> tuple[float, float] | None:
    """(capacity, refill_rate): a number is both; ``{capacity, refill_rate}`` sets them apart."""
    number = (int, float) if resource == "cost" else (int,)
    if isinstance(value, dict):
        d = c.table(value, path, {"capacity", "refill_rate"})
        for key in ("capacity", "refill_rate"):
            if key not in d:
                c.fail(f"{path}.{key}", "missing")
        capacity = c.positive(d, "capacity", path, None)
        refill = c.positive(d, "refill_rate", path, None)
        if capacity is None or refill is None:
            return None
        if not isinstance(capacity, number) or not isinstance(refill, number):
            c.fail(path, f"{resource} limits are whole numbers")
            return None
        return float(capacity), float(refill)
    if isinstance(value, bool) or not isinstance(value, number):
        c.fail(path, f"expected {'a number' if resource == 'cost' else 'an integer'} or a table "
                     "{ capacity, refill_rate }")
        return None
    if value <= 0:
        c.fail(path, f"must be > 0, got {value}")
        return None
    return float(value), float(value)


def _scope(c: Checker, data: Any, path: str) -> RuleScope | None:
    d = c.table(data, path, {"tag_key", "tag_value", "api_key_public_id"})
    if "api_key_public_id" in d:
        if "tag_key" in d or "tag_value" in d:
            c.fail(path, "is either { tag_key, tag_value } or { api_key_public_id }")
            return None
        value = c.get(d, "api_key_public_id", path, (str,), None)
        if value == TOTAL:
            c.fail(f"{path}.api_key_public_id", f"{TOTAL} is not supported for API keys (only {EACH} or an id)")
            return None
        return None if value is None else RuleScope(None, value)
    key = c.get(d, "tag_key", path, (str,), None)
    value = c.get(d, "tag_value", path, (str,), None)
    for name, got in (("tag_key", key), ("tag_value", value)):
        if got is None and name not in d:
            c.fail(f"{path}.{name}", "missing")
    return None if key is None or value is None else RuleScope(key, value)
