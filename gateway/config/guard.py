"""The config of the guard: ``[gateway.blocking]`` and its ``[[gateway.blocking.rules]]`` (budapp's rule
fields, checked by the same parser as the rules read from Redis), and ``[guardrails."ID"]`` profiles."""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

from gateway.config.checker import Checker, key_path
from gateway.config.schema import BlockingConfig, GuardProviderConfig, GuardrailProfile
from gateway.guard.pii import LocalGuard
from gateway.guard.rules import parse_rule
from providers.credentials import parse_location

__all__ = ["SECTION_KEYS", "blocking", "guardrails", "profile", "stream_window_chars"]

SECTION_KEYS = frozenset({"blocking", "guardrails"})
#: The environment variable that sets the stream window when the config does not.
WINDOW_ENV = "STREAM_GUARDRAIL_WINDOW_CHAR_LIMIT"
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


_PROFILE_KEYS = {"name", "guard_types", "execution_mode", "failure_mode", "severity_threshold", "providers"}
_GUARD_TYPES = ("input", "output")
_LOCAL_KEYS = {"type", "pii", "action", "patterns", "deny_words"}
#: Provider types a profile may name, and those not served yet (refused at start, by key path).
GUARD_PROVIDERS = ("local", "openai", "azure_content_safety")
_AZURE_KEYS = {"type", "endpoint", "api_key_location", "categories", "severity_threshold", "timeout_ms",
               "api_version"}
#: OpenAI's moderation categories (omni-moderation-latest; text-moderation-* use a subset).
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                         "sexual/minors", "violence", "violence/graphic")
_OPENAI_KEYS = {"type", "api_base", "api_key_location", "probe_config", "severity_threshold", "timeout_ms"}


def guardrails(c: Checker, data: Any) -> dict[str, GuardrailProfile]:
    return {profile_id: profile(c, profile_id, raw, f"guardrails.{key_path(profile_id)}")
            for profile_id, raw in c.table(data, "guardrails", None).items()}


def profile(c: Checker, profile_id: str, data: Any, path: str) -> GuardrailProfile:
    """One profile: a ``[guardrails."ID"]`` table, or a ``guardrail_table:{id}`` entry of budapp's."""
    d = c.table(data, path, _PROFILE_KEYS)
    types = c.str_list(d, "guard_types", path, _GUARD_TYPES)
    for i, kind in enumerate(types):
        if kind not in _GUARD_TYPES:
            c.fail(f"{path}.guard_types[{i}]", 'one of "input", "output"')
    mode = c.get(d, "execution_mode", path, (str,), "parallel")
    if mode not in ("parallel", "sequential"):
        c.fail(f"{path}.execution_mode", 'one of "parallel", "sequential"')
    failure = c.get(d, "failure_mode", path, (str,), "best_effort")
    if failure not in ("best_effort", "fail_fast"):
        c.fail(f"{path}.failure_mode", 'one of "best_effort", "fail_fast"')
    providers = []
    for name, pdata in c.table(d.get("providers", {}), f"{path}.providers", None).items():
        found = _guard_provider(c, name, pdata, f"{path}.providers.{key_path(name)}")
        if found is not None:
            providers.append(found)
    if not providers and "providers" in d:
        c.fail(f"{path}.providers", "names no provider")
    threshold = c.get(d, "severity_threshold", path, (int, float), None)
    if threshold is not None and not 0 <= threshold <= 1:
        c.fail(f"{path}.severity_threshold", f"must be between 0 and 1 (a moderation score), got {threshold}")
        threshold = None
    return GuardrailProfile(profile_id, frozenset(types), tuple(providers), mode, failure,
                            None if threshold is None else float(threshold))


