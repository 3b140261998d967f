"""Anthropic's Messages API: OpenAI chat requests translated to ``POST /v1/messages`` and the answers back.

Wire format: https://docs.anthropic.com/en/api/messages (request and answer),
https://docs.anthropic.com/en/api/messages-streaming (events), https://docs.anthropic.com/en/api/errors.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from providers.base import (
    TRANSLATION_ERRORS,
    Attempt,
    ChatRequest,
    ChatResult,
    ChunkStream,
    Provider,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderResponseError,
    json_object,
    non_json_error,
    request_json,
    unexpected_shape,
    with_headers,
)
from providers.http import UpstreamClient, UpstreamStream
from providers.jsonio import dumps, loads
from providers.jsonpointer import apply_edits, apply_request_edits
from providers.sse import SSEDecoder

if TYPE_CHECKING:
    from gateway.config.schema import ProviderConfig
    from providers.credentials import Credential

__all__ = [
    "API_VERSION",
    "AnthropicProvider",
    "DEFAULT_API_BASE",
    "DEFAULT_MAX_TOKENS",
    "anthropic_error",
    "stream_anthropic",
    "to_chat_completion",
    "to_messages_request",
]

TYPE = "anthropic"
DEFAULT_API_BASE = "https://api.anthropic.com/v1"
#: The ``anthropic-version`` header; the event and block shapes below are those of this version.
API_VERSION = "2023-06-01"
#: ``max_tokens`` is required by Anthropic; used when the client sets neither limit.
DEFAULT_MAX_TOKENS = 4096

#: Anthropic error type -> (OpenAI error type, the HTTP status it comes with when sent in a stream).
_ERROR_TYPES: Mapping[str, tuple[str, int]] = {
    "invalid_request_error": ("invalid_request_error", 400),
    "authentication_error": ("authentication_error", 401),
    "billing_error": ("invalid_request_error", 402),
    "permission_error": ("permission_error", 403),
    "not_found_error": ("invalid_request_error", 404),
    "request_too_large": ("invalid_request_error", 413),
    "rate_limit_error": ("rate_limit_error", 429),
    "api_error": ("server_error", 500),
    "timeout_error": ("server_error", 504),
    "overloaded_error": ("server_error", 529),
}
_FINISH_REASONS: Mapping[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
#: Anthropic accepts tool ids matching ``^[a-zA-Z0-9_-]+$``; other providers' ids may not.
_BAD_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_TOOL_CHOICES: Mapping[str, str] = {"auto": "auto", "required": "any", "none": "none"}


class AnthropicProvider(Provider):
    """Anthropic's Messages API for chat; ``default_max_tokens`` fills Anthropic's required ``max_tokens``."""

    type = TYPE
    default_api_key_location = "env::ANTHROPIC_API_KEY"
    options = frozenset({"default_max_tokens"})
    tensorzero_options = frozenset({"provider_tools", "beta_structured_outputs"})

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        value = options.get("default_max_tokens", DEFAULT_MAX_TOKENS)
        # NOTE: bool is an int subclass; `default_max_tokens = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            problems.append(("default_max_tokens", f"must be an integer > 0, got {value!r}"))
        return problems

    def __init__(self, config: ProviderConfig, credential: Credential) -> None:
        super().__init__(config, credential)
        self._url = (config.api_base or DEFAULT_API_BASE) + "/messages"
        # extra_headers come last so a config can add anthropic-beta or pin another anthropic-version.
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION, **config.extra_headers}
        # NOTE: a header set to None is one TensorZero's extra_headers deletes.
        self._headers = {k: v for k, v in headers.items() if v is not None}
        self._extra_body = dict(config.extra_body)
        self._edits = config.body_edits
        self._default_max_tokens = int(config.options.get("default_max_tokens", DEFAULT_MAX_TOKENS))

    def _request_headers(self) -> Mapping[str, str]:
        secret = self.credential.get()
        if secret is None:
            return self._headers
        headers = dict(self._headers)
        headers["x-api-key"] = secret.reveal()
        return headers

    def _request_body(self, request: ChatRequest, stream: bool) -> bytes:
        try:
            body = to_messages_request(request.body, self.config.model_name, self._default_max_tokens)
        except TRANSLATION_ERRORS as e:
            # NOTE: the client's request, of a shape the checks above it missed: its error, not the provider's.
            raise _bad_request(f"the request cannot be expressed for Anthropic ({type(e).__name__})", "messages") from e
        # The method called decides, not the client's body: routing calls chat_stream only for streams.
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        if self._extra_body:
            body.update(self._extra_body)
        if self._edits:
            apply_edits(body, self._edits)
        if request.edits:
            apply_request_edits(body, request.edits)
        return request_json(body)

    def chat(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChatResult:
        body = self._request_body(request, stream=False)
        status, raw = http.post(self._url, body, with_headers(self._request_headers(), request.headers), attempt)
        if status >= 400:
            raise anthropic_error(status, raw)
        answer = json_object(raw)
        try:
            return ChatResult(to_chat_completion(answer))
        except TRANSLATION_ERRORS as e:
            raise unexpected_shape("answer", e) from e

    def chat_stream(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChunkStream:
        body = self._request_body(request, stream=True)
        upstream = http.post_stream(self._url, body, with_headers(self._request_headers(), request.headers), attempt)
        return stream_anthropic(upstream, include_usage=True)  # see ChunkStream: usage always


def anthropic_error(status: int, raw: bytes) -> ProviderHTTPError:
    """Map an Anthropic error answer (``{"type": "error", "error": {...}}``) to ``ProviderHTTPError``."""
    try:
        parsed = loads(raw) if raw else None
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return non_json_error(status, raw)
    kind = error.get("type")
    message = error.get("message")
    mapped = _ERROR_TYPES.get(kind) if isinstance(kind, str) else None
    if mapped is not None:
        type_: str | None = mapped[0]
    else:
        type_ = "server_error" if status >= 500 else None
    return ProviderHTTPError(
        status,
        message if isinstance(message, str) and message else f"upstream answered HTTP {status}",
        type_=type_,
        # NOTE: keeps what the mapping loses (e.g. overloaded_error behind server_error).
        code=kind if isinstance(kind, str) and kind != type_ else None,
        raw=raw,
    )


def _bad_request(message: str, param: str) -> ProviderHTTPError:
    """A request Anthropic cannot express: the client's error, so no fallback (400 is not retryable)."""
    return ProviderHTTPError(400, message, type_="invalid_request_error", param=param)


