"""A model's provider tables (a pydantic model of the keys every type takes; a type's own keys are
checked by its class): TensorZero's keys too.

TensorZero's forms are read beside ours: ``extra_body`` / ``extra_headers`` as a list of edits
(``{pointer, value | delete}``, ``{name, value | delete}``) or our table of values; ``cost`` as a
list of ``{pointer, cost_per_million | cost_per_unit, required}`` entries, which prices an answer when
its model has no ``pricing``; azure's ``endpoint`` as another name for ``api_base``; an
``api_key_location`` table ``{default, fallback}``. Keys TensorZero defines that the gateway does
not act on are listed for the start-up warning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import ConfigDict, field_validator, model_validator

from gateway.config.checker import Checker, key_path
from gateway.config.functions import BodyEdit, HeaderEdit, Timeouts, header_problem
from gateway.config.schema import CostEntry, PointerCost, ProviderConfig, TimeoutsConfig
from gateway.config.validation import StrictTable, read_table
from providers.credentials import parse_location

__all__ = ["NOT_YET_SUPPORTED", "ProviderTable", "provider", "timeouts"]

#: TensorZero's provider types the gateway does not serve yet: refused with that reason, not as unknown.
NOT_YET_SUPPORTED = ("aws_bedrock", "aws_sagemaker", "gcp_vertex_anthropic", "gcp_vertex_gemini")
#: TensorZero's keys the gateway takes without acting on them.
_ACCEPTED = frozenset({"discard_unknown_chunks"})


class _Fallback(StrictTable):
    default: str
    fallback: str


class _Cost(StrictTable):
    pointer: str | None = None
    pointer_nonstreaming: str | None = None
    pointer_streaming: str | None = None
    cost_per_million: float | None = None
    cost_per_unit: float | None = None
    required: bool = False

    @model_validator(mode="after")
    def _forms(self) -> _Cost:
        pair = (self.pointer_nonstreaming, self.pointer_streaming)
        if (self.pointer is None) == (pair == (None, None)) or (self.pointer is None and None in pair):
            raise ValueError("needs pointer, or both pointer_nonstreaming and pointer_streaming")
        if (self.cost_per_million is None) == (self.cost_per_unit is None):
            raise ValueError("needs a number as exactly one of cost_per_million and cost_per_unit")
        return self


class _BatchCost(_Cost):
    """A ``batch_cost`` entry: one ``pointer`` (a batch answer is never a stream)."""

    @model_validator(mode="after")
    def _one_pointer(self) -> _BatchCost:
        if self.pointer is None:
            raise ValueError("needs pointer (batch_cost has no streaming form)")
        return self


class ProviderTable(StrictTable):
    """The keys every type takes; the others are the type's own, which its class checks."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    type: str | None = None
    model_name: str | None = None
    api_base: str | None = None
    endpoint: str | None = None
    api_key_location: str | _Fallback | None = None
    timeouts: Timeouts = Timeouts()
    extra_headers: dict[str, str] | list[HeaderEdit] | None = None

    @field_validator("extra_headers")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        for name, header in (value.items() if isinstance(value, dict) else ()):
            problem = header_problem(name, header)
            if problem:
                raise ValueError(problem)
        return value
    extra_body: dict[str, Any] | list[BodyEdit] | None = None
    cost: list[_Cost] | None = None
    batch_cost: list[_BatchCost] | None = None
    discard_unknown_chunks: Any = None


