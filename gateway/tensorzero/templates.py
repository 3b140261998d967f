"""Prompt templates (TensorZero writes them in MiniJinja, which Jinja2 reads) and the JSON Schemas of
their arguments: compiled once at load, rendered and checked per request.

Templates render in Jinja2's sandbox (no attribute access to Python internals). ``{% include %}``
and ``{% import %}`` read files only under ``[gateway.template_filesystem_access] base_path``; with
none set, a template can reach no file at all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jinja2
import jsonschema
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = ["ArgumentsError", "Schema", "TemplateError", "Templates"]


class TemplateError(ValueError):
    """A template does not compile (at load) or fails to render (per request)."""


class ArgumentsError(ValueError):
    """Template arguments (or a JSON output) that do not match their schema; the message says where."""


class Schema:
    """A JSON Schema, checked as a schema at load; ``check(value)`` raises ``ArgumentsError``."""

    __slots__ = ("document", "_validator")

    def __init__(self, document: Any) -> None:
        if not isinstance(document, dict):
            raise ValueError("a JSON Schema must be an object")
        if not isinstance(document.get("$schema", ""), str):
            raise ValueError("not a valid JSON Schema: $schema must be a string")
        cls = jsonschema.validators.validator_for(document)
        try:
            cls.check_schema(document)
        except jsonschema.SchemaError as e:
            raise ValueError(f"not a valid JSON Schema: {e.message}") from None
        self.document = document
        self._validator = cls(document)

    def check(self, value: Any) -> None:
        try:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        except Exception as e:  # noqa: BLE001 - a schema that checks but cannot run ($ref to nowhere)
            raise ArgumentsError(f"the schema cannot be applied ({type(e).__name__})") from None
        if error is not None:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise ArgumentsError(f"{where.lstrip('.') or 'the value'}: {error.message}")

    def valid(self, value: Any) -> bool:
        try:
            return self._validator.is_valid(value)
        except Exception:  # noqa: BLE001 - a schema that cannot run validates nothing
            return False


class Templates:
    """One environment for every template of a config (so the file access rule holds for all)."""

    def __init__(self, base_path: str | None = None) -> None:
        loader = _Within(base_path) if base_path else jinja2.DictLoader({})
        # NOTE: MiniJinja renders an undefined variable as nothing, as Jinja2's default does.
        self._env = ImmutableSandboxedEnvironment(loader=loader, autoescape=False, keep_trailing_newline=False)

    def compile(self, source: str, name: str) -> jinja2.Template:
        try:
            return self._env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"{name}: line {e.lineno}: {e.message}") from None

    @staticmethod
    def render(template: jinja2.Template, arguments: Mapping[str, Any]) -> str:
        try:
            return template.render(arguments)
        except jinja2.TemplateError as e:
            raise TemplateError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a template's own failure ("a" + 1) is the request's
            raise TemplateError(f"{type(e).__name__}: {e}") from None


class _Within(jinja2.FileSystemLoader):
    """Files under ``base_path`` only, symbolic links resolved (a link may not lead out of it)."""

    def __init__(self, base_path: str) -> None:
        super().__init__(base_path)
        self._root = os.path.realpath(base_path)

    def get_source(self, environment: jinja2.Environment, template: str):
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        if os.path.commonpath([real, self._root]) != self._root:
            raise jinja2.TemplateNotFound(template)
        return source, filename, uptodate
