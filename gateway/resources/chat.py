"""``POST /v1/chat/completions`` and ``POST /v1/completions``: plain and streamed, through the model's chain.

A chat ``model`` of ``tensorzero::function_name::F`` runs TensorZero function ``F`` instead (its
messages made the function's input, ``function_calls.OpenAIAnswers`` answering); any other model
takes the body as it is, its ``tensorzero::*`` fields taken out first (tags recorded, ``extra_body``
edits applied).
"""

from __future__ import annotations

import time

import falcon

from gateway.errors import InvalidRequestError
from gateway.pipeline.resolve import model_field
from gateway.relay import SSEStream
from gateway.resources.function_calls import FunctionCalls, OpenAIAnswers, well_formed
from gateway.resources.respond import inference_headers, json_response
from gateway.routing import Router
from gateway.tensorzero.native import scoped_edits
from gateway.tensorzero.openai_compat import FUNCTION_PREFIX, consume_extensions, native_body
from providers.base import ChatRequest

__all__ = ["ChatCompletions", "Completions"]


class ChatCompletions:
    capability = "chat"
    path = "/chat/completions"
    required = ("messages",)

    def __init__(self, router: Router, calls: FunctionCalls | None = None) -> None:
        self._router = router
        self._calls = calls
        self._present = OpenAIAnswers()

    def target(self, ctx, body: dict) -> str:
        model = model_field(body)
        if self._calls is not None and model.startswith(FUNCTION_PREFIX):
            return self._calls.plan(ctx, well_formed(native_body, body))
        return model

    def _check(self, body: dict) -> None:
        if not isinstance(body["messages"], list):
            raise InvalidRequestError("'messages' must be an array", param="messages")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        self._check(ctx.body)
        if ctx.inference is not None:
            # NOTE: made again from the body as the stages left it (a guardrail may have redacted it).
            native = well_formed(native_body, ctx.body)
            native["episode_id"] = ctx.inference.episode_id
            self._calls.run(req, resp, native, self._present)
            return
        body, edits = ctx.body, ()
        if any(key.startswith("tensorzero::") for key in body):
            body = dict(body)
            edits = _extensions(ctx, consume_extensions(body))
        request = ChatRequest(body, ctx.model, self.path, edits=edits)
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


def _extensions(ctx, taken: dict) -> tuple[dict, ...]:
    """What a model request's ``tensorzero::*`` fields ask: tags on the record, and the
    ``extra_body`` edits the provider applies (the others have no meaning without a function)."""
    if taken.get("credentials"):
        # NOTE: as /inference: refused, not ignored (the caller would believe its key was used, and
        # the body it sits in is what the analytics rows keep).
        raise InvalidRequestError("'tensorzero::credentials' is not supported: providers use the gateway's own keys",
                                  param="tensorzero::credentials")
    tags = taken.get("tags")
    if isinstance(tags, dict):
        ctx.outcome.tags.update({k: v for k, v in tags.items() if isinstance(k, str) and isinstance(v, str)})
    return scoped_edits(taken.get("extra_body"), "tensorzero::extra_body", ctx.model)
