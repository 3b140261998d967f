"""OTLP traces: a server span per request and a client span per provider attempt, GenAI conventions.

The trace context is settled when the request arrives (a W3C ``traceparent`` is continued, else a new
trace begins); each attempt gets its span id when it starts, so the upstream request carries a
``traceparent`` naming it. The spans themselves are made once the request has ended, from its
outcome (a finish hook), encoded at once to OTLP protobuf (``otlp.py``): no live span objects or
context switching on the request path. They wait in a bounded queue and a greenlet of their own posts
them in batches; a slow or dead collector costs only dropped spans, which are counted.
"""

from __future__ import annotations

import logging
import random
import re
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import gevent.event

from gateway import __version__
from gateway.observe.otlp import CLIENT, SERVER, Exporter, encode_request, encode_span, endpoint
from gateway.outcome import Outcome
from providers.base import Attempt

__all__ = ["TraceContext", "TraceStage", "Tracer", "make_exporter"]

log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_QUEUE = 8192
_BATCH = 128
_INTERVAL_S = 1.0
_EXPORT_TIMEOUT_S = 5.0
#: The GenAI operation name of each capability.
_OPERATIONS = {"chat": "chat", "completions": "text_completion", "embedding": "embeddings",
               "responses": "chat"}
_random_bits = random.getrandbits


def _span_id() -> int:
    return _random_bits(64) or 1


class TraceContext:
    """A request's place in a trace: its trace id, its own (server) span id, the caller's span id."""

    __slots__ = ("trace_id", "span_id", "parent_id", "flags")

    def __init__(self, traceparent: str | None) -> None:
        match = _TRACEPARENT.match(traceparent.strip().lower()) if traceparent else None
        trace_id = int(match.group(1), 16) if match else 0
        parent_id = int(match.group(2), 16) if match else 0
        if trace_id and parent_id:
            self.trace_id, self.parent_id, self.flags = trace_id, parent_id, int(match.group(3), 16)
        else:  # none, or an invalid one (all-zero ids included): a new trace
            self.trace_id, self.parent_id, self.flags = _random_bits(128) or 1, None, 1
        self.span_id = _span_id()

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 1)

    def start_attempt(self, attempt: Attempt) -> None:
        """Give the attempt its span, and the ``traceparent`` its upstream request carries."""
        attempt.span_id = _span_id()
        attempt.headers = {"traceparent": f"00-{self.trace_id:032x}-{attempt.span_id:016x}-{self.flags:02x}"}


class TraceStage:
    """Settles each request's trace context (a pipeline stage, present when traces are on)."""

    def process_request(self, req, resp) -> None:
        req.context.outcome.trace = TraceContext(req.get_header("traceparent"))


def _ns(outcome: Outcome, monotonic: float) -> int:
    """A monotonic time of the request as Unix nanoseconds."""
    return int((outcome.started_at + (monotonic - outcome.started)) * 1e9)


