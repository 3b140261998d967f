"""TensorZero functions made runnable: schema and template files read (relative to the config file
that names them) and compiled once, tools with their parameter schemas, and the choice of variant.

The choice follows TensorZero's reference: ``[functions.F.experimentation]`` ``candidate_variants``
(a list: uniform; a table: weights), else the variants' ``weight`` (all, uniformly, when none has
one); a request's ``variant_name`` pins one. The draw is a hash of the function and the episode id,
so an episode gets the same variant on every instance with nothing stored; after a failure the
next is drawn from the candidates left (without replacement), then ``fallback_variants`` in order.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gateway.config.checker import Checker, key_path
from gateway.config.functions import ChatCompletionVariant, FunctionTable, ToolTable
from gateway.tensorzero.templates import Schema, TemplateError, Templates

__all__ = ["DEFAULT_FUNCTION", "Function", "Tool", "Variant", "build_functions", "build_tools", "default_function"]

#: The built-in function a request naming a model (not a function) runs.
DEFAULT_FUNCTION = "tensorzero::default"
#: The legacy per-role template and schema keys, and the names they stand for.
_ROLES = ("system", "user", "assistant")


class Tool:
    """A tool the model may call: its key (``[tools.KEY]``), the name the model sees, its schema."""

    __slots__ = ("key", "name", "description", "parameters", "strict", "schema")

    def __init__(self, key: str, name: str, description: str, parameters: dict, strict: bool) -> None:
        self.key = key
        self.name = name
        self.description = description
        self.parameters = parameters
        self.strict = strict
        self.schema = Schema(parameters)

    def openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "description": self.description, "parameters": self.parameters}
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}


class Variant:
    """One variant: its table, and its templates compiled (by name: ``system``, ``user``, ... )."""

    __slots__ = ("name", "table", "templates", "weight")

    def __init__(self, name: str, table: Any, templates: Mapping[str, Any]) -> None:
        self.name = name
        self.table = table
        self.templates = templates
        self.weight = getattr(table, "weight", None)

    @property
    def type(self) -> str:
        return self.table.type

    @property
    def served(self) -> bool:
        return isinstance(self.table, ChatCompletionVariant) and self.table.type == "chat_completion"


class Function:
    __slots__ = ("name", "type", "description", "schemas", "tools", "tool_choice", "parallel_tool_calls",
                 "output_schema", "variants", "candidates", "fallbacks")

    def __init__(self, name: str, type_: str, variants: Mapping[str, Variant], *, description: str | None = None,
                 schemas: Mapping[str, Schema] | None = None, tools: tuple[Tool, ...] = (),
                 tool_choice: Any = "auto", parallel_tool_calls: bool | None = None,
                 output_schema: Schema | None = None, candidates: Mapping[str, float] | None = None,
                 fallbacks: tuple[str, ...] = ()) -> None:
        self.name = name
        self.type = type_
        self.description = description
        self.schemas = schemas or {}
        self.tools = tools
        self.tool_choice = tool_choice
        self.parallel_tool_calls = parallel_tool_calls
        self.output_schema = output_schema
        self.variants = variants
        if candidates is None:
            weighted = {n: v.weight for n, v in variants.items() if v.weight is not None}
            candidates = {n: w for n, w in weighted.items() if w > 0} if weighted else {n: 1.0 for n in variants}
        self.candidates = candidates
        self.fallbacks = fallbacks

    def plan(self, episode_id: str, pinned: str | None = None) -> list[Variant]:
        """The variants to try, in order: the pinned one alone, else the candidates as drawn for this
        episode, then the fallbacks."""
        if pinned is not None:
            return [self.variants[pinned]]
        draw = int.from_bytes(hashlib.sha256(f"{self.name}\0{episode_id}".encode()).digest()[:8], "big") / 2**64
        left = dict(self.candidates)
        order = []
        while left:
            total = sum(left.values())
            point, chosen = draw * total, None
            for name, weight in left.items():
                chosen = name
                if point < weight:
                    break
                point -= weight
            order.append(chosen)
            del left[chosen]
        order += [name for name in self.fallbacks if name not in order]
        return [self.variants[name] for name in order]


def default_function(model: str) -> Function:
    """``tensorzero::default``: a chat function of one variant on ``model``, no schemas, no templates."""
    table = ChatCompletionVariant(type="chat_completion", model=model)
    return Function(DEFAULT_FUNCTION, "chat", {model: Variant(model, table, {})})


def _read(c: Checker, path: str, relative: str, base_dir: str) -> str | None:
    full = relative if os.path.isabs(relative) else os.path.join(base_dir, relative)
    try:
        with open(full, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        c.fail(path, f'cannot read "{relative}" ({e.strerror})')
    except UnicodeDecodeError:
        c.fail(path, f'"{relative}" is not UTF-8 text')
    return None


def _schema(c: Checker, path: str, relative: str, base_dir: str) -> Schema | None:
    text = _read(c, path, relative, base_dir)
    if text is None:
        return None
    try:
        return Schema(json.loads(text))
    except ValueError as e:
        c.fail(path, f'"{relative}": {e}')
        return None


def build_tools(c: Checker, tables: Mapping[str, ToolTable], base_dir: str) -> dict[str, Tool]:
    tools = {}
    for key, table in tables.items():
        path = f"tools.{key_path(key)}.parameters"
        schema = _schema(c, path, table.parameters, base_dir)
        if schema is not None:
            tools[key] = Tool(key, table.name or key, table.description, schema.document, table.strict)
    return tools


def build_functions(c: Checker, tables: Mapping[str, FunctionTable], tools: Mapping[str, Tool], base_dir: str,
                    templates: Templates) -> dict[str, Function]:
    functions = {}
    for name, table in tables.items():
        function = _function(c, f"functions.{key_path(name)}", name, table, tools, base_dir, templates)
        if function is not None:
            functions[name] = function
    return functions


def _function(c: Checker, path: str, name: str, table: FunctionTable, tools: Mapping[str, Tool], base_dir: str,
              templates: Templates) -> Function | None:
    before = len(c.errors)
    schemas: dict[str, Schema] = {}
    for role in _ROLES:
        relative = getattr(table, f"{role}_schema")
        if relative is not None:
            schemas[role] = _schema(c, f"{path}.{role}_schema", relative, base_dir)
    for schema_name, ref in table.schemas.items():
        schemas[schema_name] = _schema(c, f"{path}.schemas.{key_path(schema_name)}.path", ref.path, base_dir)
    output = None
    if table.output_schema is not None:
        if table.type != "json":
            c.fail(f"{path}.output_schema", 'only a function of type = "json" has an output schema')
        output = _schema(c, f"{path}.output_schema", table.output_schema, base_dir)
    for i, tool in enumerate(table.tools):
        if tool not in tools:
            c.fail(f"{path}.tools[{i}]", f'tool "{tool}" is not defined under tools')
    choice = table.tool_choice
    if not isinstance(choice, str) and choice.specific not in table.tools:
        c.fail(f"{path}.tool_choice.specific", f'tool "{choice.specific}" is not one of the function\'s tools')
    variants = {}
    for variant_name, variant_table in table.variants.items():
        vpath = f"{path}.variants.{key_path(variant_name)}"
        compiled = {}
        if isinstance(variant_table, ChatCompletionVariant):
            if variant_table.json_mode is not None and table.type == "chat":
                c.fail(f"{vpath}.json_mode", 'only the variants of a type = "json" function take json_mode')
            sources = {role: getattr(variant_table, f"{role}_template") for role in _ROLES}
            sources.update((n, ref.path) for n, ref in variant_table.templates.items())
            for template_name, relative in sources.items():
                if relative is None:
                    continue
                key = f"{template_name}_template" if template_name in _ROLES and \
                    getattr(variant_table, f"{template_name}_template") == relative else \
                    f"templates.{key_path(template_name)}.path"
                text = _read(c, f"{vpath}.{key}", relative, base_dir)
                if text is None:
                    continue
                try:
                    compiled[template_name] = templates.compile(text, relative)
                except TemplateError as e:
                    c.fail(f"{vpath}.{key}", str(e))
            for schema_name in schemas:
                if schema_name not in compiled:
                    c.fail(vpath, f'the function has a schema "{schema_name}" but this variant has no template '
                                  f'of that name')
        variants[variant_name] = Variant(variant_name, variant_table, MappingProxyType(compiled))
    candidates, fallbacks = None, ()
    if table.experimentation is not None:
        listed = table.experimentation.candidate_variants
        if listed is not None:
            candidates = {n: 1.0 for n in listed} if isinstance(listed, list) else {n: w for n, w in listed.items() if w > 0}
        fallbacks = tuple(table.experimentation.fallback_variants)
        for key, names in (("candidate_variants", list(candidates or ())), ("fallback_variants", fallbacks)):
            for variant_name in names:
                if variant_name not in variants:
                    c.fail(f"{path}.experimentation.{key}", f'variant "{variant_name}" is not defined under variants')
    if not variants:
        c.fail(f"{path}.variants", "a function needs at least one variant")
    if len(c.errors) > before:
        return None
    return Function(name, table.type, MappingProxyType(variants), description=table.description,
                    schemas=MappingProxyType(schemas), tools=tuple(tools[t] for t in table.tools),
                    tool_choice=choice if isinstance(choice, str) else {"specific": choice.specific},
                    parallel_tool_calls=table.parallel_tool_calls, output_schema=output,
                    candidates=candidates, fallbacks=fallbacks)
