"""A model's provider tables: the keys every type takes, TensorZero's too, and each type's own.

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

from gateway.config.checker import Checker, key_path
from gateway.config.schema import CostEntry, PointerCost, ProviderConfig, TimeoutsConfig
from providers.credentials import parse_location

__all__ = ["NOT_YET_SUPPORTED", "provider", "timeouts"]

#: TensorZero's provider types the gateway does not serve yet: refused with that reason, not as unknown.
NOT_YET_SUPPORTED = ("aws_bedrock", "aws_sagemaker", "gcp_vertex_anthropic", "gcp_vertex_gemini")
_KEYS = {"type", "model_name", "api_base", "api_key_location", "timeouts", "extra_headers", "extra_body", "cost",
         "endpoint"}
#: TensorZero's keys the gateway takes without acting on them.
_ACCEPTED = frozenset({"batch_cost", "discard_unknown_chunks"})


def provider(c: Checker, path: str, name: str, data: Any, registry: Mapping[str, Any]) -> ProviderConfig:
    d = c.table(data, path, None)
    type_ = c.get(d, "type", path, (str,), None)
    cls = None
    if type_ is None:
        if "type" not in d:
            c.fail(f"{path}.type", f"missing (one of: {', '.join(sorted(registry))})")
    elif type_ in NOT_YET_SUPPORTED and type_ not in registry:
        # NOTE: its other keys are that type's own: only the type is reported.
        c.fail(f"{path}.type", f'provider type "{type_}" is not supported yet (a TensorZero type budgateway '
                               f'does not serve; route this model to another provider)')
        d = {"type": type_, "model_name": ""}
    elif type_ not in registry:
        c.fail(f"{path}.type", f'unknown provider type "{type_}" (one of: {", ".join(sorted(registry))})')
    else:
        cls = registry[type_]
    for key in _ACCEPTED.intersection(d):
        c.unimplemented.append(f"{path}.{key}")
    model_name = c.get(d, "model_name", path, (str,), "")
    if "model_name" not in d and (cls is None or cls.requires_model_name):
        c.fail(f"{path}.model_name", "missing (the model name the provider knows)")
    api_base = _api_base(c, d, path, cls, type_)
    location = _location(c, d, path, cls)
    extra = {k for k in (getattr(cls, "tensorzero_options", frozenset()) if cls is not None else ()) if k in d}
    for key in sorted(extra):
        c.unimplemented.append(f"{path}.{key}")
    options = {k: v for k, v in d.items() if k not in _KEYS and k not in _ACCEPTED and k not in extra}
    if cls is not None:
        for key, reason in cls.check_options(options):
            c.fail(f"{path}.{key_path(key)}", reason)
    body, edits = _extra_body(c, d.get("extra_body"), f"{path}.extra_body")
    return ProviderConfig(
        name=name,
        type=type_ or "",
        model_name=model_name or str(options.get("deployment_id", "")),
        api_base=api_base,
        api_key_location=location,
        timeouts=timeouts(c, d.get("timeouts", {}), f"{path}.timeouts"),
        extra_headers=_extra_headers(c, d, path),
        extra_body=MappingProxyType(body),
        options=MappingProxyType(options),
        body_edits=edits,
        cost=_cost(c, d.get("cost"), f"{path}.cost"),
    )


def _api_base(c: Checker, d: dict, path: str, cls: Any, type_: str | None) -> str | None:
    key = "api_base"
    if "endpoint" in d and cls is not None and "endpoint" in cls.api_base_aliases:
        if "api_base" in d:
            c.fail(f"{path}.endpoint", "set api_base or endpoint, not both")
        key = "endpoint"
    elif "endpoint" in d:
        c.fail(f"{path}.endpoint", "unknown key")
    api_base = c.get(d, key, path, (str,), None)
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
        c.fail(f"{path}.api_base", f'required for provider type "{type_}"')
    return None


def _location(c: Checker, d: dict, path: str, cls: Any) -> str:
    value = d.get("api_key_location")
    if value is None:
        return cls.default_api_key_location if cls is not None else "none"
    if isinstance(value, dict):
        # TensorZero's {default, fallback}: the default is used; the fallback is listed as unused.
        c.table(value, f"{path}.api_key_location", {"default", "fallback"})
        c.unimplemented.append(f"{path}.api_key_location.fallback")
        value = value.get("default")
    if not isinstance(value, str):
        c.fail(f"{path}.api_key_location", "expected a string or a table {default, fallback}")
        return "none"
    try:
        parse_location(value)
    except ValueError as e:
        c.fail(f"{path}.api_key_location", str(e))
    return value


def _extra_body(c: Checker, data: Any, path: str) -> tuple[dict, tuple[Mapping[str, Any], ...]]:
    """Our table of values, or TensorZero's list of edits."""
    if data is None:
        return {}, ()
    if isinstance(data, dict):
        return dict(data), ()
    if not isinstance(data, list):
        c.fail(path, "expected a table of values or an array of {pointer, value | delete}")
        return {}, ()
    edits = []
    for i, edit in enumerate(data):
        where = f"{path}[{i}]"
        e = c.table(edit, where, {"pointer", "value", "delete"})
        if not isinstance(e.get("pointer"), str) or not e["pointer"].startswith("/"):
            c.fail(f"{where}.pointer", "missing (a JSON Pointer such as /a/b)")
        elif ("value" in e) == (e.get("delete") is True):
            c.fail(where, "needs exactly one of value and delete = true")
        else:
            edits.append(MappingProxyType(dict(e)))
    return {}, tuple(edits)


