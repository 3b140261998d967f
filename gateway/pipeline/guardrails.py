"""Stage 8: the model's guardrail profile, on what the client sends and on what it gets back.

Input: every text of the request is scanned before any upstream call; a block is a 400
``content_filter`` (the upstream never sees the text), a redaction rewrites the body the upstream
gets. Output, whole answers: scanned before the client sees anything; a block empties the choice's
content with ``finish_reason: "content_filter"`` (Azure OpenAI's convention), a redaction rewrites it.
Output, streams: a tap on the stream holds text back in windows (``guard.window``), on chat and
completions chunks (each choice apart), on Anthropic's stream before translation, and on Responses
events (``guard.responses_window``); other streams of text (transcriptions) are refused with 400.
``/v1/moderations`` for a model with a profile is answered from the profile itself.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import falcon
import ujson

from gateway.errors import ContentFilterError, GatewayError, InvalidRequestError, ServiceUnavailableError
from gateway.guard.guardrails import Guardrail, Scan, Verdict
from gateway.guard.responses_window import ResponsesWindow
from gateway.guard.texts import answer_slots, request_slots
from gateway.guard.window import StreamWindow
from gateway.relay import EventStream, SSEStream
from gateway.relay_responses import ResponsesStream
from providers.jsonio import dumps

__all__ = ["GuardrailStage"]

#: The window that holds back each kind of stream (one of no text, audio, is not held).
_WINDOWS = {SSEStream: StreamWindow, EventStream: StreamWindow, ResponsesStream: ResponsesWindow}

#: The OpenAI routes whose streams an output window can hold back (and /v1/messages, whose chunks it
#: holds back before they are translated).
_STREAM_PATHS = ("/chat/completions", "/completions", "/responses", "/inference")


class GuardrailStage:
    def __init__(self, guardrails: Mapping[str, Guardrail], window_chars: int) -> None:
        self._guardrails = guardrails
        self._window_chars = window_chars

    def _guardrail(self, req: falcon.Request) -> Guardrail | None:
        route = req.context.route
        profile = route.config.guardrail_profile if route is not None else None
        if profile is None:
            return None
        guardrail = self._guardrails.get(profile)
        if guardrail is None:
            # NOTE: fail closed: a model its control plane wants guarded is never served unguarded.
            raise ServiceUnavailableError(f"Model {req.context.model} is unavailable: its guardrail profile "
                                          f"{profile} is not loaded")
        return guardrail

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        ctx = req.context
        guardrail = self._guardrail(req)
        if guardrail is None:
            return
        ctx.guardrail = guardrail
        body = ctx.body
        if guardrail.scans_output and body is not None and body.get("stream") is True and \
                getattr(resource, "path", None) not in _STREAM_PATHS and ctx.error_format != "anthropic":
            raise InvalidRequestError("Streaming is not available for this model on this API yet: its "
                                      "guardrail profile scans output (stream it through /v1/chat/completions)",
                                      code="streaming_unavailable")
        if resource.capability == "moderation" and ctx.body is not None:
            self._moderate(req, resp, guardrail)
            return
        if not guardrail.scans_input or ctx.body is None:
            return
        slots = request_slots(ctx.body, resource.capability, ctx.error_format)
        if not slots:
            return
        verdict = _scan(ctx.outcome, guardrail, "input", [holder[key] for holder, key in slots])
        if verdict.blocked:
            raise ContentFilterError("Input content violates content policy")
        if verdict.redacted:
            for (holder, key), text in zip(slots, verdict.texts, strict=True):
                holder[key] = text

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        ctx = req.context
        if not req_succeeded or ctx.route is None or resp.status_code != 200:
            return
        # NOTE: the profile process_resource found: one the sync drops meanwhile still scans this answer.
        guardrail = ctx.guardrail
        if guardrail is None or not guardrail.scans_output:
            return
        if ctx.stream is not None:
            window = _WINDOWS.get(type(ctx.stream))
            if window is not None:
                scan = Scan(guardrail.id, "output", time.time())
                ctx.stream.hold_back(window(guardrail, self._window_chars, scan=scan))
                ctx.outcome.guardrail_scans = [*(ctx.outcome.guardrail_scans or ()), scan]
            return
        if not resp.data:
            return
        try:
            answer = ujson.loads(resp.data)
        except ValueError:
            return
        slots = answer_slots(answer, resource.capability, ctx.error_format)
        if not slots:
            return
        verdict = _scan(ctx.outcome, guardrail, "output", [holder[key] for (holder, key), _ in slots])
        if not verdict.blocked and not verdict.redacted:
            return
        if verdict.blocked:
            _withhold(answer, resource.capability, ctx.error_format, slots)
        else:
            for ((holder, key), _), text in zip(slots, verdict.texts, strict=True):
                holder[key] = text
        # NOTE: the logprobs spell out the text token by token: they go with it.
        for _, choice in slots:
            if choice is not None and choice.get("logprobs") is not None:
                choice["logprobs"] = None
        resp.data = dumps(answer)

    def _moderate(self, req: falcon.Request, resp: falcon.Response, guardrail: Guardrail) -> None:
        """``/v1/moderations`` for a model with a profile: the profile's verdict on each input, in
        OpenAI's moderation shape, and no upstream call."""
        ctx = req.context
        results = []
        for holder, key in request_slots(ctx.body, "moderation"):
            verdict = _scan(ctx.outcome, guardrail, "input", [holder[key]])
            categories = {kind.split(":", 1)[-1]: True for kind in verdict.kinds}
            results.append({"flagged": verdict.blocked or bool(verdict.kinds), "categories": categories,
                            "category_scores": {name: verdict.score for name in categories}})
        resp.content_type = falcon.MEDIA_JSON
        resp.data = dumps({"id": f"modr-{ctx.outcome.inference_id}", "model": ctx.model, "results": results})
        resp.complete = True  # answered here: the resource (and its upstream call) is skipped


def _withhold(answer: dict, capability: str, dialect: str | None, slots: list) -> None:
    """A blocked whole answer: none of its text, tool calls or reasoning, and the API's way of saying
    a content filter stopped it."""
    if dialect == "tensorzero":
        if "output" in answer:
            answer["output"] = {"raw": "", "parsed": None}
        else:
            answer["content"] = []
        answer["finish_reason"] = "content_filter"
        return
    if dialect == "anthropic":
        answer["content"] = [{"type": "text", "text": ""}]
        answer["stop_reason"] = "refusal"
        return
    if capability == "responses":
        answer["output"] = []
        if "output_text" in answer:
            answer["output_text"] = ""
        answer["status"] = "incomplete"
        answer["incomplete_details"] = {"reason": "content_filter"}
        return
    for choice in {id(choice): choice for _, choice in slots}.values():
        choice["finish_reason"] = "content_filter"
        if "text" in choice:
            choice["text"] = ""
        message = choice.get("message")
        if isinstance(message, dict):
            choice["message"] = {"role": message.get("role", "assistant"), "content": "",
                                 **({"refusal": None} if "refusal" in message else {})}


def _scan(outcome, guardrail: Guardrail, guard_type: str, texts: list[str]) -> Verdict:
    """``guardrail.check(texts)``, recorded on the outcome as one scan."""
    scan = Scan(guardrail.id, guard_type, time.time())
    outcome.guardrail_scans = [*(outcome.guardrail_scans or ()), scan]
    started = time.monotonic()
    try:
        verdict = guardrail.check(texts)
    except GatewayError:
        scan.add(None, time.monotonic() - started)
        raise
    scan.add(verdict, time.monotonic() - started)
    return verdict
