"""``POST /v1/chat/completions``: plain and streamed chat completions through the model's chain."""

from __future__ import annotations

import time

import falcon

from gateway.errors import InvalidRequestError
from gateway.relay import CLIENT_SOCKET_KEY, SSEStream
from gateway.resources.respond import json_response
from gateway.routing import Router
from providers.base import ChatRequest

__all__ = ["ChatCompletions"]


class ChatCompletions:
    capability = "chat"
    required = ("messages",)

    def __init__(self, router: Router) -> None:
        self._router = router

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        if not isinstance(ctx.body["messages"], list):
            raise InvalidRequestError("'messages' must be an array", param="messages")
        request = ChatRequest(ctx.body, ctx.model)
        if request.stream:
            answer = self._router.chat_stream(ctx.route, request)
            stream = SSEStream(
                answer.first,
                answer.rest,
                ctx.model,
                answer.deadline,
                req.env.get(CLIENT_SOCKET_KEY),
                answer.candidate.label,
            )
            ctx.stream = stream
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            resp.set_header("x-budgateway-provider", answer.candidate.label)
            resp.set_header("x-budgateway-attempts", str(answer.attempts))
            resp.stream = stream
            return
        answer = self._router.chat(ctx.route, request)
        body = answer.result.body
        body["model"] = ctx.model
        json_response(resp, body)
        overhead_ms = (time.monotonic() - ctx.started - answer.upstream_s) * 1000.0
        resp.set_header("x-budgateway-provider", answer.candidate.label)
        resp.set_header("x-budgateway-attempts", str(answer.attempts))
        resp.set_header("x-budgateway-overhead-ms", f"{overhead_ms:.3f}")
