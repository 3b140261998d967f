"""Prometheus metrics, correct with several worker processes (prometheus-client multiprocess mode).

The master sets ``PROMETHEUS_MULTIPROC_DIR`` before it forks workers and before prometheus_client
is imported; every worker then writes its samples to files there, and ``/metrics`` sums them.

Every label value is bounded: route templates, configured model and provider names (a model the
client named but the gateway does not serve is ``_unknown``), attempt results and HTTP statuses.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway.config.schema import MetricsConfig
from gateway.outcome import Outcome

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

#: The model label of a request for a model the gateway does not serve.
UNKNOWN_MODEL = "_unknown"
_TOKEN_KINDS = ("input", "output", "cached_input", "reasoning")


class _Family:
    """One metric and its children by label values (PERF: ``labels()`` validates and locks on every
    call; the label sets are few, so each child is looked up once)."""

    __slots__ = ("_metric", "_children")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        try:
            return self._children[labels]
        except KeyError:
            child = self._children[labels] = self._metric.labels(*labels)
            return child


class Metrics:
    """The gateway's metrics, on a registry of their own (no process-global registry).

    ``finished`` is a finish hook; ``stream_opened`` runs when a streamed answer starts.
    """

    def __init__(self, config: MetricsConfig | None = None) -> None:
        config = config or MetricsConfig()
        registry = self._registry = CollectorRegistry(auto_describe=True)
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> _Family:
            return _Family(Counter(name, doc, labels, registry=registry))

        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> _Family:
            return _Family(Histogram(name, doc, labels, buckets=buckets, registry=registry))

        self.requests = counter("budgateway_requests", "Requests served, by route, model, provider and final "
                                "status (a stream cut short counts with the status of why: 502, 504, 499).",
                                ("route", "model", "provider", "status"))
        self.duration = histogram("budgateway_request_duration_seconds", "From the request's arrival to the end of "
                                  "its answer (a stream's last chunk).", ("route", "model"), config.duration_buckets)
        self.overhead = histogram("budgateway_overhead_seconds", "The gateway's own time per request: the whole "
                                  "time less the time waiting on providers (streams: up to the first byte).",
                                  ("route",), config.overhead_buckets)
        self.ttft = histogram("budgateway_ttft_seconds", "Time to a stream's first byte, from the request's arrival.",
                              ("model", "provider"), config.ttft_buckets)
        self.tokens = counter("budgateway_tokens", "Tokens the providers reported.", ("model", "provider", "kind"))
        self.cost = counter("budgateway_cost", "Cost of the answers, from the models' pricing.",
                            ("model", "provider", "currency"))
        self.attempts = counter("budgateway_provider_attempts", "Provider attempts, by how they ended.",
                                ("model", "provider", "result"))
        self.fallbacks = counter("budgateway_fallbacks", "Moves to the next provider or fallback model.", ("model",))
        self.streams_cut = counter("budgateway_streams_cut", "Streams that ended before their end (an upstream "
                                   "failure, a timeout, the client leaving).", ("model", "provider"))
        self._streams_active = Gauge("budgateway_streams_active", "Streamed answers being relayed now.",
                                     registry=registry, multiprocess_mode="livesum")
        self._queue_depth = Gauge("budgateway_analytics_queue_depth", "Analytics rows waiting in memory to be "
                                  "written.", registry=registry, multiprocess_mode="livesum")
        self.analytics_rows = counter("budgateway_analytics_rows", "Analytics rows, by where they went.",
                                      ("table", "result"))
        self.limit_denials = counter("budgateway_limit_denials", "Requests refused by a limit, by model and "
                                     "code (rate_limit_exceeded, concurrency_limit_exceeded, insufficient_quota).",
                                     ("model", "code"))
        self.rate_limit_local = counter("budgateway_rate_limit_local_checks", "Rate-limit checks made in-process "
                                        "because Redis failed (redis_error, redis_timeout) or is still being "
                                        "waited out (redis_unavailable).", ("reason",))
        self.blocked = counter("budgateway_blocking_matches", "Requests a blocking rule matched, by rule type and "
                               "action (block: refused; log: recorded and let through).", ("rule_type", "action"))
        self.guardrail_failures = counter("budgateway_guardrail_failures", "Guardrail provider calls that gave no "
                                          "verdict (timeouts, errors), by profile.", ("profile",))
        self.spans_dropped = Counter("budgateway_trace_spans_dropped", "Trace spans the exporter could not send.",
                                     registry=registry)

        self._request_children: dict[tuple, tuple] = {}
        self._tokens_by_model: dict[tuple[str, str], tuple] = {}

    def stream_opened(self, outcome: Outcome) -> None:
        self._streams_active.inc()

    def finished(self, outcome: Outcome) -> None:
        route = outcome.route
        model = outcome.model_name or (UNKNOWN_MODEL if outcome.model else "")
        provider = outcome.answered_provider or ""
        key = (route, model, provider, outcome.status)
        # PERF: the children of one kind of request are looked up together, once.
        try:
            requests, duration, overhead = self._request_children[key]
        except KeyError:
            requests, duration, overhead = self._request_children[key] = (
                self.requests(route, model, provider, str(outcome.status)), self.duration(route, model),
                self.overhead(route))
        requests.inc()
        duration.observe(outcome.finished - outcome.started)
        spent = outcome.overhead_s
        if spent is not None:
            overhead.observe(spent)
        if outcome.is_stream:
            self._streams_active.dec()
        attempts = outcome.attempts
        if not attempts:
            return
        for attempt in attempts:
            self.attempts(attempt.model, attempt.provider, attempt.result).inc()
        if len(attempts) > 1:
            self.fallbacks(model).inc(len(attempts) - 1)
        answered = outcome.answered_model or model
        if outcome.is_stream:
            if outcome.first_byte is not None:
                self.ttft(answered, provider).observe(outcome.first_byte - outcome.started)
            if outcome.stream_cut:
                self.streams_cut(answered, provider).inc()
        usage = outcome.usage
        if usage is not None:
            tokens = self._token_children(answered, provider)
            if usage.input_tokens:
                tokens[0].inc(usage.input_tokens)
            if usage.output_tokens:
                tokens[1].inc(usage.output_tokens)
            if usage.cached_input_tokens:
                tokens[2].inc(usage.cached_input_tokens)
            if usage.reasoning_tokens:
                tokens[3].inc(usage.reasoning_tokens)
        if outcome.cost:
            self.cost(answered, provider, outcome.currency or "").inc(outcome.cost)

    def _token_children(self, model: str, provider: str) -> tuple:
        key = (model, provider)
        try:
            return self._tokens_by_model[key]
        except KeyError:
            found = self._tokens_by_model[key] = tuple(self.tokens(model, provider, kind) for kind in _TOKEN_KINDS)
            return found

    def analytics_rows_counter(self) -> Callable[[str, str, int], None]:
        """``count(table, result, n)`` for the analytics writer."""
        family = self.analytics_rows

        def count(table: str, result: str, n: int) -> None:
            family(table, result).inc(n)

        return count

    def blocking_matched(self, rule_type: str, action: str) -> None:
        self.blocked(rule_type, action).inc()

    def guardrail_failed(self, profile: str) -> None:
        self.guardrail_failures(profile).inc()

    def limit_denied(self, model: str, code: str) -> None:
        self.limit_denials(model, code).inc()

    def rate_limit_checked_locally(self, reason: str) -> None:
        self.rate_limit_local(reason).inc()

    def queue_depth(self) -> Callable[[int], None]:
        """A setter for this worker's analytics queue depth."""
        return self._queue_depth.set

    def render(self) -> bytes:
        if self._multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self._registry)
