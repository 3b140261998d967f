"""A loopback Gemini API (AI Studio, v1beta): ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent?alt=sse``, as Google documents them.

Wire format: https://ai.google.dev/api/generate-content. The model is the path's, not the body's. Requests
must carry ``x-goog-api-key: API_KEY`` (else 400 ``INVALID_ARGUMENT`` with the ``API_KEY_INVALID`` reason,
as Google answers a bad key) and be valid generateContent bodies, else 400 ``INVALID_ARGUMENT`` with
Google's wording: no field Google does not know (``Unknown name "model"``: a camelCase API), a non-empty
``contents`` array of ``user``/``model`` turns whose parts are non-empty, each one kind of data, no empty
text, valid base64 inline data, every turn of ``functionCall`` parts followed by a user turn holding as
many ``functionResponse`` parts, and no function whose OBJECT schema has no properties. Answers follow
proto3 JSON: camelCase, zero values (an ``index`` of 0) left out. Streams are SSE events of whole
GenerateContentResponse objects, CRLF-framed, with no end marker; a stream asked for without ``alt=sse``
is answered as Google does, one JSON array.

The model picks the behaviour:

``gemini-ok`` (or any name not listed below)
    ``candidateCount`` candidates (default 1) of ``GEMINI_TEXT``, ``finishReason: STOP``, usage
    ``GEMINI_USAGE``, ``modelVersion`` ``MODEL_VERSION``, ``responseId`` ``RESPONSE_ID``. Streamed: one
    event per word, each with the usage so far, the last with the finishReason.
``gemini-tool``
    A text part ``TOOL_PREFACE``, then a ``functionCall`` for each declared function, the k-th with
    ``tool_arguments(k)``, the first with ``thoughtSignature`` ``SIGNATURE`` (``finishReason: STOP``, as
    Google ends a call turn). Once the last turn holds functionResponse parts, answers ``tool_said(...)``
    of them. Streamed: the text event, then one event with every call and the finishReason.
``gemini-thinking``
    A ``thought: true`` part ``THOUGHT``, then ``GEMINI_TEXT``; usage ``THINKING_USAGE`` (thoughts and
    cached tokens). Streamed: the thought event, then the words.
``gemini-max-tokens``
    ``PARTIAL_TEXT`` with ``finishReason: MAX_TOKENS``.
``gemini-safety``
    A candidate without content, ``finishReason: SAFETY`` and its safety ratings.
``gemini-blocked``
    No candidates: ``promptFeedback.blockReason: SAFETY``.
``gemini-error-in-stream``
    Streamed: 200, then an error event (503 ``UNAVAILABLE``) before any content. Plain: that 503.
``gemini-error-mid-stream``
    Streamed: 200, the first word event (``PARTIAL_TEXT``), then the error event. Plain: the 503.
``gemini-no-finish``
    Streamed: the word events of ``gemini-ok`` without a finishReason, then the body ends.
``gemini-not-json``
    200 with a body that is not JSON (streamed: an event whose data is not JSON).
``gemini-shapeless``
    200 with ``{"candidates": "none"}`` (streamed: that as an event).
``status-NNN``
    Status NNN with Google's status name for it and the message ``upstream error NNN``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator

from upstream import Handler, RecordedRequest, Upstream, tool_arguments

__all__ = ["API_KEY", "GEMINI_TEXT", "GEMINI_USAGE", "MODEL_VERSION", "PARTIAL_TEXT", "RESPONSE_ID",
           "SIGNATURE", "THINKING_USAGE", "THOUGHT", "TOOL_PREFACE", "GeminiUpstream", "tool_said"]

API_KEY = "AIza-test-0123456789"
GEMINI_TEXT = "gemini says hello there"
GEMINI_USAGE = {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}
THINKING_USAGE = {"promptTokenCount": 30, "candidatesTokenCount": 4, "thoughtsTokenCount": 12,
                  "cachedContentTokenCount": 20, "totalTokenCount": 46}
MODEL_VERSION = "gemini-2.5-flash-001"
RESPONSE_ID = "resp-upstream-01"
TOOL_PREFACE = "Let me check."
THOUGHT = "The user greets me; I should greet back."
SIGNATURE = "c2lnbmF0dXJlLW9mLXRoZS1maXJzdC1jYWxs"
#: What ``gemini-max-tokens`` answers, and ``gemini-error-mid-stream`` sends before its error.
PARTIAL_TEXT = GEMINI_TEXT.split(" ")[0]

_PATH = re.compile(r"/v1beta/((?:models|tunedModels)/[^/:]+):(generateContent|streamGenerateContent)")
_STATUS = re.compile(r"status-(\d{3})")
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_REQUEST_FIELDS = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
                             "safetySettings", "cachedContent"})
_CONFIG_FIELDS = frozenset({
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
    "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
    "frequencyPenalty", "responseLogprobs", "logprobs", "thinkingConfig", "mediaResolution", "speechConfig"})
_DATA_FIELDS = frozenset({"text", "inlineData", "fileData", "functionCall", "functionResponse",
                          "executableCode", "codeExecutionResult"})
_PART_FIELDS = _DATA_FIELDS | {"thought", "thoughtSignature", "videoMetadata"}


def _error(code: int, message: str, details: list | None = None) -> dict:
    error = {"code": code, "message": message, "status": _STATUS_NAMES.get(code, "UNKNOWN")}
    if details is not None:
        error["details"] = details
    return {"error": error}


#: What the ``gemini-error-*`` models fail with.
_UNAVAILABLE = _error(503, "The model is overloaded. Please try again later.")


def tool_said(responses: list[dict]) -> str:
    """What ``gemini-tool`` answers to a turn of functionResponse parts."""
    return "the tool said: " + "; ".join(f"{r['name']}={json.dumps(r['response'], sort_keys=True)}"
                                         for r in responses)


def _problem(body: object) -> str | None:
    """Why Gemini would refuse this request body, or None."""
    if not isinstance(body, dict):
        return "Invalid JSON payload received."
    for key in body:
        if key not in _REQUEST_FIELDS:
            return f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
    for key in body.get("generationConfig") or {}:
        if key not in _CONFIG_FIELDS:
            return (f'Invalid JSON payload received. Unknown name "{key}" at \'generation_config\': '
                    "Cannot find field.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    pending = 0
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            return "Please use a valid role: user, model."
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for j, part in enumerate(parts):
            where = f"* GenerateContentRequest.contents[{i}].parts[{j}]"
            data = [k for k in part if k in _DATA_FIELDS] if isinstance(part, dict) else []
            unknown = [k for k in part if k not in _PART_FIELDS] if isinstance(part, dict) else []
            if unknown:
                return (f'Invalid JSON payload received. Unknown name "{unknown[0]}" at '
                        f"'contents[{i}].parts[{j}]': Cannot find field.")
            if len(data) != 1:
                return f"{where}.data: required oneof field 'data' must have one initialized field"
            if "text" in part and not (isinstance(part["text"], str) and part["text"]):
                return "Unable to submit request because it has an empty text parameter."
            if "inlineData" in part and (problem := _inline_problem(part["inlineData"])):
                return f"{where}.inline_data: {problem}"
        calls = sum("functionCall" in p for p in parts)
        answers = sum("functionResponse" in p for p in parts)
        if pending and answers != pending:
            return ("Please ensure that the number of function response parts is equal to the number of "
                    "function call parts of the function call turn.")
        if content["role"] == "model" and calls:
            pending = calls
        else:
            pending = 0
    system = body.get("systemInstruction")
    if system is not None and not (isinstance(system, dict) and isinstance(system.get("parts"), list)):
        return "* GenerateContentRequest.system_instruction: parts must be an array"
    for i, tool in enumerate(body.get("tools") or ()):
        for j, declaration in enumerate(tool.get("functionDeclarations") or ()):
            schema = declaration.get("parameters")
            if isinstance(schema, dict) and str(schema.get("type")).lower() == "object" \
                    and not schema.get("properties"):
                return (f"* GenerateContentRequest.tools[{i}].function_declarations[{j}].parameters."
                        "properties: should be non-empty for OBJECT type")
    return None


def _inline_problem(inline: object) -> str | None:
    if not isinstance(inline, dict) or not inline.get("mimeType"):
        return "mime_type is required"
    try:
        base64.b64decode(inline.get("data", ""), validate=True)
    except (binascii.Error, ValueError):
        return "Base64 decoding failed"
    return None


def _function_names(body: dict) -> list[str]:
    return [d["name"] for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]


def _responses(body: dict) -> list[dict]:
    """The functionResponse parts of the last turn."""
    return [p["functionResponse"] for p in body["contents"][-1]["parts"] if "functionResponse" in p]


def _candidate(parts: list[dict] | None, finish: str | None = None, index: int = 0, **more: object) -> dict:
    candidate: dict = {}
    if parts is not None:
        candidate["content"] = {"parts": parts, "role": "model"}
    if finish:
        candidate["finishReason"] = finish
    if index:
        candidate["index"] = index  # proto3 JSON leaves a zero out
    return {**candidate, **more}


def _answer(candidates: list[dict], usage: dict | None = None, **more: object) -> dict:
    answer = {"candidates": candidates, "usageMetadata": usage or GEMINI_USAGE, "modelVersion": MODEL_VERSION,
              "responseId": RESPONSE_ID, **more}
    if not candidates:
        del answer["candidates"]
    return answer


def _events(model: str, body: dict) -> Iterator[dict]:
    """The stream of an answer: GenerateContentResponse objects, the last one with the finishReason."""
    config = body.get("generationConfig") or {}
    if model == "gemini-tool":
        responses = _responses(body)
        if responses:
            yield _answer([_candidate([{"text": tool_said(responses)}], "STOP")])
            return
        calls = [{"functionCall": {"name": name, "args": tool_arguments(k)}}
                 for k, name in enumerate(_function_names(body))]
        if calls:
            calls[0]["thoughtSignature"] = SIGNATURE
        yield _answer([_candidate([{"text": TOOL_PREFACE}])])
        yield _answer([_candidate(calls, "STOP")])
        return
    if model == "gemini-max-tokens":
        yield _answer([_candidate([{"text": PARTIAL_TEXT}], "MAX_TOKENS")])
        return
    if model == "gemini-safety":
        ratings = [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]
        yield _answer([_candidate(None, "SAFETY", safetyRatings=ratings)])
        return
    if model == "gemini-blocked":
        usage = {"promptTokenCount": 9, "totalTokenCount": 9}
        yield _answer([], usage, promptFeedback={"blockReason": "SAFETY"})
        return
    usage = THINKING_USAGE if model == "gemini-thinking" else GEMINI_USAGE
    if model == "gemini-thinking":
        thought = _candidate([{"text": THOUGHT, "thought": True}])
        yield _answer([thought], {**usage, "candidatesTokenCount": 0})
    words = GEMINI_TEXT.split(" ")
    count = config.get("candidateCount", 1)
    for i, word in enumerate(words):
        last = i == len(words) - 1 and model != "gemini-no-finish"
        parts = [{"text": word if i == 0 else " " + word}]
        so_far = {**usage, "candidatesTokenCount": i + 1,
                  "totalTokenCount": usage["totalTokenCount"] - usage["candidatesTokenCount"] + i + 1}
        yield _answer([_candidate(parts, "STOP" if last else None, k) for k in range(count)], so_far)


def _whole(model: str, body: dict) -> dict:
    """The plain answer: the stream's events as one (texts joined, the last event's usage and finish)."""
    events = list(_events(model, body))
    merged = dict(events[-1])
    if "candidates" in merged:
        merged["candidates"] = []
        for k, last in enumerate(events[-1]["candidates"]):
            parts: list[dict] = []
            for event in events:
                for part in event["candidates"][k].get("content", {}).get("parts", []):
                    prev = parts[-1] if parts else {}
                    if "text" in part and "text" in prev and part.get("thought") == prev.get("thought"):
                        parts[-1] = {**prev, "text": prev["text"] + part["text"]}
                    else:
                        parts.append(part)
            candidate = {**last}
            if parts:
                candidate["content"] = {"parts": parts, "role": "model"}
            merged["candidates"].append(candidate)
    return merged


class _GeminiHandler(Handler):
    def answer(self, rec: RecordedRequest) -> None:
        match = _PATH.fullmatch(rec.route)
        if match is None:
            self.send_json(404, _error(404, f"Not found: {rec.route}"))
            return
        if rec.headers.get("x-goog-api-key") != API_KEY:
            reason = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                      "domain": "googleapis.com"}
            self.send_json(400, _error(400, "API key not valid. Please pass a valid API key.", [reason]))
            return
        problem = _problem(rec.body)
        if problem is not None:
            self.send_json(400, _error(400, problem))
            return
        model = match.group(1).split("/", 1)[1]
        body: dict = rec.body  # type: ignore[assignment]
        stream = match.group(2) == "streamGenerateContent"
        if m := _STATUS.fullmatch(model):
            status = int(m.group(1))
            self.send_json(status, _error(status, f"upstream error {status}"))
        elif model in ("gemini-error-in-stream", "gemini-error-mid-stream") and not stream:
            self.send_json(503, _UNAVAILABLE)
        elif model == "gemini-not-json":
            if stream:
                self._start_stream(close=True)
                self._event(b"{not json")
                self.end_chunked()
            else:
                self.send_bytes(200, b"<html>an error page</html>", "application/json")
        elif model == "gemini-shapeless":
            if stream:
                self._start_stream(close=True)
                self._event(b'{"candidates": "none"}')
                self.end_chunked()
            else:
                self.send_json(200, {"candidates": "none"})
        elif not stream:
            self.send_json(200, _whole(model, body))
        elif rec.query.get("alt") != ["sse"]:
            self.send_bytes(200, json.dumps(list(_events(model, body))).encode(), "application/json")
        else:
            self._start_stream(close=model in ("gemini-error-in-stream", "gemini-error-mid-stream"))
            if model == "gemini-error-in-stream":
                self._event(json.dumps(_UNAVAILABLE).encode())
            else:
                for event in _events(model, body):
                    self._event(json.dumps(event).encode())
                    if model == "gemini-error-mid-stream":
                        self._event(json.dumps(_UNAVAILABLE).encode())
                        break
            self.end_chunked()

    def _start_stream(self, close: bool = False) -> None:
        """The head of an SSE answer; ``close`` for a stream the gateway gives up on before its end, so
        neither side waits on (or reuses) a connection the other is dropping."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if close:
            self.send_header("Connection", "close")
        self.end_headers()

    def _event(self, data: bytes) -> None:
        # Google frames its events with CRLF line ends.
        self.send_chunk(b"data: " + data + b"\r\n\r\n")


class GeminiUpstream(Upstream):
    """The API; ``url`` is what a provider's ``api_base`` names (``.../v1beta``)."""

    def __init__(self) -> None:
        super().__init__(_GeminiHandler)
        self.url = f"http://127.0.0.1:{self.port}/v1beta"
