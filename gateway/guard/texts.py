"""Where the text of a request or an answer is, per API: the places a guardrail reads and may rewrite.

Each function returns ``(holder, key)`` pairs whose ``holder[key]`` is a string, so a redaction is
written back in place and everything else in the body is left as it was.
"""

from __future__ import annotations

from typing import Any

__all__ = ["answer_slots", "request_slots"]

Slot = tuple[Any, Any]


def _text_or_parts(holder: Any, key: Any, out: list[Slot]) -> None:
    """A ``content`` that is a string, or a list of parts whose ``text`` parts hold strings."""
    value = holder.get(key) if isinstance(holder, dict) else None
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append((part, "text"))


def _strings(holder: dict, key: str, out: list[Slot]) -> None:
    value = holder.get(key)
    if isinstance(value, str):
        out.append((holder, key))
    elif isinstance(value, list):
        out.extend((value, i) for i, item in enumerate(value) if isinstance(item, str))


def request_slots(body: Any, capability: str, anthropic: bool = False) -> list[Slot]:
    """Every text the client sends: chat messages (OpenAI's or Anthropic's, with Anthropic's
    ``system``), a completion's prompt, an embedding's input, a Responses input, moderation input."""
    out: list[Slot] = []
    if not isinstance(body, dict):
        return out
    if capability == "chat":
        if anthropic:
            _text_or_parts(body, "system", out)
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():  # a bad one is the resource's 400
            _text_or_parts(message, "content", out)
    elif capability == "completions":
        _strings(body, "prompt", out)
    elif capability in ("embedding", "moderation"):
        _strings(body, "input", out)
    elif capability == "responses":
        _strings(body, "instructions", out)
        value = body.get("input")
        if isinstance(value, str):
            out.append((body, "input"))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _text_or_parts(item, "content", out)
    return out


def answer_slots(answer: Any, capability: str, anthropic: bool = False) -> list[tuple[Slot, Any]]:
    """The texts of a whole answer, each with the choice it belongs to (None for Anthropic's)."""
    out: list[tuple[Slot, Any]] = []
    if not isinstance(answer, dict):
        return out
    if anthropic:
        for block in answer.get("content") or ():
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                out.append(((block, "text"), None))
        return out
    if capability == "responses":
        for item in answer.get("output") or ():
            for part in (item.get("content") or ()) if isinstance(item, dict) else ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append(((part, "text"), None))
        if isinstance(answer.get("output_text"), str):
            out.append(((answer, "output_text"), None))
        return out
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if capability == "completions" and isinstance(choice.get("text"), str):
            out.append(((choice, "text"), choice))
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            out.append(((message, "content"), choice))
    return out
