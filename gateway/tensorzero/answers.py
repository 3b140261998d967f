"""OpenAI chat answers and chunks made into ``POST /inference`` answers and stream chunks.

Chat functions answer ``content`` blocks (``text``, ``tool_call`` with ``raw_name``/``raw_arguments``
as the model wrote them and ``name``/``arguments`` validated against the tool, ``thought``); json
functions answer ``output`` ``{raw, parsed}``, ``parsed`` null unless the text is JSON that matches
the output schema. Streams send the same deltas in TensorZero's chunk format, then ``[DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.outcome import Usage
from gateway.sse import DONE, frame
from gateway.sse import error_event as sse_error_event
from gateway.tensorzero.native import JSON_TOOL, ToolSet
from gateway.tensorzero.templates import Schema
from providers.jsonio import dumps

__all__ = ["Answer", "ChunksToTensorZero", "answer", "error_event", "finish_reason", "usage"]

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_call", "function_call": "tool_call",
           "content_filter": "content_filter"}


def finish_reason(reason: Any) -> str | None:
    """TensorZero's finish reason for OpenAI's (``unknown`` for one it has no word for)."""
    if reason is None:
        return None
    return _FINISH.get(reason, "unknown")


def usage(openai_usage: Any, cost: float | None = None) -> dict[str, Any]:
    found = Usage.parse(openai_usage)
    out: dict[str, Any] = {"input_tokens": found.input_tokens if found else None,
                           "output_tokens": found.output_tokens if found else None}
    if found is not None and found.cached_input_tokens:
        out["provider_cache_read_input_tokens"] = found.cached_input_tokens
    out["cost"] = cost
    return out


def _parsed(raw: str, schema: Schema | None) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if schema is not None and not schema.valid(value):
        return None
    return value


def _tool_call(call: Mapping[str, Any], tools: ToolSet) -> dict[str, Any]:
    function = call.get("function") or {}
    raw_name, raw_arguments = function.get("name") or "", function.get("arguments") or ""
    tool = tools.tools.get(raw_name)
    arguments = _parsed(raw_arguments, tool.schema) if tool is not None else None
    return {"type": "tool_call", "id": call.get("id") or "", "raw_name": raw_name, "raw_arguments": raw_arguments,
            "name": raw_name if tool is not None else None, "arguments": arguments}


class Answer:
    """What the inference answered, for the response and for its ClickHouse row."""

    __slots__ = ("body", "output", "finish_reason")

    def __init__(self, body: dict[str, Any], output: Any, finish: str | None) -> None:
        self.body = body
        self.output = output
        self.finish_reason = finish


def answer(chat: Mapping[str, Any], function_type: str, tools: ToolSet, output_schema: Schema | None,
           head: Mapping[str, Any], cost: float | None) -> Answer:
    """The ``/inference`` answer for an OpenAI chat answer; ``head`` holds its ids and variant."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    finish = finish_reason(choice.get("finish_reason"))
    body: dict[str, Any] = dict(head)
    if function_type == "json":
        raw = message.get("content")
        for call in message.get("tool_calls") or ():
            if (call.get("function") or {}).get("name") == JSON_TOOL:
                raw = call["function"].get("arguments")
        raw = raw if isinstance(raw, str) else ""
        output: Any = {"raw": raw, "parsed": _parsed(raw, output_schema)}
        body["output"] = output
        if finish == "tool_call":
            finish = "stop"
    else:
        output = []
        reasoning = message.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            output.append({"type": "thought", "text": reasoning})
        content = message.get("content")
        if isinstance(content, str) and content:
            output.append({"type": "text", "text": content})
        output += [_tool_call(call, tools) for call in message.get("tool_calls") or () if isinstance(call, dict)]
        body["content"] = output
    body["usage"] = usage(chat.get("usage"), cost)
    body["finish_reason"] = finish
    return Answer(body, output, finish)


def error_event(message: str, status: int) -> bytes:
    """The event that ends a ``/inference`` stream which failed after its first chunk (TensorZero's
    error shape; ``status`` is the relay's, not part of it)."""
    return sse_error_event({"error": message})


class ChunksToTensorZero:
    """OpenAI chat chunks in, ``/inference`` stream chunks out (``relay.EventStream``'s translator).

    It also keeps what went out, for the inference's row: the text, the tool calls, the reason.
    """

    def __init__(self, function_type: str, head: Mapping[str, Any], outcome: Any = None) -> None:
        self._json = function_type == "json"
        self._head = dict(head)
        #: The request's outcome: the relay has priced a usage chunk before it reaches the translator.
        self._outcome = outcome
        #: Tool call ids by their index in the stream (only a call's first delta names its id).
        self._ids: dict[int, str] = {}
        self.text: list[str] = []
        self.thought: list[str] = []
        self.calls: dict[str, dict[str, str]] = {}
        self.reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def _chunk(self, **fields: Any) -> bytes:
        return frame(dumps({**self._head, **fields}))

    def feed(self, chunk: dict) -> bytes:
        out = []
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage(chunk["usage"], self._outcome.cost if self._outcome is not None else None)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("finish_reason") is not None:
                self.reason = finish_reason(choice["finish_reason"])
            blocks = self._blocks(delta)
            if self._json:
                raw = "".join(b.get("text") or b.get("raw_arguments") or "" for b in blocks
                              if b["type"] in ("text", "tool_call"))
                if raw:
                    out.append(self._chunk(raw=raw))
            elif blocks:
                out.append(self._chunk(content=blocks))
        return b"".join(out)

    def _blocks(self, delta: Mapping[str, Any]) -> list[dict[str, Any]]:
        blocks = []
        reasoning = delta.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            self.thought.append(reasoning)
            blocks.append({"type": "thought", "id": "0", "text": reasoning})
        content = delta.get("content")
        if isinstance(content, str) and content:
            self.text.append(content)
            blocks.append({"type": "text", "id": "0", "text": content})
        for position, call in enumerate(delta.get("tool_calls") or ()):
            index = call.get("index", position)
            if call.get("id"):
                self._ids[index] = call["id"]
            call_id = self._ids.get(index, str(index))
            function = call.get("function") or {}
            name, arguments = function.get("name") or "", function.get("arguments") or ""
            kept = self.calls.setdefault(call_id, {"raw_name": "", "raw_arguments": ""})
            kept["raw_name"] += name
            kept["raw_arguments"] += arguments
            blocks.append({"type": "tool_call", "id": call_id, "raw_name": name, "raw_arguments": arguments})
        return blocks

    def output(self) -> Any:
        """What went out, as the inference's row keeps it (a json stream's ``parsed`` is not known)."""
        if self._json:
            raw = "".join(self.text) or "".join(c["raw_arguments"] for c in self.calls.values())
            return {"raw": raw, "parsed": None}
        out: list[dict[str, Any]] = []
        if self.thought:
            out.append({"type": "thought", "text": "".join(self.thought)})
        if self.text:
            out.append({"type": "text", "text": "".join(self.text)})
        out += [{"type": "tool_call", "id": call_id, **call} for call_id, call in self.calls.items()]
        return out

    def finish(self) -> bytes:
        # NOTE: the last chunk carries the usage and the finish reason, as TensorZero's does.
        if self._json and self.reason == "tool_call":
            self.reason = "stop"
        last = {"usage": self.usage or usage(None), "finish_reason": self.reason}
        if not self._json:
            last["content"] = []
        return self._chunk(**last) + DONE
