"""A ``POST /feedback`` request read and checked, and the feedback row it makes.

``read(body, metrics)`` checks all that the request alone can tell (fields, metric, level, the value's
type); the resource then finds the target in ClickHouse and, for a demonstration, hands the value to
``demonstration`` with what the inference ran with (its function's type, tools or output schema).
``row`` makes the row of the right feedback table. The rules are TensorZero's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from gateway.config.functions import MetricTable
from gateway.errors import InvalidRequestError
from gateway.observe.tensorzero_tables import FEEDBACK
from gateway.tensorzero.inference import NotFoundError, uuid7
from gateway.tensorzero.templates import ArgumentsError, Schema
from providers.jsonio import dumps

__all__ = ["Feedback", "demonstration", "read", "row"]

#: The request fields of ``POST /feedback``.
_FIELDS = frozenset({"metric_name", "inference_id", "episode_id", "value", "tags", "dryrun", "internal"})


class Feedback:
    """A checked request: ``kind`` is boolean, float, comment or demonstration (the table it goes to);
    ``level`` inference or episode (what ``target_id`` names)."""

    __slots__ = ("metric_name", "kind", "level", "target_id", "value", "tags", "dryrun")

    def __init__(self, metric_name: str, kind: str, level: str, target_id: str, value: Any,
                 tags: dict[str, str], dryrun: bool) -> None:
        self.metric_name = metric_name
        self.kind = kind
        self.level = level
        self.target_id = target_id
        self.value = value
        self.tags = tags
        self.dryrun = dryrun


def _bad(message: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def read(body: Mapping[str, Any], metrics: Mapping[str, MetricTable]) -> Feedback:
    """The request checked; ``InvalidRequestError`` (400) or, for an unknown metric, ``NotFoundError``."""
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r}", unknown[0])
    name = body.get("metric_name")
    if not isinstance(name, str) or not name:
        raise _bad("'metric_name' is required (a string)", "metric_name")
    inference_id, episode_id = body.get("inference_id"), body.get("episode_id")
    if (inference_id is None) == (episode_id is None):
        raise _bad("exactly one of 'inference_id' and 'episode_id' is required")
    metric = metrics.get(name)
    if metric is not None:
        kind, level = metric.type, metric.level
    elif name == "comment":
        # A comment goes to whichever of the two it names.
        kind, level = "comment", "inference" if inference_id is not None else "episode"
    elif name == "demonstration":
        kind, level = "demonstration", "inference"
    else:
        # As for an unknown function or variant on /inference (and as TensorZero answers): a 404.
        raise NotFoundError(f"Unknown metric: {name}")
    field = f"{level}_id"
    if body.get(field) is None:
        other = "episode_id" if level == "inference" else "inference_id"
        what = "a demonstration is for an inference" if kind == "demonstration" else \
            f"metric {name!r} is an {level}-level metric"
        raise _bad(f"{what}: it takes '{field}', not '{other}'", field)
    target_id = uuid7(body[field], field)
    if "value" not in body:
        raise _bad("'value' is required", "value")
    value = _value(kind, name, body["value"])
    tags = body.get("tags")
    if tags is None:
        tags = {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise _bad("'tags' must be an object of strings", "tags")
    dryrun = body.get("dryrun")
    if dryrun is not None and not isinstance(dryrun, bool):
        raise _bad("'dryrun' must be a boolean", "dryrun")
    # ``internal`` (TensorZero's own callers' flag) is taken and has no effect here.
    internal = body.get("internal")
    if internal is not None and not isinstance(internal, bool):
        raise _bad("'internal' must be a boolean", "internal")
    return Feedback(name, kind, level, target_id, value, tags, dryrun is True)


def _value(kind: str, name: str, value: Any) -> Any:
    """The value as stored, for the kinds that need no inference to check (a demonstration waits)."""
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _bad(f"the value of metric {name!r} must be a boolean", "value")
        return value
    if kind == "float":
        # NOTE: a JSON true is a Python int; it is not a number here.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(f"the value of metric {name!r} must be a number", "value")
        number = float(value)
        if not math.isfinite(number):
            raise _bad(f"the value of metric {name!r} must be a finite number", "value")
        return number
    if kind == "comment":
        if not isinstance(value, str):
            raise _bad("the value of a comment must be a string", "value")
        return value
    if value is None:
        raise _bad("the value of a demonstration cannot be null", "value")
    return value


def demonstration(value: Any, function_type: str, tools: Mapping[str, Schema], output_schema: Schema | None) -> str:
    """The ``DemonstrationFeedback.value`` of ``value``, checked as an output of the inference.

    A chat function's demonstration is a string or a list of ``text`` / ``tool_call`` blocks, each
    tool call of one of ``tools`` (name -> parameter schema: those the inference offered) with
    arguments its schema takes; it is stored as the content blocks an answer has. A json function's
    is any value its output schema takes, stored as ``{"raw": ..., "parsed": ...}`` as its outputs are.
    """
    if function_type == "json":
        if output_schema is not None:
            try:
                output_schema.check(value)
            except ArgumentsError as e:
                raise _bad(f"the demonstration does not match the function's output schema: {e}", "value") from None
        return dumps({"raw": dumps(value).decode(), "parsed": value}).decode()
    if isinstance(value, str):
        return dumps([{"type": "text", "text": value}]).decode()
    if not isinstance(value, list):
        raise _bad("a demonstration for a chat function must be a string or a list of content blocks", "value")
    return dumps([_block(block, i, tools) for i, block in enumerate(value)]).decode()


def _block(block: Any, i: int, tools: Mapping[str, Schema]) -> dict:
    where = f"demonstration block {i}"
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text":
        if not isinstance(block.get("text"), str):
            raise _bad(f"{where}: a text block needs 'text' (a string)", "value")
        return {"type": "text", "text": block["text"]}
    if kind != "tool_call":
        raise _bad(f"{where}: expected a content block of type 'text' or 'tool_call'", "value")
    name, call_id = block.get("name"), block.get("id")
    if not isinstance(name, str) or not isinstance(call_id, str):
        # NOTE: an id too, as TensorZero asks: it pairs the call with its tool result in a later turn.
        raise _bad(f"{where}: a tool_call block needs 'id' and 'name' (strings) and 'arguments'", "value")
    schema = tools.get(name)
    if schema is None:
        raise _bad(f"{where}: tool {name!r} is not one of the tools the inference offered", "value")
    if "arguments" not in block:
        raise _bad(f"{where}: a tool_call block needs 'arguments'", "value")
    arguments = block["arguments"]
    try:
        schema.check(arguments)
    except ArgumentsError as e:
        raise _bad(f"{where}: the arguments of tool {name!r} do not match its parameters: {e}", "value") from None
    # The shape of a tool call in an answer (``answers._tool_call``), so both read alike.
    return {"type": "tool_call", "id": call_id, "raw_name": name, "raw_arguments": dumps(arguments).decode(),
            "name": name, "arguments": arguments}


def row(feedback: Feedback, feedback_id: str, timestamp: float, value: Any = None) -> tuple[str, dict]:
    """The table and the row of ``feedback``; ``value`` is a demonstration's (from ``demonstration``)."""
    common = {"id": feedback_id, "timestamp": timestamp, "tags": feedback.tags}
    kind = feedback.kind
    if kind == "demonstration":
        fields = {"inference_id": feedback.target_id, "value": value}
    elif kind == "comment":
        fields = {"target_id": feedback.target_id, "target_type": feedback.level, "value": feedback.value}
    else:
        fields = {"target_id": feedback.target_id, "metric_name": feedback.metric_name, "value": feedback.value}
    return FEEDBACK[kind].name, {**common, **fields}
