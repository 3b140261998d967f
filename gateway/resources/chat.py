"""``POST /v1/chat/completions`` and ``POST /v1/completions``: plain and streamed, through the model's chain."""

from __future__ import annotations

import time

import falcon

from gateway.errors import InvalidRequestError
from gateway.relay import SSEStream
from gateway.resources.respond import inference_headers, json_response
from gateway.routing import Router
from providers.base import ChatRequest

__all__ = ["ChatCompletions", "Completions"]


class ChatCompletions:
    capability = "chat"
    path = "/chat/completions"
    required = ("messages",)

    def __init__(self, router: Router) -> None:
        self._router = router

    def _check(self, body: dict) -> None:
        if not isinstance(body["messages"], list):
            raise InvalidRequestError("'messages' must be an array", param="messages")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        self._check(ctx.body)
        request = ChatRequest(ctx.body, ctx.model, self.path)
        if request.stream:
            answer = self._router.chat_stream(ctx.route, request, ctx.peer, ctx.outcome)
            label = answer.candidate.label
            ctx.stream = resp.stream = SSEStream(
                answer.first, answer.rest, ctx.model, answer.deadline, ctx.peer, label,
                include_usage=request.include_usage, outcome=ctx.outcome, pricing=answer.candidate.pricing,
            )
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            inference_headers(resp, label, answer.attempts)
            return
        answer = self._router.chat(ctx.route, request, ctx.peer, ctx.outcome)
        body = answer.result.body
        body["model"] = ctx.model
        json_response(resp, body)
        inference_headers(resp, answer.candidate.label, answer.attempts, time.monotonic() - ctx.started - answer.upstream_s)


class Completions(ChatCompletions):
    """The legacy text completions: the same flow, another path and body."""

    capability = "completions"
    path = "/completions"
    required = ("prompt",)

    def _check(self, body: dict) -> None:
        pass