class Tracer:
    """Makes the spans of each finished request and exports them; ``dropped(n)`` counts lost ones."""

    def __init__(self, exporter: Any, dropped: Callable[[int], None], *, queue: int = _QUEUE,
                 interval_s: float = _INTERVAL_S) -> None:
        self._exporter = exporter
        self._dropped = dropped
        #: Encoded spans waiting to go.
        self._queue: deque[bytes] = deque()
        self._max = queue
        self._interval = interval_s
        self._wake = gevent.event.Event()
        self._resource = {"service.name": "budgateway", "service.version": __version__,
                          "telemetry.sdk.language": "python", "telemetry.sdk.name": "budgateway"}
        self._scope = ("budgateway", __version__)
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    # --- making spans ----------------------------------------------------------------------------

    def finished(self, outcome: Outcome) -> None:
        trace = outcome.trace
        if trace is None or not trace.sampled:
            return
        count = 1 + sum(1 for a in outcome.attempts if a.span_id is not None)
        room = self._max - len(self._queue)
        if room < count:
            self._dropped(count)
            return
        queue = self._queue
        common = self._common(outcome)
        queue.append(self._server_span(outcome, trace, common))
        for attempt in outcome.attempts:
            if attempt.span_id is not None:
                queue.append(self._client_span(outcome, trace, attempt, common))
        if len(queue) >= _BATCH:
            self._wake.set()

    def _common(self, outcome: Outcome) -> dict[str, Any]:
        ctx = outcome.context
        return {
            "gen_ai.operation.name": _OPERATIONS.get(outcome.endpoint_type or "", outcome.endpoint_type),
            "tensorzero.inference_id": outcome.inference_id if outcome.endpoint_type else None,
            "bud.api_key_id": getattr(ctx, "api_key_id", None),
            "bud.user_id": getattr(ctx, "user_id", None),
            "bud.project_id": getattr(ctx, "project_id", None),
            "bud.endpoint_id": getattr(ctx, "endpoint_id", None),
            "bud.model_id": getattr(ctx, "model_id", None),
        }

    def _server_span(self, outcome: Outcome, trace: TraceContext, common: dict[str, Any]) -> bytes:
        usage = outcome.usage
        attributes = {
            **common,
            "http.request.method": outcome.method,
            "http.route": outcome.route,
            "http.response.status_code": outcome.status,
            "gen_ai.request.model": outcome.model or None,
            "gen_ai.response.model": outcome.answered_model,
            "gen_ai.provider.name": outcome.answered_provider,
            "gen_ai.usage.input_tokens": usage.input_tokens if usage else None,
            "gen_ai.usage.output_tokens": usage.output_tokens if usage else None,
            "bud.cost": outcome.cost,
            "bud.stream_cut": outcome.stream_cut or None,
        }
        error = None
        if outcome.status >= 500 or outcome.stream_cut:
            error = outcome.error_type or (f"stream cut ({outcome.cut_reason})" if outcome.stream_cut else "error")
        return encode_span(trace.trace_id, trace.span_id, trace.parent_id, f"{outcome.method} {outcome.route}",
                           SERVER, int(outcome.started_at * 1e9), _ns(outcome, outcome.finished), attributes,
                           error, trace.flags)

    def _client_span(self, outcome: Outcome, trace: TraceContext, attempt: Attempt,
                     common: dict[str, Any]) -> bytes:
        answering = attempt is outcome.attempts[-1] and attempt.result in ("ok", "cut")
        usage = outcome.usage if answering else None
        operation = _OPERATIONS.get(outcome.endpoint_type or "", outcome.endpoint_type) or "chat"
        failed = attempt.result != "ok"
        attributes = {
            **common,
            "gen_ai.system": attempt.provider_type,
            "gen_ai.request.model": attempt.model,
            "gen_ai.response.model": attempt.model if answering else None,
            "gen_ai.provider.name": attempt.provider,
            "gen_ai.usage.input_tokens": usage.input_tokens if usage else None,
            "gen_ai.usage.output_tokens": usage.output_tokens if usage else None,
            "bud.cost": outcome.cost if answering else None,
            "bud.attempt.result": attempt.result,
            "http.response.status_code": attempt.status_code,
            "error.type": attempt.result if failed else None,
        }
        return encode_span(trace.trace_id, attempt.span_id, trace.span_id, f"{operation} {attempt.model}", CLIENT,
                           _ns(outcome, attempt.started), _ns(outcome, attempt.started + attempt.duration_s),
                           attributes, attempt.result if failed else None, trace.flags)

    # --- exporting -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            self._export()

    def _export(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(_BATCH, len(self._queue)))]
            body = encode_request(self._resource, self._scope, batch)
            try:
                with gevent.Timeout(_EXPORT_TIMEOUT_S * 2):
                    sent = self._exporter.export(body)
            except gevent.Timeout:
                sent = False
            if not sent:
                self._dropped(len(batch))
                log.debug("traces: %d spans could not be exported", len(batch))
                return  # the collector is away: try again at the next interval

    def close(self, timeout: float) -> None:
        self._stopping = True
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1.0)
        with gevent.Timeout(timeout, False):
            self._export()
        if self._queue:
            self._dropped(len(self._queue))
            self._queue.clear()
        self._exporter.shutdown()


def make_exporter(headers: Mapping[str, str]) -> Exporter:
    """The OTLP/HTTP (protobuf) exporter to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``."""
    url = endpoint()
    if url is None:
        raise ValueError("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is not set")
    return Exporter(url, headers, _EXPORT_TIMEOUT_S)
