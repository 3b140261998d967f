"""The endpoints passed through in OpenAI's wire format: embeddings, moderations, audio, images, responses.

One resource class for JSON bodies and one for multipart forms, each instance bound to a capability
and its OpenAI path; what comes back (JSON, text, audio bytes, an event stream) is relayed as is,
with the ``model`` of a JSON answer renamed to what the client sent.
"""

from __future__ import annotations

import time

import falcon

from gateway.outcome import Usage
from gateway.relay import RawStream
from gateway.relay_responses import ResponsesStream
from gateway.resources.respond import inference_headers
from gateway.routing import ForwardAnswer, Router
from providers.base import ForwardRequest
from providers.jsonio import dumps, loads

__all__ = ["FormForward", "JSONForward", "AUDIO_FILE_LIMIT"]

#: OpenAI's limit on audio uploads (transcriptions and translations).
AUDIO_FILE_LIMIT = 25 * 1024 * 1024


class JSONForward:
    body_kind = "json"

    def __init__(self, router: Router, capability: str, path: str, required: tuple[str, ...] = (),
                 *, always_stream: bool = False, events: int | None = None) -> None:
        self._router = router
        self.capability = capability
        self.path = path
        self.required = required
        #: Answers relayed as they arrive whatever the body says (speech audio).
        self._always_stream = always_stream
        #: The largest event of a stream the gateway reads event by event (Responses), else None:
        #: a stream relayed as bytes.
        self._events = events

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        stream = self._always_stream or ctx.body.get("stream") is True
        request = ForwardRequest(self.capability, self.path, ctx.model, json=ctx.body, stream=stream)
        _respond(req, resp, self._router.forward(ctx.route, request, ctx.peer, ctx.outcome), self._events)


class FormForward:
    """A multipart endpoint; the pipeline has parsed the form (files read once, within ``max_file_bytes``)."""

    body_kind = "multipart"

    def __init__(self, router: Router, capability: str, path: str, required: tuple[str, ...],
                 *, max_file_bytes: int | None = None) -> None:
        self._router = router
        self.capability = capability
        self.path = path
        self.required = required
        self.max_file_bytes = max_file_bytes

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ctx = req.context
        request = ForwardRequest(self.capability, self.path, ctx.model, form=ctx.form)
        _respond(req, resp, self._router.forward(ctx.route, request, ctx.peer, ctx.outcome))


def _respond(req: falcon.Request, resp: falcon.Response, answer: ForwardAnswer, events: int | None = None) -> None:
    ctx = req.context
    forwarded = answer.forwarded
    label = answer.candidate.label
    resp.content_type = forwarded.content_type
    if forwarded.stream is not None:
        if events is not None and forwarded.content_type.startswith("text/event-stream"):
            ctx.stream = resp.stream = ResponsesStream(
                answer.first, forwarded.stream, ctx.model, answer.deadline, ctx.peer, label,
                max_event_bytes=events, outcome=ctx.outcome, pricing=answer.candidate.pricing,
            )
        else:
            ctx.stream = resp.stream = RawStream(
                answer.first, forwarded.stream, forwarded.content_type, answer.deadline, ctx.peer, label,
                outcome=ctx.outcome,
            )
        resp.set_header("Cache-Control", "no-cache")
        inference_headers(resp, label, answer.attempts)
        return
    resp.data, usage = _renamed(forwarded.body, forwarded.content_type, ctx.model)
    ctx.outcome.set_usage(Usage.parse(usage), answer.candidate.pricing)
    inference_headers(resp, label, answer.attempts, time.monotonic() - ctx.started - answer.upstream_s)


def _renamed(body: bytes, content_type: str, model: str) -> tuple[bytes, object]:
    """A JSON answer with its ``model`` set to the client's name (anything else untouched), and the
    ``usage`` it reports."""
    if not content_type.startswith("application/json"):
        return body, None
    try:
        parsed = loads(body)
    except ValueError:
        return body, None
    if not isinstance(parsed, dict):
        return body, None
    usage = parsed.get("usage")
    if "model" not in parsed:
        return body, usage
    parsed["model"] = model
    return dumps(parsed), usage
