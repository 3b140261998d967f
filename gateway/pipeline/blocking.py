"""Stage 2 (and after resolve): blocking rules, in memory (kept in step with Redis by the sync).

The global rules run before auth, so a blocked client costs no key lookup; the endpoint's rules run
once resolve knows the endpoint. Rules go highest priority first; a ``log`` rule that matches is
recorded and the request goes on; the first ``block`` rule that matches refuses it with 403.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import falcon

from gateway.errors import BlockedError
from gateway.guard.blocking import GLOBAL, BlockingRules

__all__ = ["BlockingStage"]

#: What a header value may hold: printable ASCII (a reason from Redis may hold anything).
_UNSAFE = re.compile(r"[^\x20-\x7e]")


class BlockingStage:
    """``endpoint``: the endpoint's rules (after resolve) rather than the global ones; ``country(ip)``
    the client's country code (GeoIP) or None; ``counted(rule_type, action)`` counts each match."""

    def __init__(self, rules: BlockingRules, *, endpoint: bool, country: Callable[[str], str | None],
                 counted: Callable[[str, str], None] | None = None) -> None:
        self._rules = rules
        self._endpoint = endpoint
        self._country = country
        self._counted = counted or (lambda rule_type, action: None)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        if resource is None or not getattr(resource, "auth", True):
            return  # the operational routes (health, status, metrics) are never blocked
        ctx = req.context
        if self._endpoint:
            if ctx.route is None:
                return
            scope = ctx.endpoint_id or ctx.route.name
        else:
            scope = GLOBAL
        rules = self._rules.for_scope(scope)
        if rules is None:
            return
        client_ip = ctx.client_ip
        country = self._country(client_ip) if rules.has_countries else None
        matches = rules.matches(client_ip, country, ctx.user_agent)
        if rules.rate_rules:
            matches += self._rules.rate_matches(rules.rate_rules, client_ip)
            matches.sort(key=lambda m: m.rule.index)
        if not matches:
            return
        outcome = ctx.outcome
        for match in matches:
            rule = match.rule
            outcome.blocks = (outcome.blocks or []) + [match]
            self._rules.matched(match)
            self._counted(rule.rule_type, rule.action)
            if rule.action != "block":
                continue
            reason = self._rules.reasons.get(rule.name) or match.reason
            match.reason = reason
            outcome.is_blocked = True
            outcome.block_reason = reason
            outcome.block_rule_id = rule.id
            raise BlockedError(reason, headers={"x-block-reason": _UNSAFE.sub("?", reason)[:256],
                                                "x-blocked-by-rule": _UNSAFE.sub("?", rule.id)[:128]})
