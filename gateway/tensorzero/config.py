"""The TensorZero tables of a config: ``[functions]``, ``[tools]``, ``[metrics]`` read and built, and
the tables the gateway accepts without implementing them (``[embedding_models]``, ``[provider_types]``,
``[object_storage]``, ``[postgres]``, ``[clickhouse]``, ``[evaluations]``, ...) checked for TensorZero's
own keys, so a TensorZero config loads unchanged; what is accepted but not acted on is listed, by
key path, for the one warning the gateway logs at start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, NonNegativeInt, PositiveInt

from gateway.config.checker import Checker, key_path
from gateway.config.functions import (
    AdaptiveExperimentation,
    ChatCompletionVariant,
    FunctionTable,
    MetricTable,
    ToolTable,
)
from gateway.config.validation import read_table
from gateway.tensorzero.functions import Function, build_functions, build_tools
from gateway.tensorzero.templates import Templates

__all__ = ["BUILTIN_METRICS", "TensorZeroConfig", "read_tensorzero"]

#: The feedback every config has, without a ``[metrics]`` table.
BUILTIN_METRICS = ("comment", "demonstration")
#: Chat-completion variant keys the gateway takes but does not act on.
_VARIANT_UNUSED = ("input_wrappers", "thinking_budget_tokens")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """A table whose keys are a provider's or an optimizer's own: taken as they are."""

    model_config = ConfigDict(extra="allow", frozen=True)


class _EmbeddingProvider(_Open):
    type: str


class _EmbeddingModel(_Table):
    routing: list[str]
    providers: dict[str, _EmbeddingProvider]
    timeout_ms: PositiveInt | None = None


class _Defaults(_Table):
    api_key_location: str | dict[str, str] | None = None
    credential_location: str | dict[str, str] | None = None


class _ProviderType(_Table):
    defaults: _Defaults | None = None
    batch: dict[str, Any] | None = None
    sft: dict[str, Any] | None = None


class _ObjectStorage(_Table):
    type: Literal["s3_compatible", "filesystem", "disabled"]
    endpoint: str | None = None
    bucket_name: str | None = None
    region: str | None = None
    allow_http: bool | None = None
    path: str | None = None


class _Postgres(_Table):
    connection_pool_size: PositiveInt | None = None
    enabled: bool | None = None
    inference_metadata_retention_days: NonNegativeInt | None = None
    inference_data_retention_days: NonNegativeInt | None = None
    inference_retention_days: NonNegativeInt | None = None


class _ClickHouse(_Table):
    disable_automatic_migrations: bool = False


class _Evaluation(_Table):
    type: Literal["inference", "static"]
    function_name: str
    description: str | None = None
    evaluators: dict[str, dict[str, Any]] = {}


class _Autopilot(_Table):
    tool_whitelist: list[str] = []


_OTHER: Mapping[str, Any] = {
    "embedding_models": dict[str, _EmbeddingModel],
    "provider_types": dict[str, _ProviderType],
    "object_storage": _ObjectStorage,
    "postgres": _Postgres,
    "clickhouse": _ClickHouse,
    "evaluations": dict[str, _Evaluation],
    "optimizers": dict[str, _Open],
    "autopilot": _Autopilot,
}


class TensorZeroConfig:
    """Functions (built), metrics, the template environment, and what was accepted unused."""

    def __init__(self, functions: Mapping[str, Function], metrics: Mapping[str, MetricTable], templates: Templates,
                 unimplemented: list[str]) -> None:
        self.functions = functions
        self.metrics = metrics
        self.templates = templates
        self.unimplemented = unimplemented


def _tables(c: Checker, model: Any, data: Any, path: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        c.fail(path, "expected a table")
        return {}
    out = {}
    for name, table in data.items():
        if name.startswith("tensorzero::"):
            c.fail(f"{path}.{key_path(name)}", 'names starting with "tensorzero::" are reserved')
            continue
        read = read_table(c, model, table, f"{path}.{key_path(name)}")
        if read is not None:
            out[name] = read
    return out


def read_tensorzero(c: Checker, top: Mapping[str, Any], source: str, template_base: str | None) -> TensorZeroConfig:
    """The TensorZero tables of ``top`` (the parsed file ``source``); errors go to ``c``."""
    base_dir = os.path.dirname(os.path.abspath(source)) if source and not source.startswith("<") else os.getcwd()
    if template_base is not None and not os.path.isabs(template_base):
        template_base = os.path.join(base_dir, template_base)
    if template_base is not None and not os.path.isdir(template_base):
        c.fail("gateway.template_filesystem_access.base_path", f'"{template_base}" is not a directory')
        template_base = None
    templates = Templates(template_base)
    unimplemented: list[str] = []
    tool_tables = _tables(c, ToolTable, top.get("tools", {}), "tools")
    metrics = _tables(c, MetricTable, top.get("metrics", {}), "metrics")
    for name in BUILTIN_METRICS:
        if name in metrics:
            c.fail(f"metrics.{name}", f'"{name}" is a built-in feedback, not a metric to define')
    function_tables = _tables(c, FunctionTable, top.get("functions", {}), "functions")
    for name, table in function_tables.items():
        unimplemented += _unused_keys(f"functions.{key_path(name)}", table, top["functions"][name])
    tools = build_tools(c, tool_tables, base_dir)
    functions = build_functions(c, function_tables, tools, base_dir, templates)
    for section, model in _OTHER.items():
        if section not in top:
            continue
        data = top[section]
        if isinstance(model, type) and issubclass(model, BaseModel):
            read_table(c, model, data, section)
        else:
            _tables(c, model.__args__[1], data, section)
        if section == "clickhouse" and isinstance(data, dict) and "disable_automatic_migrations" in data:
            unimplemented.append("clickhouse.disable_automatic_migrations")
        elif section != "clickhouse":
            unimplemented.append(section)
    return TensorZeroConfig(functions, metrics, templates, unimplemented)


def _unused_keys(path: str, table: FunctionTable, raw: Mapping[str, Any]) -> list[str]:
    """The keys of one function that parse but do nothing here."""
    out = []
    if table.evaluators:
        out.append(f"{path}.evaluators")
    if isinstance(table.experimentation, AdaptiveExperimentation):
        out.append(f"{path}.experimentation (adaptive: sampled as static over its candidates)")
    for name, variant in table.variants.items():
        vpath = f"{path}.variants.{key_path(name)}"
        if not isinstance(variant, ChatCompletionVariant) or variant.type != "chat_completion":
            out.append(f"{vpath} (type {variant.type})")
            continue
        raw_variant = raw.get("variants", {}).get(name, {})
        out += [f"{vpath}.{key}" for key in _VARIANT_UNUSED if key in raw_variant]
    return out
