"""The config tables of limits: a model's ``rate_limits``, ``[gateway.rate_limits]``,
``[gateway.usage_limits]`` and TensorZero's ``[rate_limiting]`` with its ``[[rate_limiting.rules]]``,
each read through a ``StrictTable`` model into its frozen object in ``schema``.

A model's ``rate_limits`` is read the same way from TOML, from a Redis model table entry and from a
``rate_limit:config:{model}`` message, so all three say the same thing in the same words.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import ujson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    WrapValidator,
    create_model,
    model_validator,
)

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
from gateway.config.validation import StrictTable, read_table

__all__ = ["SECTION_KEYS", "rate_limit_settings", "rate_limiting", "rate_limits", "usage_limit_settings"]

#: The keys of [gateway] this module reads.
SECTION_KEYS = frozenset({"rate_limits", "usage_limits"})

_RESOURCES = ("model_inferences", "tokens", "cost")
_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400, "week": 7 * 86_400, "month": 30 * 86_400}
_RULE_LIMIT_KEYS = {f"{r}_per_{w}" for r in _RESOURCES for w in _WINDOWS}
#: The scope values with a meaning of their own.
EACH, TOTAL = "tensorzero::each", "tensorzero::total"


def _algorithm(value: str) -> str:
    if value not in ALGORITHMS:
        raise ValueError(f'unknown algorithm "{value}" (one of: {", ".join(ALGORITHMS)})')
    return value


Algorithm = Annotated[str, AfterValidator(_algorithm)]
Count = Annotated[int, Field(gt=0)]


def _given(table: StrictTable) -> dict[str, Any]:
    """The values a table sets; None means "not set", and the frozen object's default holds."""
    return {name: value for name, value in table if value is not None}


class _ModelLimits(StrictTable):
    # NOTE: budapp writes null for a limit it does not set (TOML cannot say null at all): null is "not set".
    algorithm: Algorithm | None = None
    enabled: bool | None = None
    requests_per_second: Count | None = None
    requests_per_minute: Count | None = None
    requests_per_hour: Count | None = None
    tokens_per_minute: Count | None = None
    tokens_per_hour: Count | None = None
    burst_size: Count | None = None
    max_concurrent_requests: Count | None = None


class _Settings(StrictTable):
    enabled: bool | None = None
    default_requests_per_minute: Count | None = None
    default_algorithm: Algorithm | None = None
    default_max_concurrent_requests: Count | None = None
    fail_open: bool | None = None
    redis_timeout_ms: float | None = Field(None, gt=0)
    lease_ttl_s: float | None = Field(None, gt=0)


class _Usage(StrictTable):
    enabled: bool | None = None
    fail_open: bool | None = None


def rate_limits(c: Checker, data: Any, path: str) -> RateLimits | None:
    """A model's ``rate_limits`` table; None when it has none (or only nulls, as budapp may write)."""
    if data is None:
        return None
    return RateLimits(**_given(read_table(c, _ModelLimits, data, path) or _ModelLimits()))


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
    return RateLimitSettings(**_given(read_table(c, _Settings, data, "gateway.rate_limits") or _Settings()))


def usage_limit_settings(c: Checker, data: Any) -> UsageLimitSettings:
    return UsageLimitSettings(**_given(read_table(c, _Usage, data, "gateway.usage_limits") or _Usage()))


class _Bucket(StrictTable):
    capacity: float = Field(gt=0)
    refill_rate: float = Field(gt=0)


