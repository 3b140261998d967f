"""What a request is checked against: its limits, grouped into checks that Redis runs atomically.

A model's ``rate_limits`` becomes a ``ModelPlan`` once (cached); a request then makes one ``Check``
of it for its scope (the API key's id, else a digest of the raw key, else the client IP), whose
keys all share the hash tag ``{m=MODEL|SCOPE}`` so Redis Cluster keeps them on one node. TensorZero's
``[[rate_limiting.rules]]`` make one check per matching rule and scope, tagged ``{r=DIGEST|VALUES}``.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping

from gateway.config.limits import EACH, TOTAL
from gateway.config.schema import RateLimitingConfig, RateLimitRule, RateLimits, RateLimitSettings
from gateway.outcome import Outcome

__all__ = ["Check", "Limit", "ModelPlan", "model_plan", "rule_checks", "scope_of", "token_estimate", "used"]

#: Admission asks for this much left of a token or cost limit (any at all): a request that would
#: cross it is still admitted, and the next one waits for the window to move.
_ANY = 1e-9
_KINDS = {"model_inferences": "requests", "tokens": "tokens", "cost": "cost"}


class Limit:
    """One limit: ``capacity`` per ``window_ms`` of ``kind`` (requests, tokens or cost).

    ``refill`` and ``step_ms`` shape a token bucket (``step_ms`` 0: a continuous refill)."""

    __slots__ = ("kind", "window_ms", "capacity", "refill", "step_ms", "need", "suffix")

    def __init__(self, kind: str, window_s: int, capacity: float, refill: float | None = None,
                 step_s: int = 0) -> None:
        self.kind = kind
        self.window_ms = window_s * 1000
        self.capacity = capacity
        self.refill = capacity if refill is None else refill
        self.step_ms = step_s * 1000
        self.need = 1 if kind == "requests" else _ANY
        self.suffix = f"{kind}:{window_s}"

    def argv(self, cost: float) -> tuple:
        return (self.capacity, self.window_ms, cost, self.need, self.refill, self.step_ms)


class ModelPlan:
    """A model's limits under one algorithm, and its concurrency cap (0: none)."""

    __slots__ = ("algorithm", "limits", "max_concurrent", "short")

    def __init__(self, algorithm: str, limits: tuple[Limit, ...], max_concurrent: int) -> None:
        self.algorithm = algorithm
        self.limits = limits
        self.max_concurrent = max_concurrent
        self.short = {"fixed_window": "fw", "sliding_window": "sw", "token_bucket": "tb"}[algorithm]


@functools.lru_cache(maxsize=4096)
def model_plan(limits: RateLimits | None, settings: RateLimitSettings) -> ModelPlan | None:
    """The plan of a model's limits (``settings``' defaults for a model without its own); None: unlimited."""
    if not settings.enabled:
        return None
    if limits is None:
        if settings.default_requests_per_minute is None and settings.default_max_concurrent_requests is None:
            return None
        limits = RateLimits(algorithm=settings.default_algorithm,
                            requests_per_minute=settings.default_requests_per_minute)
    if not limits.enabled:
        return None
    found = []
    for kind, window, value in (("requests", 1, limits.requests_per_second),
                                ("requests", 60, limits.requests_per_minute),
                                ("requests", 3600, limits.requests_per_hour),
                                ("tokens", 60, limits.tokens_per_minute),
                                ("tokens", 3600, limits.tokens_per_hour)):
        if value is None:
            continue
        if limits.algorithm == "token_bucket":
            burst = limits.burst_size if kind == "requests" and limits.burst_size is not None else value
            found.append(Limit(kind, window, burst, value))
        else:
            found.append(Limit(kind, window, value))
    concurrent = limits.max_concurrent_requests or settings.default_max_concurrent_requests or 0
    if not found and not concurrent:
        return None
    return ModelPlan(limits.algorithm, tuple(found), concurrent)


