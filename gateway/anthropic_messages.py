"""Anthropic's Messages format at the gateway's edge: its requests as OpenAI chat, chat answers as messages.

``POST /v1/messages`` serves Anthropic clients from any chat model. Pure translation, no I/O.
Wire format: https://docs.anthropic.com/en/api/messages, https://docs.anthropic.com/en/api/messages-streaming
and https://docs.anthropic.com/en/api/errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from gateway.errors import InvalidRequestError, MissingParameterError, ProviderAnswerError
from providers.base import TRANSLATION_ERRORS, unexpected_shape
from providers.jsonio import dumps, loads

__all__ = [
    "ChunksToEvents",
    "chat_to_message",
    "error_event",
    "error_json",
    "error_type",
    "messages_to_chat",
]

_TOOL_CHOICES: Mapping[str, str] = {"auto": "auto", "any": "required", "none": "none"}
_STOP_REASONS: Mapping[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
#: HTTP status -> Anthropic error type (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


# --- errors ----------------------------------------------------------------------------------------------


def error_type(status: int) -> str:
    """The Anthropic error type for an HTTP status."""
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def error_json(message: str, status: int, type_: str | None = None) -> bytes:
    """An error response body the Anthropic way: ``{"type": "error", "error": {"type", "message"}}``."""
    return dumps({"type": "error", "error": {"type": type_ or error_type(status), "message": message}})


def error_event(message: str, status: int, type_: str | None = None) -> bytes:
    """The ``event: error`` that ends a stream which failed after its first event."""
    error = {"type": type_ or error_type(status), "message": message}
    return _event("error", {"type": "error", "error": error})


# --- Messages request -> OpenAI chat request -----------------------------------------------------------


def messages_to_chat(body: dict) -> dict:
    """Translate an Anthropic Messages request body into an OpenAI chat request body.

    Raises:
        InvalidRequestError: the body is not a valid Messages request (``param`` names the field).
    """
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    if "messages" not in body:
        raise MissingParameterError("messages")
    if not isinstance(body["messages"], list):
        raise InvalidRequestError("'messages' must be an array", param="messages")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise MissingParameterError("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequestError("'max_tokens' must be an integer >= 1", param="max_tokens")

    messages: list[dict[str, Any]] = []
    if body.get("system") is not None:
        messages.append({"role": "system", "content": _system_text(body["system"])})
    for i, message in enumerate(body["messages"]):
        messages.extend(_message(message, i))
    out: dict[str, Any] = {"messages": messages, "max_tokens": max_tokens}
    if "model" in body:
        out["model"] = body["model"]
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequestError("'stop_sequences' must be an array of strings", param="stop_sequences")
        if stop:
            out["stop"] = stop
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stream") is True:
        # Usage arrives only in a last chunk when asked for; message_delta needs it.
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    _add_tools(body, out)
    # NOTE: top_k, thinking and service_tier have no OpenAI chat equivalent and are dropped.
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        texts = []
        for j, block in enumerate(system):
            text = block.get("text") if isinstance(block, dict) and block.get("type") == "text" else None
            if not isinstance(text, str):
                raise InvalidRequestError("system blocks must be text blocks", param=f"system[{j}]")
            texts.append(text)
        return "\n\n".join(texts)
    raise InvalidRequestError("'system' must be a string or an array of text blocks", param="system")


def _message(message: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic message as the OpenAI messages it becomes (tool results are messages of their own)."""
    if not isinstance(message, dict):
        raise InvalidRequestError("each message must be an object", param=f"messages[{i}]")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequestError("'role' must be 'user' or 'assistant'", param=f"messages[{i}].role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequestError("'content' must be a string or an array", param=f"messages[{i}].content")
    if role == "assistant":
        return [_assistant(content, i)]
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            tools.append(_tool_message(block, parts, param))
        else:
            parts.append(_part(block, param))
    # NOTE: OpenAI wants tool messages right after the assistant's tool calls, so the rest comes after.
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tools, {"role": "user", "content": parts[0]["text"]}]
    return [*tools, {"role": "user", "content": parts}] if parts else tools