def _limit(resource: str) -> Any:
    """A rule's ``RESOURCE_per_WINDOW``, read as (capacity, refill_rate): a number is both, a table
    ``{capacity, refill_rate}`` sets them apart. Only cost may be a fraction."""
    whole = resource != "cost"

    def number(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise ValueError(f"expected {'an integer' if whole else 'a number'} or a table "
                             "{ capacity, refill_rate }")
        return value

    def pair(value: Any, handler: Any) -> tuple[float, float]:
        read = handler(value)
        if isinstance(read, float):
            return read, read
        # NOTE: the model has made them floats; whether they were written whole is in the raw table.
        if whole and any(isinstance(value[k], float) for k in ("capacity", "refill_rate")):
            raise ValueError(f"{resource} limits are whole numbers")
        return read.capacity, read.refill_rate

    return Annotated[
        Annotated[_Bucket, Tag("Bucket")] | Annotated[float, BeforeValidator(number), Field(gt=0), Tag("Number")],
        Discriminator(lambda value: "Bucket" if isinstance(value, dict) else "Number"),
        WrapValidator(pair),
    ]


class _TagScope(StrictTable):
    tag_key: str
    tag_value: str


def _not_total(value: str) -> str:
    if value == TOTAL:
        raise ValueError(f"{TOTAL} is not supported for API keys (only {EACH} or an id)")
    return value


class _KeyScope(StrictTable):
    api_key_public_id: Annotated[str, AfterValidator(_not_total)]

    @model_validator(mode="before")
    @classmethod
    def _alone(cls, data: Any) -> Any:
        # NOTE: before the keys are read: with both kinds, which key is wrong is not known.
        if "tag_key" in data or "tag_value" in data:
            raise ValueError("is either { tag_key, tag_value } or { api_key_public_id }")
        return data


#: One scope entry: the table with api_key_public_id is of that kind, any other value is read as a tag.
Scope = Annotated[
    Annotated[_TagScope, Tag("Tag")] | Annotated[_KeyScope, Tag("Key")],
    Discriminator(lambda value: "Key" if isinstance(value, dict) and "api_key_public_id" in value else "Tag"),
]


class _RuleBase(StrictTable):
    priority: int | None = None
    always: bool = False
    scope: list[Scope] = []


#: A rule: every RESOURCE_per_WINDOW is a key of its own.
_Rule = create_model("_Rule", __base__=_RuleBase,
                     **{key: (_limit(key.rpartition("_per_")[0]) | None, None) for key in sorted(_RULE_LIMIT_KEYS)})


class _RateLimiting(StrictTable):
    enabled: bool | None = None
    default_cost: float | None = Field(None, gt=0)
    rules: list[_Rule] = []  # type: ignore[valid-type]


def rate_limiting(c: Checker, data: Any) -> RateLimitingConfig:
    """TensorZero's ``[rate_limiting]`` and its rules, checked as TensorZero checks them."""
    table = read_table(c, _RateLimiting, data, "rate_limiting") or _RateLimiting()
    rules = data.get("rules") if isinstance(data, dict) else None
    for i, raw in enumerate(rules if isinstance(rules, list) else ()):
        if isinstance(raw, dict):  # any other value is told by the model
            _rule_checks(c, raw, f"rate_limiting.rules[{i}]")
    return RateLimitingConfig(**{**_given(table), "rules": tuple(_rule(r) for r in table.rules)})


def _rule_checks(c: Checker, raw: dict, path: str) -> None:
    """What a rule's keys say together; checked on the table as written, so that each is told beside the
    errors of the keys themselves (a model validator would run only once those are right)."""
    if not any(k in _RULE_LIMIT_KEYS for k in raw):
        c.fail(path, "sets no limit (e.g. model_inferences_per_minute = 10)")
    always = raw.get("always") is True  # a wrong always is told by the model, and counts as false
    if always and "priority" in raw:
        c.fail(f"{path}.priority", "cannot be set together with always = true")
    elif not always and "priority" not in raw:
        c.fail(f"{path}.priority", "missing (an integer; or set always = true)")


def _rule(table: Any) -> RateLimitRule:
    limits = tuple(RuleLimit(key.rpartition("_per_")[0], _WINDOWS[key.rpartition("_per_")[2]], *limit)
                   for key in sorted(_RULE_LIMIT_KEYS) if (limit := getattr(table, key)) is not None)
    scope = tuple(RuleScope(None, s.api_key_public_id) if isinstance(s, _KeyScope) else RuleScope(s.tag_key, s.tag_value)
                  for s in table.scope)
    priority = table.priority or 0
    # NOTE: the digest names the rule's counters in Redis: its input must not change, or every rule restarts.
    digest = hashlib.sha256(repr((limits, scope, priority, table.always)).encode()).hexdigest()[:16]
    return RateLimitRule(limits, scope, priority, table.always, digest)
