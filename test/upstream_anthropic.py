"""A loopback Anthropic Messages API: ``POST /v1/messages``, plain and streamed, as Anthropic documents it.

Wire format: https://docs.anthropic.com/en/api/messages, .../messages-streaming and .../errors. Requests
must carry ``x-api-key: API_KEY`` (else 401 ``authentication_error``) and a known ``anthropic-version``
(else 400), and be valid Messages requests: ``model``, ``max_tokens`` and a non-empty ``messages`` array of
``user``/``assistant`` turns whose text blocks are not empty, and whose every ``tool_use`` is answered by a
``tool_result`` in the next turn (else 400 ``invalid_request_error``, as Anthropic answers).

The ``model`` picks the behaviour:

``claude-ok`` (or any name not listed below)
    One text block ``CLAUDE_TEXT``, ``stop_reason: "end_turn"``, usage ``CLAUDE_USAGE``. Streamed: the
    ``event:``-named events ``message_start``, ``content_block_start``, a ``ping``, one
    ``content_block_delta`` (``text_delta``) per word, ``content_block_stop``, ``message_delta`` (stop
    reason, usage), ``message_stop``.
``claude-tool``
    A text block ``TOOL_PREFACE``, then a ``tool_use`` block for each tool of the request, the k-th with
    ``tool_arguments(k)`` (``stop_reason: "tool_use"``); streamed, each input comes as ``input_json_delta``
    events. Once the last turn holds a ``tool_result``, answers ``the tool said: <its text>`` instead.
``claude-overloaded``
    529 with an ``overloaded_error`` body, streamed or not.
``claude-overloaded-in-stream``
    Streamed: 200, ``message_start``, then an ``error`` event (``overloaded_error``). Plain: as above.
``claude-overloaded-mid-stream``
    Streamed: 200, the events of ``claude-ok`` up to its first ``text_delta`` (``PARTIAL_TEXT``), then an
    ``error`` event (``overloaded_error``). Plain: as ``claude-overloaded``.
``status-NNN``
    Status NNN with the Anthropic error type for it and the message ``upstream error NNN``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from upstream import Handler, RecordedRequest, Upstream, tool_arguments

__all__ = ["API_KEY", "API_VERSION", "CLAUDE_TEXT", "CLAUDE_USAGE", "PARTIAL_TEXT", "TOOL_PREFACE",
           "AnthropicUpstream"]

API_KEY = "sk-ant-test-0123456789"
API_VERSION = "2023-06-01"
CLAUDE_TEXT = "claude says hello there"
CLAUDE_USAGE = {"input_tokens": 11, "output_tokens": 5}
TOOL_PREFACE = "Let me check."
#: What ``claude-overloaded-mid-stream`` sends before its error: the first word of ``CLAUDE_TEXT``.
PARTIAL_TEXT = CLAUDE_TEXT.split(" ")[0]
#: The models that fail inside a stream, and the event after which the error event comes.
_IN_STREAM_ERRORS = {"claude-overloaded-in-stream": "message_start",
                     "claude-overloaded-mid-stream": "content_block_delta"}

_STATUS = re.compile(r"status-(\d{3})")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}
_BLOCK_TYPES = frozenset({"text", "image", "tool_use", "tool_result", "document", "thinking",
                          "redacted_thinking"})


def _error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_upstream_01"}


def _problem(body: object) -> str | None:
    """Why Anthropic would refuse this request body, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (an integer >= 1)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    pending: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return f"messages.{i}.content: Input should be a valid list"
        results = {b.get("tool_use_id") for b in blocks
                   if isinstance(b, dict) and b.get("type") == "tool_result"}
        if pending - results:
            missing = ", ".join(sorted(pending - results))
            return (f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {missing}")
        pending = set()
        for j, block in enumerate(blocks):
            if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES:
                return f"messages.{i}.content.{j}: unknown content block type"
            if block["type"] == "text" and not block.get("text"):
                return f"messages.{i}.content.{j}.text: text content blocks must be non-empty"
            if block["type"] == "tool_use":
                pending.add(block.get("id"))
    if pending:
        return "the last message has `tool_use` blocks without results"
    return None


def _tool_result_text(body: dict) -> str | None:
    """The text of a ``tool_result`` in the last turn, if it holds one."""
    content = body["messages"][-1].get("content")
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "tool_result":
            inner = block.get("content")
            if isinstance(inner, list):
                return "".join(b.get("text", "") for b in inner if isinstance(b, dict))
            return inner or ""
    return None


def _blocks(body: dict) -> tuple[list[dict], str]:
    """The answer's content blocks and stop reason."""
    if body["model"] != "claude-tool":
        return [{"type": "text", "text": CLAUDE_TEXT}], "end_turn"
    result = _tool_result_text(body)
    if result is not None:
        return [{"type": "text", "text": f"the tool said: {result}"}], "end_turn"
    tools = [{"type": "tool_use", "id": f"toolu_upstream_0{k + 1}", "name": tool["name"],
              "input": tool_arguments(k)} for k, tool in enumerate(body["tools"])]
    return [{"type": "text", "text": TOOL_PREFACE}, *tools], "tool_use"


def _message(body: dict, content: list[dict], stop_reason: str | None, output_tokens: int) -> dict:
    usage = {"input_tokens": CLAUDE_USAGE["input_tokens"], "output_tokens": output_tokens,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    return {"id": "msg_upstream_01", "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


def _events(body: dict) -> Iterator[dict]:
    """The stream of an answer, as Anthropic sends it (event payloads; each one's ``type`` names it)."""
    blocks, stop_reason = _blocks(body)
    yield {"type": "message_start", "message": _message(body, [], None, 1)}
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            empty = {"type": "text", "text": ""}
            yield {"type": "content_block_start", "index": index, "content_block": empty}
            if index == 0:
                yield {"type": "ping"}
            for i, word in enumerate(block["text"].split(" ")):
                delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
                yield {"type": "content_block_delta", "index": index, "delta": delta}
        else:
            start = {**block, "input": {}}
            yield {"type": "content_block_start", "index": index, "content_block": start}
            arguments = json.dumps(block["input"])
            half = len(arguments) // 2
            for piece in ("", arguments[:half], arguments[half:]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    yield {"type": "message_delta", "delta": delta, "usage": {"output_tokens": CLAUDE_USAGE["output_tokens"]}}
    yield {"type": "message_stop"}


class _AnthropicHandler(Handler):
    def answer(self, rec: RecordedRequest) -> None:
        if not rec.route.endswith("/v1/messages"):
            self.send_json(404, _error("not_found_error", f"Not found: {rec.route}"))
            return
        if rec.headers.get("x-api-key") != API_KEY:
            self.send_json(401, _error("authentication_error", "invalid x-api-key"))
            return
        version = rec.headers.get("anthropic-version")
        if version != API_VERSION:
            problem = "header is required" if version is None else "invalid version"
            self.send_json(400, _error("invalid_request_error", f"anthropic-version: {problem}"))
            return
        problem = _problem(rec.body)
        if problem is not None:
            self.send_json(400, _error("invalid_request_error", problem))
            return
        body: dict = rec.body  # type: ignore[assignment]
        model = body["model"]
        if m := _STATUS.fullmatch(model):
            status = int(m.group(1))
            kind = _ERROR_TYPES.get(status, "api_error")
            self.send_json(status, _error(kind, f"upstream error {status}"))
        elif model == "claude-overloaded" or model in _IN_STREAM_ERRORS and not body.get("stream"):
            self.send_json(529, _error("overloaded_error", "Overloaded"))
        elif model in _IN_STREAM_ERRORS:
            self.start_chunked()
            for event in _events(body):
                self._event(event)
                if event["type"] == _IN_STREAM_ERRORS[model]:
                    break
            self._event(_error("overloaded_error", "Overloaded"))
            self.end_chunked()
        elif body.get("stream") is True:
            self.start_chunked()
            for event in _events(body):
                self._event(event)
            self.end_chunked()
        else:
            blocks, stop_reason = _blocks(body)
            self.send_json(200, _message(body, blocks, stop_reason, CLAUDE_USAGE["output_tokens"]))

    def _event(self, payload: dict) -> None:
        # Every event carries an SSE event name equal to its payload's type.
        self.send_event(json.dumps(payload).encode(), payload["type"])


class AnthropicUpstream(Upstream):
    """The API; ``url`` is what a provider's ``api_base`` names (``.../v1``)."""

    def __init__(self) -> None:
        super().__init__(_AnthropicHandler)