def _part(block: Any, param: str) -> dict[str, Any]:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "text" and isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    if kind == "image":
        source = block.get("source")
        source_type = source.get("type") if isinstance(source, dict) else None
        if source_type == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
            return {"type": "image_url", "image_url": {"url": url}}
        if source_type == "url" and isinstance(source.get("url"), str):
            return {"type": "image_url", "image_url": {"url": source["url"]}}
        raise InvalidRequestError("an image source must be base64 or url", param=f"{param}.source")
    raise InvalidRequestError(f"unsupported content block type {kind!r}", param=f"{param}.type")


def _tool_message(block: dict[str, Any], parts: list[dict[str, Any]], param: str) -> dict[str, Any]:
    """A tool_result as an OpenAI tool message; its images go to ``parts`` (tool messages hold only text)."""
    tool_use_id = block.get("tool_use_id")
    if not isinstance(tool_use_id, str):
        raise InvalidRequestError("a tool_result needs tool_use_id", param=f"{param}.tool_use_id")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list):
        texts = []
        for k, inner in enumerate(content):
            part = _part(inner, f"{param}.content[{k}]")
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                parts.append(part)
        text = "\n".join(texts)
    else:
        message = "tool_result content must be a string or an array"
        raise InvalidRequestError(message, param=f"{param}.content")
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}


def _assistant(content: list[Any], i: int) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise InvalidRequestError("a tool_use block needs id and name", param=param)
            function = {"name": block["name"], "arguments": dumps(block.get("input") or {}).decode()}
            calls.append({"id": block["id"], "type": "function", "function": function})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # reasoning from an earlier turn: chat models take no such input
        else:
            raise InvalidRequestError(f"unsupported content block type {kind!r}", param=f"{param}.type")
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        out["tool_calls"] = calls
    return out


