"""The blocking rules' mirror: ``blocking_rules:global``, ``blocking_rules:endpoint:{endpoint_id}`` and
``blocking_rule_reason:{rule_name}`` into the ``guard.blocking.BlockingRules``."""

from __future__ import annotations

import redis

from gateway.guard.blocking import GLOBAL, BlockingRules, parse_json
from gateway.stores.sync import Mirror, reread, scan_values

__all__ = ["BlockingMirror"]

RULES_PREFIX = "blocking_rules:"
ENDPOINT_PREFIX = "blocking_rules:endpoint:"
REASON_PREFIX = "blocking_rule_reason:"


def _scope(name: str) -> str | None:
    if name == RULES_PREFIX + GLOBAL:
        return GLOBAL
    if name.startswith(ENDPOINT_PREFIX):
        return name[len(ENDPOINT_PREFIX):]
    return None


class BlockingMirror(Mirror):
    prefixes = (RULES_PREFIX, REASON_PREFIX)

    def __init__(self, rules: BlockingRules) -> None:
        self._rules = rules

    def load(self, client: redis.Redis) -> None:
        by_scope, unreadable = {}, []
        for name, raw in scan_values(client, RULES_PREFIX + "*").items():
            scope = _scope(name)
            if scope is not None:
                found = parse_json(raw, name)
                if found is None:
                    unreadable.append(scope)
                else:
                    by_scope[scope] = found
        self._rules.replace_redis(by_scope, unreadable)
        self._rules.reasons = {name[len(REASON_PREFIX):]: raw.decode(errors="replace")
                               for name, raw in scan_values(client, REASON_PREFIX + "*").items()}

    def changed(self, client: redis.Redis, name: str, was_set: bool) -> None:
        raw = reread(client, name) if was_set else None
        if name.startswith(REASON_PREFIX):
            rule_name = name[len(REASON_PREFIX):]
            if raw is None:
                self._rules.reasons.pop(rule_name, None)
            else:
                self._rules.reasons[rule_name] = raw.decode(errors="replace")
            return
        scope = _scope(name)
        if scope is not None:
            self._rules.set_redis(scope, raw, name)
