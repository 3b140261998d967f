"""Google's Gemini API (AI Studio): OpenAI chat requests translated to ``models/{model}:generateContent``
and ``:streamGenerateContent?alt=sse``, and the answers back.

Wire format: https://ai.google.dev/api/generate-content (request, answer, stream),
https://ai.google.dev/gemini-api/docs/troubleshooting (error statuses).
"""

from __future__ import annotations

import mimetypes
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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

__all__ = ["DEFAULT_API_BASE", "GeminiProvider", "gemini_error", "stream_gemini", "to_chat_completion",
           "to_gemini_request"]

TYPE = "google_ai_studio_gemini"
DEFAULT_API_BASE = "https://generativelanguage.googleapis.com/v1beta"

#: HTTP status -> OpenAI error type (else invalid_request_error, or server_error for a 5xx). Each
#: google.rpc status comes with one HTTP status (RESOURCE_EXHAUSTED 429...), so the status decides.
_ERROR_TYPES: Mapping[int, str] = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_FINISH_REASONS: Mapping[str, str] = {
    "STOP": "stop", "MAX_TOKENS": "length",
    **dict.fromkeys(("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                     "IMAGE_PROHIBITED_CONTENT"), "content_filter"),
}
_TOOL_CHOICES: Mapping[str, str] = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
_SAMPLING = (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"), ("seed", "seed"),
             ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"))
#: Gemini 3 refuses a function call sent back without the ``thoughtSignature`` it came with, and an
#: OpenAI client keeps nothing of a call but its id: so the signature rides in the id, after this.
_SIGNATURE_SEP = "__thought__"
_RESOURCE = re.compile(r"(models|tunedModels)/[\w.-]+")


class GeminiProvider(Provider):
    """Gemini's generateContent for chat; the key goes in ``x-goog-api-key``, never in the URL (logs)."""

    type = TYPE
    default_api_base = DEFAULT_API_BASE
    default_api_key_location = "env::GOOGLE_AI_STUDIO_API_KEY"

    def __init__(self, config, credential) -> None:
        super().__init__(config, credential)
        base, name = config.api_base or DEFAULT_API_BASE, config.model_name
        # ``tunedModels/x`` (or ``models/x``) is a resource name; any other name is quoted whole, so the
        # model of a ``type::model`` shorthand, which a client writes, cannot point at another path.
        resource = name if _RESOURCE.fullmatch(name) else "models/" + quote(name, safe="")
        self._url = f"{base}/{resource}:generateContent"
        self._stream_url = f"{base}/{resource}:streamGenerateContent?alt=sse"
        headers = {"content-type": "application/json", **config.extra_headers}
        # NOTE: a header set to None is one TensorZero's extra_headers deletes.
        self._headers = {k: v for k, v in headers.items() if v is not None}
        self._extra_body = dict(config.extra_body)
        self._edits = config.body_edits

    def _request_headers(self) -> Mapping[str, str]:
        secret = self.credential.get()
        return self._headers if secret is None else {**self._headers, "x-goog-api-key": secret.reveal()}

    def _request_body(self, request: ChatRequest) -> bytes:
        try:
            body = to_gemini_request(request.body)
        except TRANSLATION_ERRORS as e:
            message = f"the request cannot be expressed for Gemini ({type(e).__name__})"
            raise _bad_request(message, "messages") from e
        for key, value in self._extra_body.items():
            # NOTE: merged one level down, so extra_body.generationConfig.thinkingConfig adds to the
            # client's sampling settings instead of replacing them.
            if isinstance(value, Mapping) and isinstance(body.get(key), dict):
                value = {**body[key], **value}
            body[key] = value
        if self._edits:
            apply_edits(body, self._edits)
        if request.edits:
            apply_request_edits(body, request.edits)
        return request_json(body)

    def chat(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChatResult:
        headers = with_headers(self._request_headers(), request.headers)
        status, raw = http.post(self._url, self._request_body(request), headers, attempt)
        if status >= 400:
            raise gemini_error(status, raw)
        answer = json_object(raw)
        try:
            return ChatResult(to_chat_completion(answer, self.config.model_name))
        except TRANSLATION_ERRORS as e:
            raise unexpected_shape("answer", e) from e

    def chat_stream(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChunkStream:
        body = self._request_body(request)
        upstream = http.post_stream(self._stream_url, body, with_headers(self._request_headers(), request.headers),
                                    attempt)
        return stream_gemini(upstream, self.config.model_name, include_usage=True)  # see ChunkStream


def gemini_error(status: int, raw: bytes) -> ProviderHTTPError:
    """Map a Google error answer (``{"error": {"code", "message", "status"}}``) to ``ProviderHTTPError``."""
    try:
        parsed = loads(raw) if raw else None
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]  # a stream asked for without alt=sse answers a JSON array, its errors too
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return non_json_error(status, raw)
    kind, message, details = error.get("status"), error.get("message"), error.get("details")
    if status == 400 and any(isinstance(d, dict) and d.get("reason") == "API_KEY_INVALID"
                             for d in (details if isinstance(details, list) else ())):
        # NOTE: Google answers a bad key with 400 INVALID_ARGUMENT; the client gets what every other
        # provider type makes of a bad key: a 401.
        status = 401
    type_ = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
    message = message if isinstance(message, str) and message else f"upstream answered HTTP {status}"
    code = kind if isinstance(kind, str) else None
    return ProviderHTTPError(status, message, type_=type_, code=code, raw=raw)


def _bad_request(message: str, param: str) -> ProviderHTTPError:
    """A request Gemini cannot express: the client's error, so no fallback (400 is not retryable)."""
    return ProviderHTTPError(400, message, type_="invalid_request_error", param=param)


# --- OpenAI chat request -> generateContent request ---------------------------------------------------
def to_gemini_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """Translate an OpenAI chat request body into a generateContent body (``ProviderHTTPError`` 400 for
    content Gemini has no form for)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    #: Tool call id -> function name: a functionResponse must name its function, a tool message only its id.
    names: dict[str, str] = {}
    for i, message in enumerate(body.get("messages") or ()):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad_request("each message must be an object", param)
        role = message.get("role")
        if role in ("system", "developer"):
            if text := _text_of(message.get("content"), f"{param}.content"):
                system.append(text)
            continue
        if role == "user":
            parts = _parts(message.get("content"), f"{param}.content")
        elif role == "assistant":
            role, parts = "model", _model_parts(message, param, names)
        elif role == "tool":
            role, parts = "user", [_function_response(message, param, names)]
        else:
            raise _bad_request(f"unsupported message role {role!r}", f"{param}.role")
        if not parts:
            continue  # Gemini refuses a turn without parts
        if contents and contents[-1]["role"] == role:
            # NOTE: the answers to parallel calls must come in one turn, as many as there were calls.
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if config := _generation_config(body):
        out["generationConfig"] = config
    _add_tools(body, out)
    return out


def _text_of(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise _bad_request("content must be a string or an array of parts", param)


def _parts(content: Any, param: str) -> list[dict[str, Any]]:
    """Message content as Gemini parts; empty text is dropped (Gemini refuses an empty text part)."""
    if content is None or isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise _bad_request("content must be a string or an array of parts", param)
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(_media(url, f"{param}[{j}].image_url"))
        elif kind != "refusal":  # an earlier assistant refusal: nothing for the model to read back
            raise _bad_request(f"unsupported content part type {kind!r}", f"{param}[{j}].type")
    return parts


def _media(url: Any, param: str) -> dict[str, Any]:
    if isinstance(url, str) and url.startswith("data:"):
        # RFC 2397: data:[<mediatype>][;base64],<data>
        head, sep, data = url[5:].partition(",")
        mime, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not mime:
            raise _bad_request("a data URL must be data:<media type>;base64,<data>", param)
        return {"inlineData": {"mimeType": mime, "data": data}}
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        mime = mimetypes.guess_type(url.split("?", 1)[0])[0]
        # mimeType is optional for Gemini; sent when the file's name tells it.
        return {"fileData": {"mimeType": mime, "fileUri": url} if mime else {"fileUri": url}}
    raise _bad_request("the url must be an http(s) URL or a base64 data URL", param)


def _model_parts(message: dict[str, Any], param: str, names: dict[str, str]) -> list[dict[str, Any]]:
    parts = _parts(message.get("content"), f"{param}.content")
    for j, call in enumerate(message.get("tool_calls") or ()):
        where = f"{param}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad_request("a tool call needs function.name", where)
        arguments = function.get("arguments") or "{}"
        try:
            args = loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            args = None
        if not isinstance(args, dict):
            raise _bad_request("function.arguments must be a JSON object", f"{where}.function.arguments")
        part: dict[str, Any] = {"functionCall": {"name": function["name"], "args": args}}
        call_id = call.get("id")
        if isinstance(call_id, str):
            names[call_id] = function["name"]
            if signature := call_id.partition(_SIGNATURE_SEP)[2]:
                part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(message: dict[str, Any], param: str, names: Mapping[str, str]) -> dict[str, Any]:
    name = names.get(message.get("tool_call_id"))  # type: ignore[arg-type]
    if name is None:
        raise _bad_request("a tool message must answer a tool call of an earlier assistant message",
                           f"{param}.tool_call_id")
    text = _text_of(message.get("content"), f"{param}.content")
    try:
        parsed = loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        parsed = None
    # Gemini's response is a JSON object (a protobuf Struct): any other content goes under a key.
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config = {theirs: body[ours] for ours, theirs in _SAMPLING if body.get(ours) is not None}
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop
    if isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
        if schema is not None:
            config["responseSchema"] = schema
    elif fmt is not None and kind != "text":
        raise _bad_request(f"unsupported response_format {kind!r}", "response_format")
    return config


def _add_tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    declarations = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad_request("only function tools with a name are supported", f"tools[{i}]")
        given = {k: function[k] for k in ("description", "parameters") if function.get(k)}
        if isinstance(given.get("parameters"), dict) and not given["parameters"].get("properties"):
            del given["parameters"]  # Gemini refuses an OBJECT schema without properties; none is the same
        declarations.append({"name": function["name"], **given})
    out["tools"] = [{"functionDeclarations": declarations}]
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise _bad_request(f"unsupported tool_choice {choice!r}", "tool_choice")
        out["toolConfig"] = {"functionCallingConfig": {"mode": _TOOL_CHOICES[choice]}}
    elif isinstance(choice, dict):
        function = choice.get("function") if choice.get("type") == "function" else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise _bad_request("tool_choice must name a function", "tool_choice")
        out["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


# --- GenerateContentResponse -> chat.completion ---------------------------------------------------------
def _usage(meta: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage from ``usageMetadata``: thoughts are billed as output, server-tool prompts as input."""
    prompt = (meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0)
    thoughts = meta.get("thoughtsTokenCount") or 0
    completion = (meta.get("candidatesTokenCount") or 0) + thoughts
    total = meta.get("totalTokenCount")
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": total if isinstance(total, int) else prompt + completion,
            "prompt_tokens_details": {"cached_tokens": meta.get("cachedContentTokenCount") or 0},
            "completion_tokens_details": {"reasoning_tokens": thoughts}}


def _finish(reason: Any, called: bool) -> str:
    # NOTE: Gemini ends a turn of function calls with STOP; OpenAI clients look for tool_calls.
    return "tool_calls" if called else _FINISH_REASONS.get(reason, "stop")


def _blocked(answer: Mapping[str, Any]) -> bool:
    """The prompt itself was blocked: no candidate at all, only ``promptFeedback.blockReason``."""
    feedback = answer.get("promptFeedback")
    return not answer.get("candidates") and isinstance(feedback, dict) and bool(feedback.get("blockReason"))


def _answer_parts(candidate: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``("text", str)`` and ``("call", tool call)`` for the candidate's parts; thoughts (``thought:
    true``), executable code and inline media have no OpenAI chat form."""
    out = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if part.get("thought"):
            continue
        if "text" in part:
            if not isinstance(part["text"], str):
                raise TypeError("a text part's text is not a string")
            out.append(("text", part["text"]))
        elif "functionCall" in part:
            out.append(("call", _tool_call(part)))
    return out


def _tool_call(part: Mapping[str, Any]) -> dict[str, Any]:
    call = part["functionCall"]
    if not isinstance(call.get("name"), str):
        raise TypeError("a functionCall has no name")
    call_id = "call_" + uuid.uuid4().hex[:24]
    signature = part.get("thoughtSignature")
    if isinstance(signature, str) and signature:
        call_id += _SIGNATURE_SEP + signature
    function = {"name": call["name"], "arguments": dumps(call.get("args") or {}).decode()}
    return {"id": call_id, "type": "function", "function": function}


def _choice(candidate: Mapping[str, Any], position: int) -> dict[str, Any]:
    parts = _answer_parts(candidate)
    texts = [value for kind, value in parts if kind == "text"]
    calls = [value for kind, value in parts if kind == "call"]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    finish = _finish(candidate.get("finishReason"), bool(calls))
    index = candidate.get("index", position)
    return {"index": index, "message": message, "logprobs": None, "finish_reason": finish}


def to_chat_completion(answer: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """Translate a GenerateContentResponse into an OpenAI ``chat.completion`` object."""
    candidates = answer.get("candidates")
    if _blocked(answer):
        message = {"role": "assistant", "content": ""}
        choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"}]
    elif isinstance(candidates, list) and candidates:
        choices = [_choice(candidate, i) for i, candidate in enumerate(candidates)]
    else:
        raise ProviderResponseError("upstream answer has no candidates")
    usage = answer.get("usageMetadata")
    return {"id": answer.get("responseId") or "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion",
            "created": int(time.time()), "model": answer.get("modelVersion") or model_name,
            "choices": choices, "usage": _usage(usage if isinstance(usage, dict) else {})}


# --- streamGenerateContent events -> chat.completion.chunk payloads -----------------------------------
class _StreamTranslator:
    """Turns each GenerateContentResponse event into the chunk payloads it means; ``end`` at the end."""

    __slots__ = ("_base", "_include_usage", "_roles", "_calls", "_finished", "_usage")

    def __init__(self, model_name: str, include_usage: bool) -> None:
        self._base: dict[str, Any] = {"id": "", "object": "chat.completion.chunk", "created": 0,
                                      "model": model_name}
        self._include_usage = include_usage
        #: Choice indexes whose first chunk (the one with the role) went out, and those that finished.
        self._roles: set[int] = set()
        self._finished: set[int] = set()
        #: Choice index -> the index of its last tool call.
        self._calls: dict[int, int] = {}
        self._usage: dict[str, Any] = {}

    def _chunk(self, index: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if index not in self._roles:
            self._roles.add(index)
            delta = {"role": "assistant", **delta}
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return dumps({**self._base, "choices": [choice]})

    def event(self, payload: bytes) -> list[bytes]:
        try:
            event = loads(payload)
        except ValueError:
            raise ProviderResponseError("upstream sent an event that is not JSON", raw=payload) from None
        if not isinstance(event, dict):
            raise ProviderResponseError("upstream sent an event that is not a JSON object", raw=payload)
        if "error" in event:
            # Before the first chunk this fails the attempt (fallback); after it, it cuts the stream.
            code = event["error"].get("code") if isinstance(event["error"], dict) else None
            raise gemini_error(code if isinstance(code, int) and 400 <= code <= 599 else 500, payload)
        if not self._base["id"]:
            self._base.update(id=event.get("responseId") or "chatcmpl-" + uuid.uuid4().hex,
                              created=int(time.time()),
                              model=event.get("modelVersion") or self._base["model"])
        if isinstance(event.get("usageMetadata"), dict):
            self._usage = event["usageMetadata"]  # each event's is the total so far
        if _blocked(event) and 0 not in self._finished:
            self._finished.add(0)
            return [self._chunk(0, {}, "content_filter")]
        out = []
        for position, candidate in enumerate(event.get("candidates") or ()):
            index = candidate.get("index", position)
            if index in self._finished:
                continue
            for kind, value in _answer_parts(candidate):
                if kind == "call":
                    # Gemini sends each call whole, never its arguments in pieces.
                    k = self._calls[index] = self._calls.get(index, -1) + 1
                    out.append(self._chunk(index, {"tool_calls": [{"index": k, **value}]}))
                elif value:
                    out.append(self._chunk(index, {"content": value}))
            if candidate.get("finishReason"):
                self._finished.add(index)
                out.append(self._chunk(index, {}, _finish(candidate["finishReason"], index in self._calls)))
        return out

    def end(self) -> list[bytes]:
        if not self._finished:
            # Gemini's stream has no end marker: a last event with a finishReason is how it ends well.
            raise ProviderConnectionError("upstream stream ended before a finishReason")
        if not self._include_usage:
            return []
        return [dumps({**self._base, "choices": [], "usage": _usage(self._usage)})]


def stream_gemini(upstream: UpstreamStream, model_name: str, include_usage: bool = False) -> ChunkStream:
    """Yield OpenAI chunk payloads for a Gemini SSE stream, then the usage chunk if ``include_usage``;
    an ``error`` event raises the mapped ``ProviderHTTPError``, an end before any finishReason is a
    ``ProviderConnectionError``."""
    try:
        if upstream.status >= 400:
            raise gemini_error(upstream.status, upstream.read_all())
        decoder = SSEDecoder(upstream.max_event_bytes)
        translator = _StreamTranslator(model_name, include_usage)
        for data in upstream:
            for _name, payload in decoder.feed(data):
                try:
                    chunks = translator.event(payload)
                except TRANSLATION_ERRORS as e:
                    raise unexpected_shape("event", e) from e
                yield from chunks
        yield from translator.end()
    finally:
        upstream.close()
