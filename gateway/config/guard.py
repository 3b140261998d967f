"""The config of the guard: ``[gateway.blocking]`` and its ``[[gateway.blocking.rules]]`` (budapp's rule
fields, checked by the same parser as the rules read from Redis)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from gateway.config.checker import Checker
from gateway.config.schema import BlockingConfig
from gateway.guard.rules import parse_rule

__all__ = ["SECTION_KEYS", "blocking"]

SECTION_KEYS = frozenset({"blocking"})
_RULE_KEYS = {"id", "rule_type", "name", "priority", "status", "expires_at", "action", "config", "endpoint_id"}


def blocking(c: Checker, data: Any) -> BlockingConfig:
    path = "gateway.blocking"
    d = c.table(data, path, {"enabled", "rules"})
    rules = []
    for i, raw in enumerate(c.get(d, "rules", path, (list,), [])):
        where = f"{path}.rules[{i}]"
        rule = c.table(raw, where, _RULE_KEYS)
        try:
            parse_rule(rule, where)
        except ValueError as e:
            c.fail(where, str(e))
            continue
        endpoint = rule.get("endpoint_id")
        if endpoint is not None and not isinstance(endpoint, str):
            c.fail(f"{where}.endpoint_id", "expected a string")
            continue
        rules.append(MappingProxyType(dict(rule)))
    return BlockingConfig(enabled=c.get(d, "enabled", path, (bool,), False), rules=tuple(rules))