def _guard_provider(c: Checker, name: str, data: Any, path: str) -> GuardProviderConfig | None:
    d = c.table(data, path, None)
    kind = c.get(d, "type", path, (str,), None)
    if kind not in GUARD_PROVIDERS:
        c.fail(f"{path}.type", f"one of: {', '.join(GUARD_PROVIDERS)}")
        return None
    if kind == "azure_content_safety":
        return _azure_provider(c, name, d, path)
    if kind == "openai":
        return _openai_provider(c, name, d, path)
    c.table(d, path, _LOCAL_KEYS)
    action = c.get(d, "action", path, (str,), "block")
    if action not in ("block", "redact"):
        c.fail(f"{path}.action", 'one of "block", "redact"')
    pii = c.str_list(d, "pii", path, ())
    patterns = c.str_map(d, "patterns", path)
    words = c.str_list(d, "deny_words", path, ())
    if not pii and not patterns and not words:
        c.fail(path, "finds nothing: set pii, patterns or deny_words")
        return None
    try:
        LocalGuard(pii, patterns, words)
    except ValueError as e:
        c.fail(path, str(e))
        return None
    return GuardProviderConfig(name, kind, MappingProxyType({"pii": pii, "action": action,
                                                             "patterns": patterns, "deny_words": words}))


def stream_window_chars(c: Checker, data: Any) -> int:
    """[gateway.guardrails] stream_window_chars, else the environment's, else 50."""
    d = c.table(data, "gateway.guardrails", {"stream_window_chars"})
    default = 50
    env = os.environ.get(WINDOW_ENV, "")
    if env:
        if env.isdigit() and int(env) > 0:
            default = int(env)
        else:
            c.fail(WINDOW_ENV, f'expected a whole number > 0, got "{env}"')
    return c.count(d, "stream_window_chars", "gateway.guardrails", default)


def _url(c: Checker, d: dict, key: str, path: str) -> str | None:
    value = c.get(d, key, path, (str,), None)
    if value is not None and not value.startswith(("http://", "https://")):
        c.fail(f"{path}.{key}", f'"{value}" is not an http:// or https:// URL')
    return value


def _location(c: Checker, d: dict, path: str) -> str | None:
    """A provider's ``api_key_location`` (None: its type's default), checked."""
    location = c.get(d, "api_key_location", path, (str,), None)
    if location is not None:
        try:
            parse_location(location)
        except ValueError as e:
            c.fail(f"{path}.api_key_location", str(e))
    return location


def _openai_provider(c: Checker, name: str, d: dict, path: str) -> GuardProviderConfig | None:
    c.table(d, path, _OPENAI_KEYS)
    base = _url(c, d, "api_base", path)
    location = _location(c, d, path)
    probes = {}
    for model, categories in c.table(d.get("probe_config", {}), f"{path}.probe_config", None).items():
        if not isinstance(categories, list) or not all(isinstance(x, str) for x in categories):
            c.fail(f"{path}.probe_config.{key_path(model)}", "expected an array of category names")
            continue
        unknown = [x for x in categories if x not in MODERATION_CATEGORIES]
        if unknown:
            c.fail(f"{path}.probe_config.{key_path(model)}", f'unknown moderation category "{unknown[0]}" '
                   f'(one of: {", ".join(MODERATION_CATEGORIES)})')
            continue
        probes[model] = tuple(categories)
    threshold = c.get(d, "severity_threshold", path, (int, float), None)
    if threshold is not None and not 0 <= threshold <= 1:
        c.fail(f"{path}.severity_threshold", f"must be between 0 and 1, got {threshold}")
    timeout = c.positive(d, "timeout_ms", path, 2000)
    return GuardProviderConfig(name, "openai", MappingProxyType({
        "api_base": base, "api_key_location": location, "probe_config": probes or None,
        "severity_threshold": threshold, "timeout_ms": timeout}))


def _azure_provider(c: Checker, name: str, d: dict, path: str) -> GuardProviderConfig | None:
    c.table(d, path, _AZURE_KEYS)
    endpoint = _url(c, d, "endpoint", path)
    if endpoint is None:
        c.fail(f"{path}.endpoint", "missing (the Content Safety resource's endpoint)")
    location = _location(c, d, path)
    categories = c.str_list(d, "categories", path, ())
    threshold = c.get(d, "severity_threshold", path, (int,), None)
    if threshold is not None and not 0 <= threshold <= 7:
        c.fail(f"{path}.severity_threshold", f"a severity from 0 to 7, got {threshold}")
    return GuardProviderConfig(name, "azure_content_safety", MappingProxyType({
        "endpoint": endpoint, "api_key_location": location, "categories": categories or None,
        "severity_threshold": threshold, "timeout_ms": c.positive(d, "timeout_ms", path, 2000),
        "api_version": c.get(d, "api_version", path, (str,), None)}))