# --- OpenAI chat request -> Messages request ----------------------------------------------------------


def to_messages_request(body: Mapping[str, Any], model_name: str, default_max_tokens: int) -> dict[str, Any]:
    """Translate an OpenAI chat request body into a Messages API request body.

    Raises:
        ProviderHTTPError: 400, for content Anthropic has no form for (the client's error).
    """
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    given = body.get("messages") or []
    if not isinstance(given, list):
        raise _bad_request("messages must be an array", "messages")
    for i, message in enumerate(given):
        if not isinstance(message, dict):
            raise _bad_request("each message must be an object", f"messages[{i}]")
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content"), f"messages[{i}].content"))
            continue
        if role == "user":
            blocks = _blocks(message.get("content"), f"messages[{i}].content")
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, i)]
        else:
            raise _bad_request(f"unsupported message role {role!r}", f"messages[{i}].role")
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            # NOTE: Anthropic requires user and assistant turns to alternate; a run of one role is one turn.
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    out: dict[str, Any] = {"model": model_name, "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    out["max_tokens"] = default_max_tokens if max_tokens is None else max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = stop
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stream") is True:
        out["stream"] = True
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    _add_tools(body, out)
    return out


def _text_of(content: Any, param: str) -> str:
    """The text of a system message: a string, or text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise _bad_request("content must be a string or an array of parts", param)


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """User or tool result content as Anthropic blocks; empty text is dropped (Anthropic rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad_request("content must be a string or an array of parts", param)
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{param}[{j}].image_url"))
        elif kind == "refusal":
            continue  # an earlier assistant refusal: nothing for the model to read back
        else:
            raise _bad_request(f"unsupported content part type {kind!r}", f"{param}[{j}].type")
    return blocks


def _image_block(image: Any, param: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _bad_request("image_url.url must be a string", param)
    if url.startswith("data:"):
        # RFC 2397: data:[<mediatype>][;base64],<data>
        head, sep, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise _bad_request("an image data URL must be data:<media type>;base64,<data>", param)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _bad_request("image_url.url must be an http(s) URL or a base64 data URL", param)


def _tool_id(value: Any) -> str:
    return _BAD_ID_CHARS.sub("_", value) if isinstance(value, str) and value else "toolu_missing"


def _assistant_blocks(message: dict[str, Any], i: int) -> list[dict[str, Any]]:
    blocks = _blocks(message.get("content"), f"messages[{i}].content")
    for j, call in enumerate(message.get("tool_calls") or ()):
        param = f"messages[{i}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad_request("a tool call needs function.name", param)
        arguments = function.get("arguments") or "{}"
        try:
            tool_input = loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            tool_input = None
        if not isinstance(tool_input, dict):
            raise _bad_request("function.arguments must be a JSON object", f"{param}.function.arguments")
        tool_id = _tool_id(call.get("id"))
        blocks.append({"type": "tool_use", "id": tool_id, "name": function["name"], "input": tool_input})
    return blocks


def _tool_result(message: dict[str, Any], i: int) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(message.get("tool_call_id"))}
    content = message.get("content")
    if isinstance(content, str):
        block["content"] = content
    else:
        block["content"] = _blocks(content, f"messages[{i}].content")
    return block


def _add_tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise _bad_request("tools must be an array", "tools")
    converted = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad_request("only function tools with a name are supported", f"tools[{i}]")
        entry: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            entry["description"] = function["description"]
        entry["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
        converted.append(entry)
    out["tools"] = converted
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise _bad_request(f"unsupported tool_choice {choice!r}", "tool_choice")
        tool_choice: dict[str, Any] | None = {"type": _TOOL_CHOICES[choice]}
    elif isinstance(choice, dict):
        function = choice.get("function") if choice.get("type") == "function" else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _bad_request("tool_choice must name a function", "tool_choice")
        tool_choice = {"type": "tool", "name": name}
    else:
        tool_choice = None
    if body.get("parallel_tool_calls") is False and (tool_choice is None or tool_choice["type"] != "none"):
        tool_choice = tool_choice or {"type": "auto"}
        tool_choice["disable_parallel_tool_use"] = True
    if tool_choice is not None:
        out["tool_choice"] = tool_choice


# --- Messages answer -> chat.completion -----------------------------------------------------------------


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: Anthropic's ``input_tokens`` excludes cache reads and writes."""
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def to_chat_completion(answer: Mapping[str, Any]) -> dict[str, Any]:
    """Translate a Messages API answer into an OpenAI ``chat.completion`` object."""
    content = answer.get("content")
    if not isinstance(content, list):
        raise ProviderResponseError("upstream answer has no content array")
    texts = []
    calls = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        # NOTE: thinking and server-tool blocks have no OpenAI form and are left out.
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    usage = answer.get("usage")
    finish = _FINISH_REASONS.get(answer.get("stop_reason"), "stop")
    return {
        "id": answer.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _usage(usage if isinstance(usage, dict) else {}),
    }


# --- Messages event stream -> chat.completion.chunk payloads ------------------------------------------


class _StreamTranslator:
    """Turns each decoded Anthropic event into the chunk payloads it means; ``done`` after message_stop."""

    __slots__ = ("_base", "_include_usage", "_tools", "_usage", "_role_sent", "_finished", "done")

    def __init__(self, include_usage: bool) -> None:
        self._base: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": 0, "model": ""}
        self._include_usage = include_usage
        self._role_sent = False
        #: Content block index -> tool call index, for routing input_json_delta to its call.
        self._tools: dict[int, int] = {}
        self._usage: dict[str, Any] = {}
        #: A chunk with finish_reason was sent.
        self._finished = False
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return dumps({**self._base, "choices": [choice]})

    def event(self, payload: bytes) -> list[bytes]:
        try:
            event = loads(payload)
        except ValueError:
            raise ProviderResponseError("upstream sent an event that is not JSON", raw=payload) from None
        if not isinstance(event, dict):
            raise ProviderResponseError("upstream sent an event that is not a JSON object", raw=payload)
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_start":
            message = event.get("message") or {}
            self._base.update(id=message.get("id"), created=int(time.time()), model=message.get("model"))
            self._usage.update(message.get("usage") or {})
            # NOTE: nothing is yielded until there is content, so an error event right after
            # message_start (e.g. overloaded_error) still comes before the first chunk: routing falls back.
            return []
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools[event.get("index")] = len(self._tools)
                function = {"name": block.get("name"), "arguments": ""}
                call = {"index": index, "id": block.get("id"), "type": "function", "function": function}
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "message_delta":
            # Usage here is cumulative (output_tokens, and with newer models the input counts too).
            self._usage.update(event.get("usage") or {})
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            if not stop_reason or self._finished:
                return []
            self._finished = True
            return [self._chunk({}, _FINISH_REASONS.get(stop_reason, "stop"))]
        if kind == "message_stop":
            self.done = True
            # OpenAI clients expect a finish_reason before the end, even if no message_delta gave one.
            out = [] if self._finished else [self._chunk({}, "stop")]
            if self._include_usage:
                out.append(dumps({**self._base, "choices": [], "usage": _usage(self._usage)}))
            return out
        if kind == "error":
            error = event.get("error")
            error_type = error.get("type") if isinstance(error, dict) else None
            known = isinstance(error_type, str) and error_type in _ERROR_TYPES
            status = _ERROR_TYPES[error_type][1] if known else 500
            raise anthropic_error(status, payload)
        # ping, content_block_stop, and event types added later (the API's versioning policy allows it).
        return []

    def _block_delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta":
            index = self._tools.get(event.get("index"))
            if index is None:
                raise ProviderResponseError("upstream sent input_json_delta for a block that is not tool_use")
            partial = delta.get("partial_json") or ""
            if not partial:
                return []
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": partial}}]})]
        # thinking_delta, signature_delta, citations_delta: no OpenAI form.
        return []


def stream_anthropic(upstream: UpstreamStream, include_usage: bool = False) -> ChunkStream:
    """Yield OpenAI chunk payloads for an Anthropic event stream, up to ``message_stop``.

    An ``error`` event raises the mapped ``ProviderHTTPError``; an end without ``message_stop`` is a
    ``ProviderConnectionError``. Reads on to the end of the body so the connection can be reused.
    """
    try:
        if upstream.status >= 400:
            raise anthropic_error(upstream.status, upstream.read_all())
        decoder = SSEDecoder(upstream.max_event_bytes)
        translator = _StreamTranslator(include_usage)
        for data in upstream:
            for _name, payload in decoder.feed(data):
                if not translator.done:
                    try:
                        chunks = translator.event(payload)
                    except TRANSLATION_ERRORS as e:
                        raise unexpected_shape("event", e) from e
                    yield from chunks
        if not translator.done:
            raise ProviderConnectionError("upstream stream ended before message_stop")
    finally:
        upstream.close()
