"""A loopback HTTP/1.1 upstream that speaks OpenAI's wire format for every endpoint, with scripted faults.

The upstream serves ``POST <any prefix>/<OpenAI path>`` for chat and text completions, embeddings,
moderations, audio transcriptions, translations and speech, image generations, edits and variations,
and the Responses API. Every request is recorded (path with its query, lower-cased headers, the parsed
JSON body, or the parsed multipart form). What it does is chosen by the ``model`` field (of the JSON
body or the form), which the gateway fills from the provider's configured ``model_name``:

On every endpoint:

``status-NNN``
    Answers status NNN with an OpenAI-shaped error body whose message is ``upstream error NNN``.

On ``/chat/completions`` (``_chat``):

``ok`` (or any name not listed below)
    A canned ``chat.completion`` whose content is ``upstream says hi`` (``CONTENT``) and whose usage is
    ``USAGE``. With ``"stream": true``: SSE events, a role delta, one content delta per word of ``CONTENT``,
    a final chunk with ``finish_reason: "stop"``, a usage chunk with ``choices: []`` when
    ``stream_options.include_usage`` is true, then ``data: [DONE]``. Streams use chunked encoding and keep
    the connection alive, as api.openai.com does.
``tool-call``
    Calls each tool of the request once, the k-th with ``tool_arguments(k)`` (``finish_reason:
    "tool_calls"``; streamed, the arguments come in several deltas); once the last message is a ``tool``
    message, answers ``the tool said: <its content>`` instead.
``slow-MS``
    Waits MS milliseconds, then answers as ``ok`` (streams: waits before the response head).
``stream-delay-MS-N``
    Streams a role delta, then N content deltas (``word0 `` ... ``wordN-1 ``) with MS milliseconds before
    each, then the final chunk and ``[DONE]``. Answers as ``ok`` when not streaming.
``reset``
    Reads the request, then resets the TCP connection (SO_LINGER 0 + close) without answering.
``reset-mid-stream-K``
    Sends the response head and K events (role delta first), then resets the connection.
``close-mid-stream-K``
    Sends the response head and K events, then ends the chunked body cleanly without ``[DONE]``.
``hang-after-headers``
    Sends a 200 response head (event-stream when streaming, else a ``Content-Length`` that never comes),
    then nothing until the client goes away.

On the other endpoints every model answers as OpenAI does, from the request (see each ``_`` method of
``upstream_endpoints.EndpointsHandler``); ``gated`` (speech, Responses stream) sends the first piece, then
waits for ``Upstream.release()``.

When the client goes away before the upstream finished answering (it closed the connection, or a write
failed), the record's ``aborted_at`` is set to ``time.monotonic()`` of the moment it was noticed: the
upstream watches the socket while it waits, so a closed connection is seen within ``upstream_wire.POLL_S``.

This module holds the ``Upstream`` (server and recording), the routing, chat completions and the fault
modes; ``upstream_endpoints`` the other endpoints and their canned answers; ``upstream_wire`` the HTTP
plumbing the Azure and Anthropic upstreams share too (request parsing, the base ``Handler`` and its wire
helpers).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable

from upstream_endpoints import (
    CONTENT,
    EMBEDDING_DIMENSIONS,
    FLAGGED_WORD,
    TRANSCRIPT,
    TRANSLATION,
    USAGE,
    EndpointsHandler,
    embedding_vector,
    responses_events,
    responses_object,
    speech_bytes,
)
from upstream_wire import (
    HANG_LIMIT_S,
    POLL_S,
    FilePart,
    Form,
    Handler,
    RecordedRequest,
    Server,
    free_port,
    openai_error,
    refused_base_url,
)

__all__ = [
    "CONTENT",
    "EMBEDDING_DIMENSIONS",
    "FLAGGED_WORD",
    "TOOL_ARGUMENTS",
    "TRANSCRIPT",
    "TRANSLATION",
    "USAGE",
    "FilePart",
    "Form",
    "Handler",
    "OpenAIHandler",
    "RecordedRequest",
    "Upstream",
    "embedding_vector",
    "free_port",
    "refused_base_url",
    "responses_events",
    "responses_object",
    "speech_bytes",
    "tool_arguments",
]

#: What the ``tool-call`` model passes to the first tool.
TOOL_ARGUMENTS = {"city": "Paris", "unit": "celsius"}

_STATUS = re.compile(r"status-(\d{3})")
_SLOW = re.compile(r"slow-(\d+)")
_STREAM_DELAY = re.compile(r"stream-delay-(\d+)-(\d+)")
_RESET_MID = re.compile(r"reset-mid-stream-(\d+)")
_CLOSE_MID = re.compile(r"close-mid-stream-(\d+)")


def tool_arguments(k: int) -> dict:
    """What tool-calling models pass to the k-th tool of a request: ``TOOL_ARGUMENTS`` to the first."""
    return dict(TOOL_ARGUMENTS) if k == 0 else {**TOOL_ARGUMENTS, "call": k}


class Upstream:
    """A scripted upstream served from daemon threads of the test process; ``handler`` speaks its wire."""

    def __init__(self, handler: type[Handler] | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        #: What ``gated`` models wait for before they finish answering.
        self.gate = threading.Event()
        self._server = Server(("127.0.0.1", 0), handler or OpenAIHandler)
        self._server.upstream = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="test-upstream", daemon=True)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.gate.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received since the last ``clear()``, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
        self.gate.clear()

    def release(self) -> None:
        """Let ``gated`` answers finish."""
        self.gate.set()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` until it holds or ``timeout`` seconds pass; returns its last value."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return predicate()
            time.sleep(POLL_S)
        return True

    def _record(self, rec: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(rec)


class OpenAIHandler(EndpointsHandler):
    """OpenAI's endpoints, found by the path's last segments (any prefix: the api_base may have one)."""

    #: OpenAI path -> (method name, whether the body is a multipart form); longest paths first.
    ROUTES = {
        "/chat/completions": ("_chat", False),
        "/audio/transcriptions": ("_transcription", True),
        "/audio/translations": ("_translation", True),
        "/audio/speech": ("_speech", False),
        "/images/generations": ("_image_generation", False),
        "/images/edits": ("_image_edit", True),
        "/images/variations": ("_image_variation", True),
        "/completions": ("_text_completion", False),
        "/embeddings": ("_embeddings", False),
        "/moderations": ("_moderations", False),
        "/responses": ("_responses", False),
    }

    def openai_path(self, rec: RecordedRequest) -> str | None:
        """The OpenAI path the request is for, or None after answering an error itself."""
        path = next((p for p in self.ROUTES if rec.route.endswith(p)), None)
        if path is None:
            self.send_json(404, openai_error(404, f"no route for {self.path}"))
        return path

    def answer(self, rec: RecordedRequest) -> None:
        path = self.openai_path(rec)
        if path is None:
            return
        method, multipart = self.ROUTES[path]
        if multipart and rec.form is None:
            self.send_json(400, openai_error(400, "upstream expected a well-formed multipart/form-data body"))
            return
        if not multipart and not isinstance(rec.body, dict):
            self.send_json(400, openai_error(400, "upstream got a body that is not a JSON object"))
            return
        if m := _STATUS.fullmatch(rec.model or ""):
            status = int(m.group(1))
            self.send_json(status, openai_error(status, f"upstream error {status}"))
            return
        getattr(self, method)(rec.form if multipart else rec.body)

    # -- chat ------------------------------------------------------------------------------------------

    def _chat(self, body: dict) -> None:
        model = str(body.get("model", ""))
        stream = body.get("stream") is True
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if m := _SLOW.fullmatch(model):
            self.wait(int(m.group(1)) / 1000)
            self._complete(model, stream, include_usage)
        elif m := _STREAM_DELAY.fullmatch(model):
            if not stream:
                self.send_json(200, _completion(model))
                return
            delay, n = int(m.group(1)) / 1000, int(m.group(2))
            self.start_chunked()
            self.send_event(_chunk(model, {"role": "assistant", "content": ""}))
            for i in range(n):
                self.wait(delay)
                self.send_event(_chunk(model, {"content": f"word{i} "}))
            self._finish_stream(model, include_usage)
        elif model == "reset":
            self.reset()
        elif m := _RESET_MID.fullmatch(model):
            self.start_chunked()
            for event in _stream_events(model, include_usage)[: int(m.group(1))]:
                self.send_event(event)
            self.wait(POLL_S)  # let the events leave before the RST discards unsent data
            self.reset()
        elif m := _CLOSE_MID.fullmatch(model):
            self.start_chunked()
            for event in _stream_events(model, include_usage)[: int(m.group(1))]:
                self.send_event(event)
            self.end_chunked()
        elif model == "hang-after-headers":
            if stream:
                self.start_chunked()
            else:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "1000")
                self.end_headers()
            self.wait(HANG_LIMIT_S)
            self.close_connection = True
        elif model == "tool-call":
            self._tool_call(body, stream, include_usage)
        else:
            self._complete(model, stream, include_usage)

    def _complete(self, model: str, stream: bool, include_usage: bool) -> None:
        if not stream:
            self.send_json(200, _completion(model))
            return
        self.start_chunked()
        for event in _stream_events(model, include_usage):
            self.send_event(event)
        self.end_chunked()

    def _finish_stream(self, model: str, include_usage: bool) -> None:
        self.send_event(_chunk(model, {}, finish_reason="stop"))
        if include_usage:
            self.send_event(_usage_chunk(model))
        self.send_event(b"[DONE]")
        self.end_chunked()

    def _tool_call(self, body: dict, stream: bool, include_usage: bool) -> None:
        model = body["model"]
        last = (body.get("messages") or [{}])[-1]
        if last.get("role") == "tool":
            text = f"the tool said: {last.get('content')}"
            if not stream:
                self.send_json(200, _completion(model, text))
                return
            self.start_chunked()
            self.send_event(_chunk(model, {"role": "assistant", "content": text}))
            self._finish_stream(model, include_usage)
            return
        calls = []
        for k, tool in enumerate(body["tools"]):
            function = {"name": tool["function"]["name"], "arguments": json.dumps(tool_arguments(k))}
            calls.append({"id": f"call_upstream_{k + 1}", "type": "function", "function": function})
        if not stream:
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            self.send_json(200, _completion(model, message=message, finish_reason="tool_calls"))
            return
        self.start_chunked()
        for k, call in enumerate(calls):
            # One call after another, as OpenAI streams them: the opening delta, then the arguments in pieces.
            opening = {"index": k, **call, "function": {**call["function"], "arguments": ""}}
            delta = {"role": "assistant", "content": None} if k == 0 else {}
            self.send_event(_chunk(model, {**delta, "tool_calls": [opening]}))
            arguments = call["function"]["arguments"]
            third = len(arguments) // 3
            for piece in (arguments[:third], arguments[third:2 * third], arguments[2 * third:]):
                more = {"index": k, "function": {"arguments": piece}}
                self.send_event(_chunk(model, {"tool_calls": [more]}))
        self.send_event(_chunk(model, {}, finish_reason="tool_calls"))
        if include_usage:
            self.send_event(_usage_chunk(model))
        self.send_event(b"[DONE]")
        self.end_chunked()


# -- payloads ------------------------------------------------------------------------------------------


def _completion(model: str, text: str = CONTENT, *, message: dict | None = None,
                finish_reason: str = "stop") -> dict:
    return {
        "id": "chatcmpl-upstream-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_upstream",
        "choices": [
            {
                "index": 0,
                "message": message or {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": dict(USAGE),
    }


def _chunk(model: str, delta: dict, finish_reason: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-upstream-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
    ).encode()


def _usage_chunk(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-upstream-1",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": dict(USAGE),
        }
    ).encode()


def _stream_events(model: str, include_usage: bool) -> list[bytes]:
    """The ``data:`` payloads of a complete ``ok`` stream, ``[DONE]`` included."""
    words = CONTENT.split(" ")
    events = [_chunk(model, {"role": "assistant", "content": ""})]
    events += [_chunk(model, {"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    events.append(_chunk(model, {}, finish_reason="stop"))
    if include_usage:
        events.append(_usage_chunk(model))
    events.append(b"[DONE]")
    return events
