"""The config of the guard: ``[gateway.blocking]`` and its ``[[gateway.blocking.rules]]`` (budapp's rule
fields, checked by the same parser as the rules read from Redis), ``[gateway.guardrails]``, and
``[guardrails."ID"]`` profiles (budapp's ``guardrail_table:{id}`` entries are read the same way).

The tables are the models of ``gateway.config.guard_models``; ``read_table`` tells their errors with
their key paths, and a valid table becomes the frozen dataclasses of ``gateway.config.schema``.
"""

from __future__ import annotations

import os
from types import MappingProxyType
from typing import Any

from gateway.config.checker import Checker, key_path
from gateway.config.guard_models import (
    GUARD_TYPES,
    BlockingTable,
    GuardrailsSettings,
    GuardrailsTable,
    ProfileTable,
)
from gateway.config.schema import BlockingConfig, GuardProviderConfig, GuardrailProfile
from gateway.config.validation import read_table

__all__ = ["SECTION_KEYS", "blocking", "guardrails", "profile", "stream_window_chars"]

SECTION_KEYS = frozenset({"blocking", "guardrails"})
#: The environment variable that sets the stream window when the config does not.
WINDOW_ENV = "STREAM_GUARDRAIL_WINDOW_CHAR_LIMIT"


def blocking(c: Checker, data: Any) -> BlockingConfig:
    table = read_table(c, BlockingTable, data, "gateway.blocking")
    if table is None:
        return BlockingConfig()
    # The rules as written (the keys given): BlockingRules parses them again, with Redis's.
    return BlockingConfig(enabled=table.enabled,
                          rules=tuple(MappingProxyType(r.model_dump(exclude_unset=True)) for r in table.rules))


def stream_window_chars(c: Checker, data: Any) -> int:
    """[gateway.guardrails] stream_window_chars, else the environment's, else 50."""
    table = read_table(c, GuardrailsSettings, data, "gateway.guardrails")
    default = 50
    env = os.environ.get(WINDOW_ENV, "")
    if env:
        if env.isdigit() and int(env) > 0:
            default = int(env)
        else:
            c.fail(WINDOW_ENV, f'expected a whole number > 0, got "{env}"')
    if table is None or table.stream_window_chars is None:
        return default
    return table.stream_window_chars


def guardrails(c: Checker, data: Any) -> dict[str, GuardrailProfile]:
    table = read_table(c, GuardrailsTable, data, "guardrails")
    return {profile_id: profile(c, profile_id, raw, f"guardrails.{key_path(profile_id)}")
            for profile_id, raw in (table.root if table is not None else {}).items()}


def profile(c: Checker, profile_id: str, data: Any, path: str) -> GuardrailProfile:
    """One profile: a ``[guardrails."ID"]`` table, or a ``guardrail_table:{id}`` entry of budapp's. An
    invalid one (its errors in ``c``) comes back with no providers: the loader still knows its id."""
    table = read_table(c, ProfileTable, data, path)
    if table is None:
        return GuardrailProfile(profile_id, frozenset(GUARD_TYPES), ())
    providers = tuple(GuardProviderConfig(name, p.type, p.options()) for name, p in table.providers.items())
    threshold = table.severity_threshold
    return GuardrailProfile(profile_id, frozenset(table.guard_types), providers, table.execution_mode,
                            table.failure_mode, None if threshold is None else float(threshold))
