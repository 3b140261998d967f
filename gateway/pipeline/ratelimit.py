"""Stage 7: rate limits and concurrency, per API key and model, in one Redis round trip.

The model's limits (a published ``rate_limit:config:{model}`` over its own ``rate_limits``, or the
``[gateway.rate_limits]`` defaults) and TensorZero's matching ``[[rate_limiting.rules]]`` are checked
before any upstream call. An admitted request carries the limits' headers on its answer and reserves
its estimated tokens; the finish hook settles them to its real use and releases its lease.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from gateway.config.schema import RateLimitingConfig, RateLimitSettings
from gateway.errors import ConcurrencyLimitError, RateLimitError
from gateway.limits.headers import limit_headers, retry_headers
from gateway.limits.limiter import RateLimiter
from gateway.limits.overrides import RateLimitOverrides
from gateway.limits.plan import Check, model_plan, rule_checks, scope_of, token_estimate
from gateway.pipeline.auth import client_key

__all__ = ["RateLimitStage"]

_TAGS = "tensorzero::tags"


class RateLimitStage:
    """``denied(model, code)`` counts each refusal."""

    def __init__(self, limiter: RateLimiter, settings: RateLimitSettings, rules: RateLimitingConfig,
                 overrides: RateLimitOverrides, denied: Callable[[str, str], None] | None = None) -> None:
        self._limiter = limiter
        self._settings = settings
        self._rules = rules
        self._overrides = overrides
        self._denied = denied or (lambda model, code: None)
        self._default_plan = model_plan(None, settings)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        ctx = req.context
        route = ctx.route
        if route is None:
            return
        limits = self._overrides.get((route.name, ctx.model), route.config.rate_limits)
        # PERF: most models have no limits of their own; their plan (the defaults') is made once.
        plan = self._default_plan if limits is None else model_plan(limits, self._settings)
        rules = self._rules.rules
        if plan is None and not rules:
            return
        outcome = ctx.outcome
        tokens = token_estimate(ctx.body, outcome.bytes_in)
        checks: list[Check] = []
        if plan is not None:
            scope = scope_of(ctx.api_key_id, None if ctx.api_key_id else client_key(req), ctx.client_ip)
            costs = [1 if limit.kind == "requests" else tokens for limit in plan.limits]
            checks.append(Check(plan.algorithm, plan.short, f"m={route.name}|{scope}", plan.limits, costs,
                                plan.max_concurrent))
        if rules:
            # NOTE: TensorZero's native routes carry tags as ``tags``; the OpenAI ones as ``tensorzero::tags``.
            tags = ctx.body.get("tags" if ctx.error_format == "tensorzero" else _TAGS) if ctx.body else None
            checks += rule_checks(self._rules, tags if isinstance(tags, dict) else {}, ctx.api_key_id, tokens)
        if not checks:
            return
        admission = self._limiter.admit(checks, outcome.inference_id)
        if not admission.admitted:
            concurrency = any(r[0] != 1 and r[1] == 2 for r in admission.results)
            error = ConcurrencyLimitError if concurrency else RateLimitError
            message = "Too many concurrent requests" if concurrency else "Rate limit exceeded"
            self._denied(route.name, error.code)
            raise error(message, headers=retry_headers(admission))
        resp.set_headers(limit_headers(admission))
        if any(c.lease_key is not None or any(lim.kind != "requests" for lim in c.limits) for c in checks):
            limiter = self._limiter
            outcome.on_finish(lambda o: limiter.finish(admission, o))