def _extra_headers(c: Checker, d: dict, path: str) -> Mapping[str, str | None]:
    """Our table of values, or TensorZero's list of ``{name, value}`` / ``{name, delete = true}``
    (a deleted header is held as None: the provider sends no such header)."""
    data = d.get("extra_headers")
    if not isinstance(data, list):
        return c.str_map(d, "extra_headers", path)
    out: dict[str, str | None] = {}
    for i, item in enumerate(data):
        where = f"{path}.extra_headers[{i}]"
        e = c.table(item, where, {"name", "value", "delete"})
        if not isinstance(e.get("name"), str):
            c.fail(f"{where}.name", "missing (the header's name)")
        elif e.get("delete") is True:
            out[e["name"]] = None
        elif isinstance(e.get("value"), str):
            out[e["name"]] = e["value"]
        else:
            c.fail(where, "needs a string value or delete = true")
    return MappingProxyType(out)


def _cost(c: Checker, data: Any, path: str) -> PointerCost | None:
    """TensorZero's ``cost``: each entry a pointer into the answer and a rate."""
    if data is None:
        return None
    if not isinstance(data, list):
        c.fail(path, "expected an array of {pointer, cost_per_million | cost_per_unit, required}")
        return None
    entries = []
    for i, item in enumerate(data):
        where = f"{path}[{i}]"
        e = c.table(item, where, {"pointer", "pointer_nonstreaming", "pointer_streaming", "cost_per_million",
                                  "cost_per_unit", "required"})
        plain = e.get("pointer")
        pair = (e.get("pointer_nonstreaming"), e.get("pointer_streaming"))
        if (plain is None) == (pair == (None, None)) or (plain is None and None in pair):
            c.fail(where, "needs pointer, or both pointer_nonstreaming and pointer_streaming")
            continue
        rates = [k for k in ("cost_per_million", "cost_per_unit") if k in e]
        if len(rates) != 1 or not isinstance(e[rates[0]], (int, float)) or isinstance(e[rates[0]], bool):
            c.fail(where, "needs a number as exactly one of cost_per_million and cost_per_unit")
            continue
        rate = float(e[rates[0]]) / (1_000_000 if rates[0] == "cost_per_million" else 1)
        entries.append(CostEntry(plain or pair[0], plain or pair[1], rate, bool(e.get("required", False))))
    return PointerCost(tuple(entries)) if entries else None


def timeouts(c: Checker, data: Any, path: str) -> TimeoutsConfig:
    d = c.table(data, path, {"non_streaming", "streaming"})
    ns = c.table(d.get("non_streaming", {}), f"{path}.non_streaming", {"total_ms"})
    st = c.table(d.get("streaming", {}), f"{path}.streaming", {"ttft_ms", "total_ms"})

    def seconds(table: dict, key: str, p: str) -> float | None:
        ms = c.positive(table, key, p, None)
        return None if ms is None else ms / 1000.0

    return TimeoutsConfig(
        non_streaming_total_s=seconds(ns, "total_ms", f"{path}.non_streaming"),
        streaming_ttft_s=seconds(st, "ttft_ms", f"{path}.streaming"),
        streaming_total_s=seconds(st, "total_ms", f"{path}.streaming"),
    )