class Check:
    """One atomic script call: limits of one algorithm on keys of one hash tag, maybe with a lease."""

    __slots__ = ("algorithm", "short", "keys", "limits", "costs", "lease_key", "lease_max")

    def __init__(self, algorithm: str, short: str, tag: str, limits: tuple[Limit, ...], costs: list[float],
                 lease_max: int = 0) -> None:
        self.algorithm = algorithm
        self.short = short
        self.keys = [f"rl:{{{tag}}}:{short}:{limit.suffix}" for limit in limits]
        self.limits = limits
        # NOTE: no request reserves more than a whole limit (a max_tokens of 1e17 must not lock a
        # bucket for ages); its settlement still moves the count to what it really used.
        self.costs = [min(cost, limit.capacity) for cost, limit in zip(costs, limits, strict=True)]
        self.lease_max = lease_max
        self.lease_key = f"rl:{{{tag}}}:leases" if lease_max else None


def scope_of(api_key_id: str | None, raw_key: str | None, client_ip: str) -> str:
    """Whose counters a request uses: its key's id, a digest of an unknown raw key, or its client IP."""
    if api_key_id:
        return f"k:{api_key_id}"
    if raw_key:
        return "r:" + hashlib.sha256(raw_key.encode()).hexdigest()[:24]
    return f"ip:{client_ip}"


def token_estimate(body: Mapping | None, bytes_in: int) -> int:
    """What a request is expected to use: a token per four bytes of prompt, plus its output cap."""
    estimate = bytes_in // 4
    if body:
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0:
            estimate += cap
    return max(estimate, 1)


def used(outcome: Outcome) -> tuple[int, float | None]:
    """The tokens a request used (a stream cut short: what was delivered) and its cost, if known."""
    usage = outcome.usage
    if usage is not None:
        return (usage.input_tokens or 0) + (usage.output_tokens or 0), outcome.cost
    if outcome.first_byte is not None or any(a.result == "ok" for a in outcome.attempts):
        # No usage report (e.g. a stream cut short): the prompt and what reached the client, four bytes a token.
        return outcome.bytes_in // 4 + math.ceil(outcome.bytes_out / 4), None
    return 0, 0.0  # no provider answered: nothing was used


def _rule_scope(rule: RateLimitRule, tags: Mapping[str, str], api_key_id: str | None) -> str | None:
    """The rule's counter name for this request, or None when the rule does not apply to it."""
    parts = []
    for entry in rule.scope:
        if entry.tag_key is None:
            if not api_key_id or entry.value not in (EACH, api_key_id):
                return None
            parts.append(f"k={api_key_id}")
            continue
        value = tags.get(entry.tag_key)
        if not isinstance(value, str) or entry.value not in (EACH, TOTAL, value):
            return None
        parts.append(f"{entry.tag_key}={'*' if entry.value == TOTAL else value}")
    return ",".join(parts)


def rule_checks(config: RateLimitingConfig, tags: Mapping[str, str], api_key_id: str | None,
                tokens: int) -> list[Check]:
    """TensorZero's rules for one request: the matching rules of the highest priority, and every
    matching ``always`` rule; each a token bucket refilled at the end of each window."""
    if not config.enabled or not config.rules:
        return []
    matched: list[tuple[RateLimitRule, str]] = []
    best = None
    for rule in config.rules:
        scope = _rule_scope(rule, tags, api_key_id)
        if scope is None:
            continue
        matched.append((rule, scope))
        if not rule.always and (best is None or rule.priority > best):
            best = rule.priority
    checks = []
    for rule, scope in matched:
        if not rule.always and rule.priority != best:
            continue
        limits = _rule_limits(rule)
        costs = [1 if lim.kind == "requests" else tokens if lim.kind == "tokens" else config.default_cost
                 for lim in limits]
        # The hash tag must not hold a "}" (it would end the tag early): the scope's values are digested.
        tag = f"r={rule.digest}|{hashlib.sha256(scope.encode()).hexdigest()[:16]}"
        checks.append(Check("token_bucket", "tz", tag, limits, costs))
    return checks


@functools.lru_cache(maxsize=1024)
def _rule_limits(rule: RateLimitRule) -> tuple[Limit, ...]:
    return tuple(Limit(_KINDS[lim.resource], lim.window_s, lim.capacity, lim.refill_rate, lim.window_s)
                 for lim in rule.limits)
