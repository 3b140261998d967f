"""An in-process provider for offline use, tests and benchmarks; ``model_name`` picks its behaviour.

- ``echo``: answers with the last user message's text.
- ``slow``: waits ``SLOW_DELAY_S`` before answering (before the first chunk when streaming).
- ``error``: always fails as an upstream 500 would.
- ``flaky``: the 1st, 3rd, 5th, ... call fails as a 500; the others succeed.
- ``rate_limit``: always fails as a 429.
- ``block-MS``: holds the worker's hub (no greenlet runs) for MS milliseconds, as CPU-bound or
  blocking code would; for tests of the heartbeat that replaces such a worker.
- anything else: a fixed text.

It serves chat, legacy completions (``/completions``) and embeddings (a small vector derived from
each input), so the offline config can show those endpoints too.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct
import time
import uuid
from typing import Any

import gevent
import ujson

from providers.base import (
    Attempt,
    ChatRequest,
    ChatResult,
    ChunkStream,
    Forwarded,
    ForwardRequest,
    Provider,
    ProviderHTTPError,
)
from providers.http import UpstreamClient

__all__ = ["DummyProvider", "DEFAULT_TEXT", "SLOW_DELAY_S"]

TYPE = "dummy"
DEFAULT_TEXT = "Hello from the budgateway dummy provider."
SLOW_DELAY_S = 2.0


#: The length of the dummy's embedding vectors.
EMBEDDING_DIMENSIONS = 8


class DummyProvider(Provider):
    type = TYPE
    capabilities = frozenset({"chat", "completions", "embedding"})

    def __init__(self, config, credential) -> None:
        super().__init__(config, credential)
        self._calls = itertools.count(1)

    def _answer_text(self, request: ChatRequest) -> str:
        """Fail as configured, or return the text to answer with."""
        behaviour = self.config.model_name
        call = next(self._calls)
        if behaviour == "error":
            raise ProviderHTTPError(500, "dummy provider error", type_="server_error")
        if behaviour == "flaky" and call % 2 == 1:
            raise ProviderHTTPError(500, f"dummy provider flaky failure (call {call})", type_="server_error")
        if behaviour == "rate_limit":
            raise ProviderHTTPError(429, "dummy provider rate limit", type_="rate_limit_error", code="rate_limit_exceeded")
        if behaviour == "slow":
            gevent.sleep(SLOW_DELAY_S)
        if behaviour.startswith("block-") and behaviour[6:].isdigit():
            until = time.monotonic() + int(behaviour[6:]) / 1000.0
            while time.monotonic() < until:
                pass  # NOTE: deliberately never yields
        if behaviour == "echo":
            return _last_user_text(request.body.get("messages"))
        return DEFAULT_TEXT

    def _usage(self, request: ChatRequest, pieces: int) -> dict[str, int]:
        prompt = len(ujson.dumps(request.body.get("messages", []))) // 4 or 1
        return {"prompt_tokens": prompt, "completion_tokens": pieces, "total_tokens": prompt + pieces}

    def chat(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChatResult:
        text = self._answer_text(request)
        if request.path == "/completions":
            return ChatResult(
                {
                    "id": "cmpl-" + uuid.uuid4().hex,
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": self.config.model_name,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                    "usage": self._usage(request, len(_words(text))),
                }
            )
        return ChatResult(
            {
                "id": "chatcmpl-" + uuid.uuid4().hex,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.config.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": self._usage(request, len(_words(text))),
            }
        )

    def chat_stream(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChunkStream:
        text = self._answer_text(request)
        return self._chunks(request, text)

    def _chunks(self, request: ChatRequest, text: str) -> ChunkStream:
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.config.model_name,
        }

        legacy = request.path == "/completions"
        if legacy:
            base["object"] = "text_completion"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            if legacy:
                choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return ujson.dumps({**base, "choices": [choice]}).encode()

        words = _words(text)
        if not legacy:
            yield chunk({"role": "assistant", "content": ""})
        for word in words:
            yield chunk({"content": word})
        yield chunk({}, "stop")
        yield ujson.dumps({**base, "choices": [], "usage": self._usage(request, len(words))}).encode()


    def forward(self, http: UpstreamClient, request: ForwardRequest, attempt: Attempt) -> Forwarded:
        if request.capability != "embedding" or request.json is None:
            raise ProviderHTTPError(400, f"the dummy provider does not serve {request.capability}")
        self._answer_text(ChatRequest({}, request.model))  # the configured failure behaviours apply
        inputs = request.json.get("input")
        if not isinstance(inputs, list) or inputs and isinstance(inputs[0], int):
            inputs = [inputs]
        as_base64 = request.json.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vector = _vector(ujson.dumps(item).encode())
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(len(ujson.dumps(item)) // 4 or 1 for item in inputs)
        body = {
            "object": "list",
            "data": data,
            "model": self.config.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Forwarded("application/json", body=ujson.dumps(body).encode())


def _vector(seed: bytes) -> list[float]:
    digest = hashlib.sha256(seed).digest()
    return [round(b / 255.0 - 0.5, 6) for b in digest[:EMBEDDING_DIMENSIONS]]


def _words(text: str) -> list[str]:
    """Split into chunks that join back to the text: 'a b' -> ['a', ' b']."""
    parts = text.split(" ")
    return [parts[0]] + [" " + p for p in parts[1:]] if text else []


def _last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
