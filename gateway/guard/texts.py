"""Where the text of a request or an answer is, per API: the places a guardrail reads and may rewrite.

Each function returns ``(holder, key)`` pairs whose ``holder[key]`` is a string, so a redaction is
written back in place and everything else in the body is left as it was. Beside the message texts
they find what else carries words: tool-call arguments (a JSON string, or Anthropic's ``input``
object, whose strings are read one by one), tool results, refusals, reasoning, image prompts and the
text to be spoken. Token-array prompts carry no text to read.
"""

from __future__ import annotations

from typing import Any

__all__ = ["answer_slots", "request_slots"]

Slot = tuple[Any, Any]

#: The most nesting a tool's ``input`` object is read to (deeper is a 400 of the upstream's).
_DEPTH = 32


def _text_or_parts(holder: Any, key: Any, out: list[Slot]) -> None:
    """A ``content`` that is a string, or a list of parts: ``text`` parts, and Anthropic's tool blocks."""
    value = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, list):
        for part in value:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                out.append((part, "text"))
            kind = part.get("type")
            # TensorZero's parts on the OpenAI routes: raw text, a template's or a schema's arguments.
            for key in ("value", "arguments", "tensorzero::arguments"):
                if key in part and kind in ("tensorzero::raw_text", "tensorzero::template", "text"):
                    _strings_within(part, key, out)
            if kind == "tool_result":
                _text_or_parts(part, "content", out)
            elif kind == "tool_use":
                _strings_within(part, "input", out)
            elif kind == "thinking" and isinstance(part.get("thinking"), str):
                out.append((part, "thinking"))


def _strings(holder: dict, key: str, out: list[Slot]) -> None:
    value = holder.get(key)
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, list):
        out.extend((value, i) for i, item in enumerate(value) if isinstance(item, str))


def _strings_within(holder: Any, key: Any, out: list[Slot], depth: int = 0) -> None:
    """Every string anywhere in ``holder[key]`` (a JSON value)."""
    value = holder[key]
    if isinstance(value, str):
        out.append((holder, key))
    elif depth < _DEPTH and isinstance(value, dict):
        for k in value:
            _strings_within(value, k, out, depth + 1)
    elif depth < _DEPTH and isinstance(value, list):
        for i in range(len(value)):
            _strings_within(value, i, out, depth + 1)


def _fields(holder: Any, keys: tuple[str, ...], out: list[Slot]) -> None:
    if isinstance(holder, dict):
        out.extend((holder, key) for key in keys if isinstance(holder.get(key), str))


def _tool_calls(message: dict, out: list[Slot]) -> None:
    """OpenAI tool calls' arguments (and the older ``function_call``'s)."""
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        if isinstance(call, dict):
            _fields(call.get("function"), ("arguments",), out)
    _fields(message.get("function_call"), ("arguments",), out)


def _tensorzero_input(body: dict, out: list[Slot]) -> None:
    """A ``/inference`` input (or each input of a batch)."""
    inputs = body.get("inputs")
    for data in [body.get("input"), *(inputs if isinstance(inputs, list) else ())]:
        if isinstance(data, dict):
            _one_input(data, out)


def _one_input(data: dict, out: list[Slot]) -> None:
    """An input's system (a string, or a schema's object), and each message's content: text, raw
    text, template arguments, tool calls and results."""
    if data.get("system") is not None:
        _strings_within(data, "system", out)
    messages = data.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            out.append((message, "content"))
            continue
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict):
                for key in ("text", "value", "arguments", "raw_arguments", "result", "data"):
                    if block.get(key) is not None:
                        _strings_within(block, key, out)


def request_slots(body: Any, capability: str, dialect: str | None = None) -> list[Slot]:
    """Every text the client sends: chat messages (OpenAI's, Anthropic's with its ``system``, tool
    calls and tool results, or a ``/inference`` input), a completion's prompt, an embedding's input,
    a Responses input, moderation input, an image prompt, the text of speech. ``dialect`` is the
    route's ``error_format``: None for OpenAI's APIs, ``anthropic`` or ``tensorzero``."""
    out: list[Slot] = []
    if not isinstance(body, dict):
        return out
    anthropic = dialect == "anthropic"
    # NOTE: what a request's extra_body edits put into the body is text the upstream gets too.
    for key in ("extra_body", "tensorzero::extra_body"):
        edits = body.get(key)
        for edit in edits if isinstance(edits, list) else ():
            if isinstance(edit, dict) and "value" in edit:
                _strings_within(edit, "value", out)
    if capability == "chat" and dialect == "tensorzero":
        _tensorzero_input(body, out)
    elif capability == "chat":
        if anthropic:
            _text_or_parts(body, "system", out)
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():  # a bad one is the resource's 400
            _text_or_parts(message, "content", out)
            if isinstance(message, dict):
                _fields(message, ("refusal",), out)
                _tool_calls(message, out)
    elif capability == "completions":
        _strings(body, "prompt", out)
    elif capability in ("embedding", "moderation", "text_to_speech"):
        _strings(body, "input", out)
    elif capability == "image_generation":
        _strings(body, "prompt", out)
    elif capability == "responses":
        _strings(body, "instructions", out)
        value = body.get("input")
        if isinstance(value, str):
            out.append((body, "input"))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _text_or_parts(item, "content", out)
                    _fields(item, ("arguments", "output"), out)  # function_call, function_call_output
    return out


def answer_slots(answer: Any, capability: str, dialect: str | None = None) -> list[tuple[Slot, Any]]:
    """The texts of a whole answer, each with the choice it belongs to (None for Anthropic's,
    Responses and ``/inference`` answers)."""
    out: list[tuple[Slot, Any]] = []
    if not isinstance(answer, dict):
        return out
    if dialect == "tensorzero":
        slots: list[Slot] = []
        for block in answer.get("content") or ():
            if isinstance(block, dict):
                for key in ("text", "raw_arguments", "arguments"):
                    if block.get(key) is not None:
                        _strings_within(block, key, slots)
        if isinstance(answer.get("output"), dict):
            _strings_within(answer, "output", slots)
        return [(slot, None) for slot in slots]
    if dialect == "anthropic":
        slots: list[Slot] = []
        _text_or_parts(answer, "content", slots)
        return [(slot, None) for slot in slots]
    if capability == "responses":
        slots = []
        for item in answer.get("output") or ():
            if not isinstance(item, dict):
                continue
            for part in item.get("content") or ():
                _fields(part, ("text", "refusal"), slots)
            for part in item.get("summary") or ():  # reasoning summaries
                _fields(part, ("text",), slots)
            _fields(item, ("arguments",), slots)
        _fields(answer, ("output_text",), slots)
        return [(slot, None) for slot in slots]
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if capability == "completions" and isinstance(choice.get("text"), str):
            out.append(((choice, "text"), choice))
        message = choice.get("message")
        if isinstance(message, dict):
            slots = []
            _fields(message, ("content", "refusal", "reasoning_content"), slots)
            _tool_calls(message, slots)
            out.extend((slot, choice) for slot in slots)
    return out
