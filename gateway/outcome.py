"""The outcome of one request: what happened to it, and the hooks that run once it has ended.

Every request gets one ``Outcome`` on ``req.context.outcome`` (the context stage makes it). The stages,
the router and the relay fill it in; ``finish()`` runs the finish hooks exactly once: after the answer
for a whole answer, when the stream closes for a stream (its end, an upstream failure, the client
leaving). Metrics, analytics rows and trace spans are such hooks; so are the later policies' (quotas).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from providers.base import Attempt

__all__ = ["Outcome", "Usage", "new_inference_id"]

log = logging.getLogger(__name__)

_random_bits = random.getrandbits


def new_inference_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits; sortable by time."""
    ms = time.time_ns() // 1_000_000
    rand = _random_bits(74)
    # version 7 in the 4 bits after the time, variant 0b10 before the last 62 random bits
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | (rand & (1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Usage:
    """Token counts as a provider reported them; a count it did not report is None.

    ``input_tokens`` counts cached input tokens too (OpenAI's ``prompt_tokens``); ``cached_input_tokens``
    says how many of them were cached, ``reasoning_tokens`` how many output tokens were reasoning.
    """

    __slots__ = ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens")

    def __init__(self, input_tokens: int | None = None, output_tokens: int | None = None,
                 cached_input_tokens: int | None = None, reasoning_tokens: int | None = None) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_input_tokens = cached_input_tokens
        self.reasoning_tokens = reasoning_tokens

    @classmethod
    def parse(cls, usage: Any) -> Usage | None:
        """OpenAI's ``usage`` object in any of its shapes: chat and completions (``prompt_tokens``),
        the Responses API (``input_tokens``), embeddings (prompt tokens only)."""
        if not isinstance(usage, Mapping):
            return None
        if "prompt_tokens" in usage or "completion_tokens" in usage:
            input_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
            input_details, output_details = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
        else:
            input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
            input_details, output_details = usage.get("input_tokens_details"), usage.get("output_tokens_details")
        found = cls(_count(input_tokens), _count(output_tokens))
        if isinstance(input_details, Mapping):
            found.cached_input_tokens = _count(input_details.get("cached_tokens"))
        if isinstance(output_details, Mapping):
            found.reasoning_tokens = _count(output_details.get("reasoning_tokens"))
        if found.input_tokens is None and found.output_tokens is None:
            return None
        return found

    def as_dict(self) -> dict[str, int | None]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"Usage({self.as_dict()})"


class Outcome:
    """One request's record. Times are ``time.monotonic()`` unless named ``*_at`` (Unix seconds)."""

    __slots__ = (
        "inference_id",
        "started",
        "started_at",
        "finished",
        "route",
        "method",
        "path",
        "endpoint_type",
        "model",
        "model_name",
        "answered_model",
        "answered_provider",
        "attempts",
        "is_stream",
        "first_byte",
        "usage",
        "cost",
        "currency",
        "status",
        "stream_cut",
        "cut_reason",
        "bytes_in",
        "bytes_out",
        "error_type",
        "error_message",
        "is_blocked",
        "block_reason",
        "block_rule_id",
        "blocks",
        "guardrail_scans",
        "request_body",
        "response_body",
        "tags",
        "inference",
        "recorded",
        "capture",
        "trace",
        "context",
        "_hooks",
        "_done",
    )

    def __init__(self, inference_id: str, started: float, started_at: float,
                 hooks: Iterable[Callable[[Outcome], None]] = ()) -> None:
        self.inference_id = inference_id
        self.started = started
        self.started_at = started_at
        self.finished = 0.0
        #: The route template that served the request ("unmatched" when none did).
        self.route = "unmatched"
        self.method = ""
        self.path = ""
        #: The capability the request asked for (chat, embedding, ...), or None off the inference routes.
        self.endpoint_type: str | None = None
        #: The model as the client named it, and the configured model it resolved to.
        self.model = ""
        self.model_name: str | None = None
        #: Which model and provider gave the answer (after fallbacks).
        self.answered_model: str | None = None
        self.answered_provider: str | None = None
        #: Every provider attempt, in order (``providers.base.Attempt``, filled in by routing).
        self.attempts: list[Attempt] = []
        self.is_stream = False
        #: When a stream's first piece arrived from the upstream.
        self.first_byte: float | None = None
        self.usage: Usage | None = None
        #: In ``currency``; None when the model has no pricing or the provider reported no usage.
        self.cost: float | None = None
        self.currency: str | None = None
        #: The final status: the answer's, or for a stream cut short the status of why (502, 504, 499).
        self.status = 0
        self.stream_cut = False
        self.cut_reason: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        #: The error a client was given (its code or type, and the client-safe message).
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.is_blocked = False
        self.block_reason: str | None = None
        self.block_rule_id: str | None = None
        #: Every blocking rule the request matched, blocking or only logged: ``guard.rules.Match`` objects.
        self.blocks: list | None = None
        #: The guardrail scans (``guard.guardrails.Scan``): the verdicts, for the analytics rows.
        self.guardrail_scans: list | None = None
        #: The client's parsed body, and the answer as sent, for ``store_content``.
        self.request_body: Any = None
        self.response_body: bytes | None = None
        self.tags: dict[str, str] = {}
        #: A ``/inference`` request's record (``tensorzero.inference.Record``) for its ChatInference or
        #: JsonInference row; None elsewhere, and for a dry run.
        self.inference: Any = None
        #: False for the operational routes (health, status, metrics): no analytics row.
        self.recorded = True
        #: With ``store_content``: the pieces of a streamed answer as sent (bounded), else None.
        self.capture: list[bytes] | None = None
        #: With traces on: the request's ``observe.tracing.TraceContext``.
        self.trace: Any = None
        #: The request's ``RequestContext`` (who asked: the auth ids, the client address and agent).
        self.context: Any = None
        self._hooks: list[Callable[[Outcome], None]] = list(hooks)
        self._done = False

    @property
    def overhead_s(self) -> float | None:
        """The gateway's own time: a whole answer's time less the time waiting on providers; a stream's
        time to its first byte less the failed attempts and the answering one's wait for its first piece."""
        if self.is_stream:
            if self.first_byte is None or not self.attempts:
                return None
            *failed, answering = self.attempts
            waited = sum(a.duration_s for a in failed) + (answering.first_byte_s or 0.0)
            return max(self.first_byte - self.started - waited, 0.0)
        return max(self.finished - self.started - self.upstream_s, 0.0)

    @property
    def upstream_s(self) -> float:
        """Time spent waiting on providers, over every attempt."""
        return sum(a.upstream_s for a in self.attempts)

    def on_finish(self, hook: Callable[[Outcome], None]) -> None:
        """Run ``hook(outcome)`` once the request has ended (at once if it already has)."""
        if self._done:
            self._run(hook)
        else:
            self._hooks.append(hook)

    def finish(self) -> None:
        """End the request: the first call runs every hook, in the order they were added; later calls nothing."""
        if self._done:
            return
        self._done = True
        self.finished = time.monotonic()
        for hook in self._hooks:
            self._run(hook)

    def _run(self, hook: Callable[[Outcome], None]) -> None:
        # NOTE: one failing hook must not cost the others their record, nor the client its answer.
        try:
            hook(self)
        except Exception:
            log.exception("a finish hook failed for inference %s", self.inference_id)

    def set_usage(self, usage: Usage | None, pricing: Any, raw: Any = None, streaming: bool = False) -> None:
        """The answer's usage, and its cost under the answering model's ``Pricing`` (or its
        provider's TensorZero ``cost``, read from ``raw``: the answer, or a stream's usage chunk)."""
        if usage is None:
            return
        self.usage = usage
        if pricing is not None:
            cost = pricing.cost_of(usage, raw, streaming)
            if cost is not None:
                self.cost = cost
                self.currency = pricing.currency