def provider(c: Checker, path: str, name: str, data: Any, registry: Mapping[str, Any]) -> ProviderConfig:
    if isinstance(data, dict) and data.get("type") in NOT_YET_SUPPORTED and data["type"] not in registry:
        # NOTE: its other keys are that type's own: only the type is reported.
        c.fail(f"{path}.type", f'provider type "{data["type"]}" is not supported yet (a TensorZero type '
                               f'budgateway does not serve; route this model to another provider)')
        data = {"type": data["type"], "model_name": ""}
    t = read_table(c, ProviderTable, data, path) or ProviderTable(type=None, model_name="")
    cls = None
    if t.type is None:
        if not isinstance(data, dict) or "type" not in data:
            c.fail(f"{path}.type", f"missing (one of: {', '.join(sorted(registry))})")
    elif t.type not in registry:
        if t.type not in NOT_YET_SUPPORTED:
            c.fail(f"{path}.type", f'unknown provider type "{t.type}" (one of: {", ".join(sorted(registry))})')
    else:
        cls = registry[t.type]
    for key in _ACCEPTED.intersection(t.model_fields_set):
        c.unimplemented.append(f"{path}.{key}")
    if t.model_name is None and (cls is None or cls.requires_model_name) and isinstance(data, dict):
        c.fail(f"{path}.model_name", "missing (the model name the provider knows)")
    api_base = _api_base(c, t, path, cls)
    location = _location(c, t, path, cls)
    extra = dict(t.model_extra or {})
    for key in sorted(k for k in extra if cls is not None and k in cls.tensorzero_options):
        c.unimplemented.append(f"{path}.{key}")
        del extra[key]
    if cls is not None:
        for key, reason in cls.check_options(extra):
            c.fail(f"{path}.{key_path(key)}", reason)
    return ProviderConfig(
        name=name,
        type=t.type or "",
        model_name=t.model_name or str(extra.get("deployment_id", "")),
        api_base=api_base,
        api_key_location=location,
        timeouts=timeouts(t.timeouts),
        extra_headers=_extra_headers(t.extra_headers),
        extra_body=MappingProxyType(dict(t.extra_body) if isinstance(t.extra_body, dict) else {}),
        options=MappingProxyType(extra),
        body_edits=tuple(MappingProxyType(e.model_dump(include={"pointer", "value", "delete"}, exclude_unset=True))
                         for e in t.extra_body) if isinstance(t.extra_body, list) else (),
        cost=_cost(t.cost),
        batch_cost=_cost(t.batch_cost),
    )


def _api_base(c: Checker, t: ProviderTable, path: str, cls: Any) -> str | None:
    key = "api_base"
    if t.endpoint is not None and cls is not None and "endpoint" in cls.api_base_aliases:
        if t.api_base is not None:
            c.fail(f"{path}.endpoint", "set api_base or endpoint, not both")
        key = "endpoint"
    elif t.endpoint is not None:
        c.fail(f"{path}.endpoint", "unknown key")
    api_base = getattr(t, key)
    if api_base is not None and api_base.startswith("env::"):
        variable = api_base[5:]
        api_base = os.environ.get(variable)
        if not api_base:
            c.fail(f"{path}.{key}", f"environment variable {variable} is not set")
            return None
    if api_base is not None:
        if not api_base.startswith(("http://", "https://")):
            c.fail(f"{path}.{key}", f'"{api_base}" is not an http:// or https:// URL')
        return api_base.rstrip("/")
    if cls is not None and cls.requires_api_base:
        c.fail(f"{path}.api_base", f'required for provider type "{t.type}"')
    return None


def _location(c: Checker, t: ProviderTable, path: str, cls: Any) -> str:
    value = t.api_key_location
    if value is None:
        return cls.default_api_key_location if cls is not None else "none"
    if isinstance(value, _Fallback):
        # TensorZero's {default, fallback}: the default is used; the fallback is listed as unused.
        c.unimplemented.append(f"{path}.api_key_location.fallback")
        value = value.default
    try:
        parse_location(value)
    except ValueError as e:
        c.fail(f"{path}.api_key_location", str(e))
    return value


def _extra_headers(value: Any) -> Mapping[str, str | None]:
    """Our table of values, or TensorZero's list (a deleted header is held as None: not sent)."""
    if value is None:
        return MappingProxyType({})
    if isinstance(value, dict):
        return MappingProxyType(dict(value))
    return MappingProxyType({e.name: None if e.delete else e.value for e in value})


def _cost(entries: list[_Cost] | None) -> PointerCost | None:
    """TensorZero's ``cost``: each entry a pointer into the answer and a rate per unit."""
    if not entries:
        return None
    return PointerCost(tuple(
        CostEntry(e.pointer or e.pointer_nonstreaming, e.pointer or e.pointer_streaming,
                  e.cost_per_million / 1_000_000 if e.cost_per_million is not None else e.cost_per_unit, e.required)
        for e in entries))


def timeouts(t: Timeouts) -> TimeoutsConfig:
    def seconds(ms: float | None) -> float | None:
        return None if ms is None else ms / 1000.0

    return TimeoutsConfig(
        non_streaming_total_s=seconds(t.non_streaming.total_ms),
        streaming_ttft_s=seconds(t.streaming.ttft_ms),
        streaming_total_s=seconds(t.streaming.total_ms),
    )
