"""``POST /inference``: TensorZero's native endpoint, plain and streamed.

The resolve stage asks ``target`` which model the request runs first (the plan of
``tensorzero.inference``); here each variant of the plan is tried in order: its OpenAI chat body
rendered, sent through the variant's model chain, and its answer (or each chunk) made into
TensorZero's shape. A variant that fails gives way to the next; the last failure is the answer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import falcon

from gateway.catalog import Catalog
from gateway.errors import GatewayError, InvalidRequestError
from gateway.relay import EventStream
from gateway.resources.respond import inference_headers, json_response
from gateway.routing import Router
from gateway.tensorzero.answers import ChunksToTensorZero, answer, error_event
from gateway.tensorzero.functions import Function, Variant
from gateway.tensorzero.inference import Plan, Record, plan
from gateway.tensorzero.native import chat_body, tool_set
from gateway.tensorzero.templates import Templates
from providers.base import ChatRequest

__all__ = ["Inference"]


class Inference:
    capability = "chat"
    path = "/inference"
    required = ()
    error_format = "tensorzero"

    def __init__(self, router: Router, catalog: Catalog, functions: Mapping[str, Function], templates: Templates) -> None:
        self._router = router
        self._catalog = catalog
        self._functions = functions
        self._templates = templates

    def target(self, ctx: Any, body: dict) -> tuple[str, bool]:
        """The model the request runs first, and whether it is named directly (a function's models
        are the config's own: a key that may call the function may use them, grants or not)."""
        ctx.inference = found = plan(body, self._functions)
        first = _served(found)[0]
        return first.table.model, body.get("function_name") is not None

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        found: Plan = ctx.inference
        body = ctx.body
        tools = tool_set(found.function, body)
        stream = body.get("stream") is True
        ctx.outcome.tags.update(found.tags)
        failure: GatewayError | None = None
        for i, variant in enumerate(_served(found)):
            route = ctx.route if i == 0 else self._catalog.resolve(variant.table.model)
            chat = chat_body(found.function, variant, body, tools, self._templates, found.output_schema)
            if stream:
                chat["stream"] = True
                chat["stream_options"] = {"include_usage": True}
            request = ChatRequest(chat, variant.table.model, "/chat/completions")
            head = {"inference_id": ctx.outcome.inference_id, "episode_id": found.episode_id,
                    "variant_name": variant.name}
            record = Record(found, variant, body, {"chat_completion": _params(chat)}, _tool_params(tools))
            try:
                if stream:
                    self._stream(req, resp, route, request, head, record)
                else:
                    self._answer(req, resp, route, request, head, record, tools)
                return
            except GatewayError as e:
                failure = e
        raise failure if failure is not None else InvalidRequestError("no variant could run")

    def _answer(self, req, resp, route, request: ChatRequest, head: dict, record: Record, tools) -> None:
        ctx = req.context
        found: Plan = ctx.inference
        got = self._router.chat(route, request, ctx.peer, ctx.outcome)
        made = answer(got.result.body, found.function.type, tools, found.output_schema, head, ctx.outcome.cost)
        record.output = made.output
        ctx.outcome.inference = None if found.dryrun else record
        json_response(resp, made.body)
        inference_headers(resp, got.candidate.label, got.attempts, time.monotonic() - ctx.started - got.upstream_s)

    def _stream(self, req, resp, route, request: ChatRequest, head: dict, record: Record) -> None:
        ctx = req.context
        found: Plan = ctx.inference
        got = self._router.chat_stream(route, request, ctx.peer, ctx.outcome)
        translator = ChunksToTensorZero(found.function.type, head, got.candidate.pricing)
        label = got.candidate.label
        ctx.stream = resp.stream = EventStream(got.first, got.rest, translator, error_event, got.deadline, ctx.peer,
                                               label, outcome=ctx.outcome, pricing=got.candidate.pricing)
        started = ctx.started

        def finished(stream: EventStream) -> None:
            record.output = _streamed_output(translator, found.function.type)
            first = ctx.outcome.first_byte
            record.ttft_ms = None if first is None else round((first - started) * 1000.0, 3)

        ctx.stream.on_close(finished)
        ctx.outcome.inference = None if found.dryrun else record
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        inference_headers(resp, label, got.attempts)


def _served(found: Plan) -> list[Variant]:
    """The plan's variants this gateway can run; a request that leaves none is a 400."""
    served = [v for v in found.variants if v.served]
    if not served:
        kinds = sorted({v.type for v in found.variants})
        raise InvalidRequestError(f"variant type {kinds[0]!r} is not supported yet (function "
                                  f"{found.function.name!r}); use chat_completion variants", param="variant_name")
    return served


def _params(chat: dict) -> dict:
    return {k: v for k, v in chat.items() if k not in ("messages", "tools", "tool_choice", "stream", "stream_options")}


def _tool_params(tools) -> dict:
    return {"tools_available": [t.openai()["function"] for t in tools.tools.values()], "tool_choice": tools.choice,
            "parallel_tool_calls": tools.parallel}


def _streamed_output(translator: ChunksToTensorZero, function_type: str) -> Any:
    if function_type == "json":
        raw = "".join(translator.text) or "".join(c["raw_arguments"] for c in translator.calls.values())
        return {"raw": raw, "parsed": None}
    out: list[dict] = []
    if translator.thought:
        out.append({"type": "thought", "text": "".join(translator.thought)})
    if translator.text:
        out.append({"type": "text", "text": "".join(translator.text)})
    out += [{"type": "tool_call", "id": call_id, **call} for call_id, call in translator.calls.items()]
    return out
