"""Running a TensorZero function: the variants of its plan tried in order, each one's chat body
rendered and sent through its model's chain, and the answer given in the caller's format.

``/inference`` answers in TensorZero's shape (``NativeAnswers``); ``/v1/chat/completions`` with
``tensorzero::function_name::F`` answers in OpenAI's (``OpenAIAnswers``). A variant that fails gives
way to the next; the last failure is the answer.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import falcon
import gevent

from gateway.catalog import Catalog
from gateway.config.functions import header_problem
from gateway.errors import ClientClosedError, GatewayError, InvalidRequestError
from gateway.outcome import new_inference_id
from gateway.pipeline.resolve import resolve_model
from gateway.relay import EventStream, SSEStream
from gateway.resources.respond import inference_headers, json_response
from gateway.routing import Answer, Router, StreamAnswer
from gateway.tensorzero.answers import ChunksToTensorZero, answer, error_event
from gateway.tensorzero.functions import Function, Variant
from gateway.tensorzero.inference import Plan, Record, plan
from gateway.tensorzero.native import (
    JSON_TOOL,
    ToolSet,
    chat_body,
    chat_params,
    scoped_edits,
    tool_params,
    tool_set,
)
from gateway.tensorzero.templates import Templates
from providers.base import TRANSLATION_ERRORS, ChatRequest
from providers.jsonio import dumps

__all__ = ["FunctionCalls", "NativeAnswers", "OpenAIAnswers", "served", "well_formed"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class Presenter(Protocol):
    def answer(self, req: falcon.Request, resp: falcon.Response, got: Answer, head: dict, record: Record,
               tools: ToolSet) -> None: ...

    def stream(self, req: falcon.Request, resp: falcon.Response, got: StreamAnswer, head: dict,
               record: Record) -> EventStream | SSEStream: ...


class FunctionCalls:
    def __init__(self, router: Router, catalog: Catalog, functions: Mapping[str, Function], templates: Templates) -> None:
        self._router = router
        self._catalog = catalog
        self.functions = functions
        self._templates = templates

    def plan(self, ctx: Any, body: Mapping[str, Any]) -> str:
        """Plan the request (in the resolve stage): the model it runs first."""
        ctx.inference = found = well_formed(plan, body, self.functions)
        return served(found)[0].table.model

    def run(self, req: falcon.Request, resp: falcon.Response, body: Mapping[str, Any], present: Presenter) -> None:
        ctx = req.context
        found: Plan = ctx.inference
        tools = well_formed(tool_set, found.function, body)
        stream = body.get("stream") is True
        ctx.outcome.tags.update(found.tags)
        failure: GatewayError | None = None
        for i, variant in enumerate(served(found)):
            try:
                route = ctx.route if i == 0 else resolve_model(ctx, self._catalog, variant.table.model)
            except GatewayError as e:  # a fallback variant's model the key is not granted
                failure = e
                continue
            if route.config.guardrail_profile != ctx.route.config.guardrail_profile:
                # NOTE: the stages scanned (and scan the answer) under the first model's profile: a
                # variant guarded otherwise is not run unguarded.
                log.warning("function %s: variant %s skipped: its model's guardrail profile differs from %s's",
                            found.function.name, variant.name, ctx.route.name)
                continue
            chat = well_formed(chat_body, found.function, variant, body, tools, self._templates, found.output_schema)
            if stream:
                chat["stream"] = True
                chat["stream_options"] = {"include_usage": True}
            edits = scoped_edits(body.get("extra_body"), "extra_body", variant.table.model, variant.name)
            request = ChatRequest(chat, variant.table.model, "/chat/completions", extra_headers(variant, body), edits)
            head = {"inference_id": ctx.outcome.inference_id, "episode_id": found.episode_id,
                    "variant_name": variant.name}
            record = Record(found, variant, body, {"chat_completion": chat_params(chat)}, tool_params(tools))
            retries = getattr(variant.table, "retries", None)
            for attempt in range(1 + (retries.num_retries if retries is not None else 0)):
                if attempt:
                    # NOTE: TensorZero's variant retries: truncated exponential backoff with jitter.
                    gevent.sleep(min(retries.max_delay_s, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2))
                try:
                    self._send(req, resp, route, request, head, record, tools, present, variant)
                    ctx.outcome.inference = None if found.dryrun else record
                    return
                except ClientClosedError:
                    raise  # nobody is waiting for another variant's answer
                except GatewayError as e:
                    failure = e
                    if 400 <= e.status < 500 and e.status != 429:
                        break  # the request's own error: another try of this variant would get it again
        raise failure if failure is not None else InvalidRequestError("no variant could run")

    def _send(self, req, resp, route, request: ChatRequest, head: dict, record: Record, tools: ToolSet,
              present: Presenter, variant: Variant) -> None:
        ctx = req.context
        limits = getattr(variant.table, "timeouts", None)
        started = time.monotonic()
        if request.stream:
            with _variant_timer(limits.streaming.ttft_ms if limits is not None else None, variant):
                got = self._router.chat_stream(route, request, ctx.peer, ctx.outcome)
            total = limits.streaming.total_ms if limits is not None else None
            if total is not None:
                # NOTE: the variant's whole-stream limit, from when it was asked, bounds the relay too.
                end = started + total / 1000.0
                got.deadline = end if got.deadline is None else min(got.deadline, end)
            relay = ctx.stream = resp.stream = present.stream(req, resp, got, head, record)

            def finished(_stream, started=ctx.started) -> None:
                first = ctx.outcome.first_byte
                record.ttft_ms = None if first is None else round((first - started) * 1000.0, 3)

            relay.on_close(finished)
            resp.content_type = "text/event-stream"
            resp.set_header("Cache-Control", "no-cache")
            inference_headers(resp, got.candidate.label, got.attempts)
            return
        with _variant_timer(limits.non_streaming.total_ms if limits is not None else None, variant):
            got = self._router.chat(route, request, ctx.peer, ctx.outcome)
        present.answer(req, resp, got, head, record, tools)
        inference_headers(resp, got.candidate.label, got.attempts, time.monotonic() - ctx.started - got.upstream_s)


class VariantTimeoutError(GatewayError):
    """A variant's own ``timeouts`` ran out: the next variant is tried."""

    status, type, code = 504, "server_error", "timeout"


