"""A ``POST /inference`` request read: which function, which variants in which order, the episode;
and the record its ``ChatInference`` / ``JsonInference`` row is made of.

``plan(body, functions)`` runs in the resolve stage (the first variant's model is what limits,
guardrails and analytics see); the resource then tries the variants in order.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.errors import GatewayError, InvalidRequestError
from gateway.outcome import new_inference_id
from gateway.tensorzero.functions import Function, Variant, default_function
from gateway.tensorzero.templates import Schema

__all__ = ["NotFoundError", "Plan", "Record", "plan", "uuid7"]

log = logging.getLogger(__name__)

#: The request fields of ``POST /inference`` (the reference's, and our older name of one); others
#: are ignored.
_FIELDS = frozenset({
    "function_name", "model_name", "input", "stream", "episode_id", "variant_name", "params", "tags", "dryrun",
    "output_schema", "allowed_tools", "additional_tools", "tool_choice", "parallel_tool_calls", "extra_body",
    "extra_headers", "include_original_response", "include_raw_response", "include_raw_usage", "cache_options",
    "credentials", "namespace", "provider_tools", "internal", "include_aggregated_response",
})
_CACHE_MODES = ("write_only", "read_only", "on", "off")


class NotFoundError(GatewayError):
    """A function or variant the config does not have."""

    status, type, code = 404, "not_found_error", "not_found"


class Plan:
    """What one ``/inference`` request runs: the function, the variants in the order to try, the episode."""

    __slots__ = ("function", "variants", "episode_id", "output_schema", "tags", "dryrun")

    def __init__(self, function: Function, variants: list[Variant], episode_id: str,
                 output_schema: Schema | None, tags: dict[str, str], dryrun: bool) -> None:
        self.function = function
        self.variants = variants
        self.episode_id = episode_id
        self.output_schema = output_schema
        self.tags = tags
        self.dryrun = dryrun


def _bad(message: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def uuid7(value: Any, field: str) -> str:
    """``value`` as a UUIDv7 (the only ids this gateway makes), or the 400 naming ``field``."""
    try:
        parsed = uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != 7:
        raise _bad(f"'{field}' must be a UUIDv7", field)
    return str(parsed)


def plan(body: Mapping[str, Any], functions: Mapping[str, Function]) -> Plan:
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        # NOTE: as TensorZero does: its own client sends fields of newer gateways (internal ones too).
        log.debug("/inference: fields ignored: %s", ", ".join(unknown))
    function_name, model_name = body.get("function_name"), body.get("model_name")
    if (function_name is None) == (model_name is None):
        raise _bad("exactly one of 'function_name' and 'model_name' is required")
    if function_name is not None:
        if not isinstance(function_name, str):
            raise _bad("'function_name' must be a string", "function_name")
        function = functions.get(function_name)
        if function is None:
            raise NotFoundError(f"Unknown function: {function_name}")
    else:
        if not isinstance(model_name, str) or not model_name:
            raise _bad("'model_name' must be a non-empty string", "model_name")
        function = default_function(model_name)
    if "input" not in body or not isinstance(body["input"], dict):
        raise _bad("'input' is required (an object with 'system' and 'messages')", "input")
    episode_id = new_inference_id() if body.get("episode_id") is None else uuid7(body["episode_id"], "episode_id")
    pinned = body.get("variant_name")
    if pinned is not None and (not isinstance(pinned, str) or pinned not in function.variants):
        raise NotFoundError(f"Unknown variant: {pinned}")
    variants = function.plan(episode_id, pinned)
    if not variants:
        raise _bad(f"function {function.name!r} has no variant to sample (all weights are 0)")
    schema = function.output_schema
    if body.get("output_schema") is not None:
        if function.type != "json":
            raise _bad("'output_schema' is only for json functions", "output_schema")
        try:
            schema = Schema(body["output_schema"])
        except ValueError as e:
            raise _bad(f"output_schema: {e}", "output_schema") from None
    tags = body.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise _bad("'tags' must be an object of strings", "tags")
    dryrun = body.get("dryrun") or False
    if not isinstance(dryrun, bool):
        raise _bad("'dryrun' must be a boolean", "dryrun")
    cache = body.get("cache_options")
    if cache is not None and (not isinstance(cache, dict) or cache.get("enabled", "write_only") not in _CACHE_MODES):
        raise _bad(f"'cache_options.enabled' must be one of {', '.join(_CACHE_MODES)}", "cache_options")
    if body.get("credentials"):
        # NOTE: refused rather than ignored: the caller would believe its own key was used (and it
        # would land in the analytics rows with the body).
        raise _bad("'credentials' is not supported: providers use the gateway's own keys", "credentials")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _bad("'stream' must be a boolean", "stream")
    return Plan(function, variants, episode_id, schema, tags, dryrun)


class Record:
    """What the inference's row holds; ``output`` is set when the answer (or the stream) is complete."""

    __slots__ = ("function_name", "function_type", "variant_name", "episode_id", "input", "output",
                 "inference_params", "tool_params", "output_schema", "tags", "extra_body", "ttft_ms")

    def __init__(self, plan_: Plan, variant: Variant, body: Mapping[str, Any], inference_params: dict,
                 tool_params: dict) -> None:
        self.function_name = plan_.function.name
        self.function_type = plan_.function.type
        self.variant_name = variant.name
        self.episode_id = plan_.episode_id
        self.input = body.get("input")
        self.output: Any = None
        self.inference_params = inference_params
        self.tool_params = tool_params
        self.output_schema = plan_.output_schema.document if plan_.output_schema is not None else None
        self.tags = plan_.tags
        self.extra_body = body.get("extra_body")
        self.ttft_ms: float | None = None