def _add_tools(body: dict, out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise InvalidRequestError("'tools' must be an array", param="tools")
    converted = []
    for i, tool in enumerate(tools):
        # Server tools (web search, code execution, ...) carry a type; only client tools can be relayed.
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or not tool.get("name"):
            raise InvalidRequestError("only client tools with a name are supported", param=f"tools[{i}]")
        function: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
        converted.append({"type": "function", "function": function})
    out["tools"] = converted
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in _TOOL_CHOICES:
        out["tool_choice"] = _TOOL_CHOICES[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        message = "'tool_choice' must be auto, any, tool (with a name) or none"
        raise InvalidRequestError(message, param="tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


# --- OpenAI chat answer -> Messages answer -------------------------------------------------------------


def _message_id(chat_id: Any) -> str:
    if isinstance(chat_id, str) and chat_id:
        return chat_id if chat_id.startswith("msg_") else "msg_" + chat_id.removeprefix("chatcmpl-")
    return "msg_" + uuid.uuid4().hex


def _tool_input(arguments: Any) -> dict[str, Any]:
    """Tool call arguments as the object Anthropic's ``input`` must be."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        # NOTE: the model wrote arguments that are not JSON; Anthropic has no form for them.
        parsed = {}
    return parsed if isinstance(parsed, dict) else {}


def _usage(usage: Any) -> dict[str, int]:
    """Anthropic counts cache reads apart from ``input_tokens``; OpenAI includes them in ``prompt_tokens``."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = (details.get("cached_tokens") if isinstance(details, dict) else None) or 0
    return {
        "input_tokens": max((usage.get("prompt_tokens") or 0) - cached, 0),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def chat_to_message(completion: dict, model: str) -> dict:
    """Translate an OpenAI ``chat.completion`` into an Anthropic message object, named ``model``.

    Raises:
        ProviderAnswerError: the completion has a shape no message can be made from.
    """
    try:
        return _chat_to_message(completion, model)
    except TRANSLATION_ERRORS as e:
        raise ProviderAnswerError(f"{unexpected_shape('answer', e).public}") from e


def _chat_to_message(completion: dict, model: str) -> dict:
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict) and p.get("type") == "text")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        tool_id = call.get("id") or "toolu_" + uuid.uuid4().hex
        tool_input = _tool_input(function.get("arguments"))
        content.append({"type": "tool_use", "id": tool_id, "name": function.get("name"), "input": tool_input})
    finish = choice.get("finish_reason")
    return {
        "id": _message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        # NOTE: OpenAI does not say which stop sequence matched, so every "stop" is an end_turn.
        "stop_reason": _STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else None,
        "stop_sequence": None,
        "usage": _usage(completion.get("usage")),
    }


# --- OpenAI chunks -> Messages stream events -----------------------------------------------------------


class ChunksToEvents:
    """Turns a chat completion's chunks, fed one at a time, into Anthropic's stream events.

    ``feed`` returns the framed events a chunk produces (often none: ``b""``); ``finish`` returns the
    closing ``message_delta`` and ``message_stop``. Blocks are opened and closed in order, as
    Anthropic's stream has them: text, then each tool call, each with its own index.
    """

    __slots__ = ("_model", "_started", "_next_index", "_open", "_tools", "_stop_reason", "_usage", "_done")

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._next_index = 0
        #: The open block: None, "text", or the OpenAI index of the tool call being streamed.
        self._open: str | int | None = None
        #: OpenAI tool call index -> Anthropic content block index.
        self._tools: dict[int, int] = {}
        self._stop_reason: str | None = None
        self._usage: Any = None
        self._done = False

    def _start(self, chat_id: Any) -> bytes:
        self._started = True
        message = {
            "id": _message_id(chat_id),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self._model,
            "stop_reason": None,
            "stop_sequence": None,
            # NOTE: OpenAI reports usage only at the end; the real counts go out in message_delta.
            "usage": _usage(None),
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _open_block(self, block: dict[str, Any], which: str | int) -> list[bytes]:
        events = self._close_block()
        self._open = which
        index = self._next_index
        self._next_index += 1
        if isinstance(which, int):
            self._tools[which] = index
        start = {"type": "content_block_start", "index": index, "content_block": block}
        events.append(_event("content_block_start", start))
        return events

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self._next_index - 1})]

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def feed(self, chunk: dict) -> bytes:
        """The events one OpenAI chunk (a parsed ``chat.completion.chunk``) produces, framed."""
        events: list[bytes] = []
        if not self._started:
            events.append(self._start(chunk.get("id")))
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 has no form in Anthropic's format: the first choice is the answer
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "text":
                    events += self._open_block({"type": "text", "text": ""}, "text")
                events.append(self._delta(self._next_index - 1, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or ():
                events += self._tool_call(call)
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                self._stop_reason = _STOP_REASONS.get(finish, "end_turn")
                events += self._close_block()
        return b"".join(events)

    def _tool_call(self, call: Any) -> list[bytes]:
        if not isinstance(call, dict):
            return []
        which = call.get("index", 0)
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        events = []
        if which not in self._tools:
            tool_id = call.get("id") or "toolu_" + uuid.uuid4().hex
            block = {"type": "tool_use", "id": tool_id, "name": function.get("name") or "", "input": {}}
            events += self._open_block(block, which)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            # NOTE: OpenAI streams tool calls one after another; arguments for an earlier call would
            # go to a block already stopped, which Anthropic's clients may not expect.
            delta = {"type": "input_json_delta", "partial_json": arguments}
            events.append(self._delta(self._tools[which], delta))
        return events

    def finish(self) -> bytes:
        """The closing events: the open block's stop, ``message_delta`` (stop reason, usage), message_stop.

        A stream that failed ends with ``error_event`` instead, as Anthropic's do.
        """
        if self._done:
            return b""
        self._done = True
        events = [] if self._started else [self._start(None)]
        events += self._close_block()
        usage = _usage(self._usage)
        delta = {"stop_reason": self._stop_reason or "end_turn", "stop_sequence": None}
        events.append(_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(_event("message_stop", {"type": "message_stop"}))
        return b"".join(events)
