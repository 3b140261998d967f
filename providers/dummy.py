"""An in-process provider for offline use, tests and benchmarks; ``model_name`` picks its behaviour.

- ``echo``: answers with the last user message's text.
- ``slow``: waits ``SLOW_DELAY_S`` before answering (before the first chunk when streaming).
- ``error``: always fails as an upstream 500 would.
- ``flaky``: the 1st, 3rd, 5th, ... call fails as a 500; the others succeed.
- ``rate_limit``: always fails as a 429.
- anything else: a fixed text.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import gevent
import ujson

from providers.base import Attempt, ChatRequest, ChatResult, ChunkStream, Provider, ProviderHTTPError
from providers.http import UpstreamClient

__all__ = ["DummyProvider", "DEFAULT_TEXT", "SLOW_DELAY_S"]

TYPE = "dummy"
DEFAULT_TEXT = "Hello from the budgateway dummy provider."
SLOW_DELAY_S = 2.0


class DummyProvider(Provider):
    type = TYPE
    capabilities = frozenset({"chat"})

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
        if behaviour == "echo":
            return _last_user_text(request.body.get("messages"))
        return DEFAULT_TEXT

    def _usage(self, request: ChatRequest, pieces: int) -> dict[str, int]:
        prompt = len(ujson.dumps(request.body.get("messages", []))) // 4 or 1
        return {"prompt_tokens": prompt, "completion_tokens": pieces, "total_tokens": prompt + pieces}

    def chat(self, http: UpstreamClient, request: ChatRequest, attempt: Attempt) -> ChatResult:
        text = self._answer_text(request)
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

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return ujson.dumps({**base, "choices": [choice]}).encode()

        words = _words(text)
        yield chunk({"role": "assistant", "content": ""})
        for word in words:
            yield chunk({"content": word})
        yield chunk({}, "stop")
        if request.include_usage:
            yield ujson.dumps({**base, "choices": [], "usage": self._usage(request, len(words))}).encode()


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