def _variant_timer(ms: int | None, variant: Variant) -> gevent.Timeout | contextlib.nullcontext:
    if ms is None:
        return contextlib.nullcontext()
    return gevent.Timeout(ms / 1000.0, VariantTimeoutError(f"variant {variant.name!r} timed out after {ms} ms"))


def extra_headers(variant: Variant, body: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The headers a variant's request adds: the variant's ``extra_headers`` (a table, or TensorZero's
    list of ``{name, value | delete}``), then the request's that apply to it (None deletes)."""
    out: dict[str, str | None] = {}
    config = getattr(variant.table, "extra_headers", None)
    if isinstance(config, dict):
        out.update(config)
    elif config is not None:
        out.update((edit.name, None if edit.delete else edit.value) for edit in config)
    asked = body.get("extra_headers")
    if asked is not None:
        if not isinstance(asked, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in asked):
            raise InvalidRequestError("'extra_headers' must be an array of {name, value | delete}",
                                      param="extra_headers")
        model = getattr(variant.table, "model", None)
        for e in asked:
            problem = header_problem(e["name"], None if e.get("delete") else e.get("value"))
            if problem or not e.get("delete") and not isinstance(e.get("value"), str):
                raise InvalidRequestError(f"extra_headers: {problem or 'each needs a string value or delete'}",
                                          param="extra_headers")
            if e.get("variant_name") in (None, variant.name) and e.get("model_name") in (None, model):
                out[e["name"]] = None if e.get("delete") else e["value"]
    return out or None


class NativeAnswers:
    """``/inference``: TensorZero's answer and chunks."""

    def answer(self, req, resp, got: Answer, head: dict, record: Record, tools: ToolSet) -> None:
        ctx = req.context
        found: Plan = ctx.inference
        made = answer(got.result.body, found.function.type, tools, found.output_schema, head, ctx.outcome.cost)
        record.output = made.output
        body = ctx.body
        if body.get("include_raw_response") or body.get("include_raw_usage") or body.get("include_original_response"):
            _raw(made.body, body, got, ctx.outcome.attempts[-1] if ctx.outcome.attempts else None)
        json_response(resp, made.body)

    def stream(self, req, resp, got: StreamAnswer, head: dict, record: Record) -> EventStream:
        ctx = req.context
        found: Plan = ctx.inference
        translator = ChunksToTensorZero(found.function.type, head, ctx.outcome)
        relay = EventStream(got.first, got.rest, translator, error_event, got.deadline, ctx.peer, got.candidate.label,
                            outcome=ctx.outcome, pricing=got.candidate.pricing)
        relay.on_close(lambda _stream: setattr(record, "output", translator.output()))
        return relay


class OpenAIAnswers:
    """``/v1/chat/completions`` with ``tensorzero::function_name::F``: OpenAI's answer and chunks, the
    model named ``tensorzero::function_name::F::variant_name::V`` and the episode id added."""

    def _name(self, req, head: dict) -> str:
        return f"tensorzero::function_name::{req.context.inference.function.name}::variant_name::{head['variant_name']}"

    def answer(self, req, resp, got: Answer, head: dict, record: Record, tools: ToolSet) -> None:
        found: Plan = req.context.inference
        body = dict(got.result.body)
        made = answer(body, found.function.type, tools, found.output_schema, head, req.context.outcome.cost)
        record.output = made.output
        if found.function.type == "json":
            choices = []
            for choice in body.get("choices") or ():
                message = dict(choice.get("message") or {})
                calls = [c for c in message.pop("tool_calls", None) or () if c.get("function", {}).get("name") == JSON_TOOL]
                if calls:
                    message["content"] = calls[0]["function"].get("arguments")
                choices.append({**choice, "message": message,
                                "finish_reason": "stop" if calls else choice.get("finish_reason")})
            body["choices"] = choices
        body.update(id=head["inference_id"], episode_id=head["episode_id"], model=self._name(req, head))
        json_response(resp, body)

    def stream(self, req, resp, got: StreamAnswer, head: dict, record: Record) -> SSEStream:
        ctx = req.context
        found: Plan = ctx.inference
        include = bool((ctx.body.get("stream_options") or {}).get("include_usage"))
        relay = SSEStream(got.first, got.rest, self._name(req, head), got.deadline, ctx.peer, got.candidate.label,
                          include_usage=include, outcome=ctx.outcome, pricing=got.candidate.pricing)
        # NOTE: the chunks go out as OpenAI's; a translator only keeps what went out, for the row.
        kept = ChunksToTensorZero(found.function.type, head)
        relay.watch(kept.feed)
        relay.on_close(lambda _stream: setattr(record, "output", kept.output()))
        return relay


def _raw(answer_body: dict, body: Mapping[str, Any], got: Answer, attempt: Any) -> None:
    """What the provider said, as TensorZero adds it on request: ``raw_response`` (each model
    inference's answer), ``raw_usage`` (its usage) and the older ``original_response``."""
    data = dumps(got.result.body).decode()
    if attempt is not None and attempt.row_id is None:
        attempt.row_id = new_inference_id()  # the ModelInference row takes this id
    entry = {"model_inference_id": attempt.row_id if attempt is not None else None,
             "provider_type": got.candidate.provider.type, "api_type": "chat_completions"}
    if body.get("include_raw_response"):
        answer_body["raw_response"] = [{**entry, "data": data}]
    if body.get("include_raw_usage"):
        answer_body["usage"]["raw_usage"] = [{**entry, "data": got.result.body.get("usage")}]
    if body.get("include_original_response"):
        answer_body["original_response"] = data


def well_formed(read: Callable[..., T], *args: Any) -> T:
    """``read(*args)``, a request's body read; a body of some unexpected shape (a number where a
    block should be) is the client's 400, not the gateway's 500."""
    try:
        return read(*args)
    except TRANSLATION_ERRORS as e:
        raise InvalidRequestError(f"the request is not well formed ({type(e).__name__}: {e})") from None


def served(found: Plan) -> list[Variant]:
    """The plan's variants this gateway can run; a request that leaves none is a 400."""
    variants = [v for v in found.variants if v.served]
    if not variants:
        kinds = sorted({v.type for v in found.variants})
        raise InvalidRequestError(f"variant type {kinds[0]!r} is not supported yet (function "
                                  f"{found.function.name!r}); use chat_completion variants", param="variant_name")
    return variants
