"""``POST /v1/messages``: Anthropic's Messages API, plain and streamed, served by any chat model.

The request is translated to an OpenAI chat request, routed like any other, and the answer (or
each chunk) translated back; errors take Anthropic's shape on this route.
"""

from __future__ import annotations

import time

import falcon

from gateway.anthropic_messages import ChunksToEvents, chat_to_message, error_event, messages_to_chat
from gateway.relay import EventStream
from gateway.resources.respond import inference_headers, json_response
from gateway.routing import Router
from providers.base import ChatRequest

__all__ = ["Messages"]


class Messages:
    capability = "chat"
    required = ("messages", "max_tokens")
    error_format = "anthropic"

    def __init__(self, router: Router) -> None:
        self._router = router

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        request = ChatRequest(messages_to_chat(ctx.body), ctx.model)
        if request.stream:
            answer = self._router.chat_stream(ctx.route, request, ctx.peer, ctx.outcome)
            label = answer.candidate.label
            ctx.stream = resp.stream = EventStream(
                answer.first,
                answer.rest,
                ChunksToEvents(ctx.model),
                error_event,
                answer.deadline,
                ctx.peer,
                label,
                outcome=ctx.outcome,
                pricing=answer.candidate.pricing,
            )
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            inference_headers(resp, label, answer.attempts)
            return
        answer = self._router.chat(ctx.route, request, ctx.peer, ctx.outcome)
        json_response(resp, chat_to_message(answer.result.body, ctx.model))
        inference_headers(resp, answer.candidate.label, answer.attempts, time.monotonic() - ctx.started - answer.upstream_s)
