"""The fallback chain: providers in routing order, then fallback models, with retries and timeouts.

A route's chain of candidates (``catalog.py``) is flattened when its models are loaded, so a request
only walks a tuple. Timeouts are enforced here, around the provider, with gevent timers.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import gevent

from gateway.catalog import Candidate, Catalog, ModelRoute
from gateway.config.schema import TimeoutsConfig
from gateway.errors import ClientClosedError, GatewayError
from gateway.outcome import Usage
from providers.base import (
    Attempt,
    ChatRequest,
    ChatResult,
    ChunkStream,
    Forwarded,
    ForwardRequest,
    ProviderError,
    ProviderHTTPError,
    ProviderResponseError,
    ProviderTimeout,
)
from providers.http import UpstreamClient

if TYPE_CHECKING:
    from gateway.outcome import Outcome
    from gateway.server.peer import Peer

__all__ = ["AllProvidersFailedError", "Answer", "ForwardAnswer", "Router", "StreamAnswer"]

log = logging.getLogger(__name__)

#: The first retry waits about this long; each next one twice as long, up to ``max_delay_s``.
_BACKOFF_BASE_S = 0.1

T = TypeVar("T")


class Answer:
    """A whole answer, with which candidate gave it and how many attempts it took."""

    __slots__ = ("result", "candidate", "attempts", "upstream_s")

    def __init__(self, result: ChatResult, candidate: Candidate, attempts: int, upstream_s: float) -> None:
        self.result = result
        self.candidate = candidate
        self.attempts = attempts
        self.upstream_s = upstream_s


class StreamAnswer:
    """A stream whose first chunk has arrived: from here on there is no fallback."""

    __slots__ = ("first", "rest", "candidate", "attempts", "deadline")

    def __init__(self, first: bytes, rest: ChunkStream, candidate: Candidate, attempts: int, deadline: float | None):
        self.first = first
        self.rest = rest
        self.candidate = candidate
        self.attempts = attempts
        #: ``time.monotonic()`` by which the whole stream must have ended, if the config sets one.
        self.deadline = deadline


class ForwardAnswer:
    """A forwarded request's answer: whole, or a stream whose first piece has arrived."""

    __slots__ = ("forwarded", "first", "candidate", "attempts", "upstream_s", "deadline")

    def __init__(self, forwarded: Forwarded, first: bytes | None, candidate: Candidate, attempts: int,
                 upstream_s: float, deadline: float | None) -> None:
        self.forwarded = forwarded
        self.first = first
        self.candidate = candidate
        self.attempts = attempts
        self.upstream_s = upstream_s
        self.deadline = deadline


class AllProvidersFailedError(GatewayError):
    """Every attempt of the chain failed; the message lists each attempt and why."""

    status, type, code = 502, "server_error", "all_providers_failed"

    def __init__(self, model: str, failures: list[tuple[str, ProviderError]]) -> None:
        detail = "; ".join(f"{label}: {e.public}" for label, e in failures)
        super().__init__(f"All providers failed for model {model}: {detail}")
        self.failures = failures
        if all(isinstance(e, ProviderHTTPError) and e.rate_limited for _, e in failures):
            self.status, self.type = 429, "rate_limit_error"
        elif all(isinstance(e, ProviderTimeout) for _, e in failures):
            self.status = 504


def _client_error(e: ProviderHTTPError) -> GatewayError:
    """A provider's 4xx is the client's error: pass its status and message through."""
    return GatewayError(
        str(e),
        status=e.status,
        type_=e.type or ("authentication_error" if e.status == 401 else "invalid_request_error"),
        code=None if e.code is None else str(e.code),
        param=e.param,
    )


class _Timer:
    """A gevent timeout raising ``ProviderTimeout``, or nothing when no limit is set."""

    __slots__ = ("_timeout",)

    def __init__(self, seconds: float | None, what: str) -> None:
        self._timeout = (
            None if seconds is None else gevent.Timeout(seconds, ProviderTimeout(f"{what} timeout of {seconds * 1000:g} ms"))
        )

    def __enter__(self) -> None:
        if self._timeout is not None:
            self._timeout.start()

    def __exit__(self, *exc) -> None:
        if self._timeout is not None:
            self._timeout.close()


def _peek(stream: Iterator[bytes], *, empty_ok: bool = False) -> bytes | None:
    """The stream's first piece; a failed stream is closed and counts as a failed attempt, and so does an
    empty one unless ``empty_ok`` (then: None)."""
    try:
        return next(stream)
    except StopIteration:
        stream.close()
        if empty_ok:
            return None
        raise ProviderResponseError("upstream stream ended without any data") from None
    except BaseException:
        stream.close()
        raise


@contextlib.contextmanager
def _first_piece_timer(timeouts: TimeoutsConfig) -> Iterator[float | None]:
    """Time to first token (or the whole streaming budget, if smaller) until the block ends;
    yields the deadline of the whole stream."""
    total = timeouts.streaming_total_s
    ttft = timeouts.streaming_ttft_s
    if ttft is None or total is not None and total < ttft:
        ttft, what = total, "streaming total"
    else:
        what = "time to first token"
    with _Timer(ttft, what):
        yield None if total is None else time.monotonic() + total


class Router:
    """Answers requests by walking the chain of a route from the catalog."""

    def __init__(self, catalog: Catalog, http: UpstreamClient) -> None:
        self.catalog = catalog
        self._http = http

    def chat(self, route: ModelRoute, request: ChatRequest, peer: Peer | None = None,
             outcome: Outcome | None = None) -> Answer:
        def call(candidate: Candidate, attempt: Attempt) -> ChatResult:
            with _Timer(candidate.timeouts.non_streaming_total_s, "non-streaming total"):
                return candidate.provider.chat(self._http, request, attempt)

        answer = self._walk(route, call, Answer, peer, outcome)
        if outcome is not None:
            body = answer.result.body
            outcome.set_usage(Usage.parse(body.get("usage")), answer.candidate.pricing, body)
        return answer

    def chat_stream(self, route: ModelRoute, request: ChatRequest, peer: Peer | None = None,
                    outcome: Outcome | None = None) -> StreamAnswer:
        def call(candidate: Candidate, attempt: Attempt) -> tuple[bytes, ChunkStream, float | None]:
            with _first_piece_timer(candidate.timeouts) as deadline:
                stream = candidate.provider.chat_stream(self._http, request, attempt)
                first = _peek(stream)
                attempt.first_byte_s = time.monotonic() - attempt.started
                return first, stream, deadline

        return self._walk(
            route, call, lambda got, cand, attempts, _s: StreamAnswer(got[0], got[1], cand, attempts, got[2]),
            peer, outcome,
        )

    def forward(self, route: ModelRoute, request: ForwardRequest, peer: Peer | None = None,
                outcome: Outcome | None = None) -> ForwardAnswer:
        """Pass a request through the chain; a streamed answer falls back only until its first byte."""

        def call(candidate: Candidate, attempt: Attempt) -> tuple[Forwarded, bytes | None, float | None]:
            if request.stream:
                with _first_piece_timer(candidate.timeouts) as deadline:
                    forwarded = candidate.provider.forward(self._http, request, attempt)
                    if forwarded.stream is None:
                        return forwarded, None, deadline
                    first = _peek(forwarded.stream)
                    attempt.first_byte_s = time.monotonic() - attempt.started
                    return forwarded, first, deadline
            total = candidate.timeouts.non_streaming_total_s
            deadline = None if total is None else time.monotonic() + total
            with _Timer(total, "non-streaming total"):
                forwarded = candidate.provider.forward(self._http, request, attempt)
                if forwarded.stream is None:
                    return forwarded, None, None
                # A whole answer the provider relays as it comes (one that needs no rewriting): an empty
                # one is an empty body, not a failed stream.
                first = _peek(forwarded.stream, empty_ok=True)
                if first is None:
                    return Forwarded(forwarded.content_type, body=b""), None, None
                return forwarded, first, deadline

        return self._walk(
            route, call,
            lambda got, cand, attempts, upstream_s: ForwardAnswer(got[0], got[1], cand, attempts, upstream_s, got[2]),
            peer, outcome,
        )

    def _walk(self, route: ModelRoute, call: Callable[[Candidate, Attempt], T], wrap: Callable,
              peer: Peer | None, outcome: Outcome | None) -> object:
        """Try each candidate in turn, every round; between attempts, stop if the client has left.

        Each attempt is appended to the outcome's; the one that answers is its ``answered_*``.
        """
        failures: list[tuple[str, ProviderError]] = []
        retry = route.config.retry
        attempts = 0
        upstream_s = 0.0
        record = outcome.attempts if outcome is not None else []
        trace = outcome.trace if outcome is not None else None
        for round_ in range(retry.num_retries + 1):
            if round_:
                delay = min(retry.max_delay_s, _BACKOFF_BASE_S * 2 ** (round_ - 1)) * random.uniform(0.5, 1.0)
                gevent.sleep(delay)
            for candidate in route.chain:
                if attempts and peer is not None and peer.gone():
                    log.info("%s: the client left after %d attempts; no more are made", route.name, attempts)
                    raise ClientClosedError("The client closed the connection")
                attempts += 1
                attempt = Attempt(candidate.model, candidate.provider_name, time.monotonic(), time.time(),
                                  candidate.provider.type)
                record.append(attempt)
                if trace is not None:
                    trace.start_attempt(attempt)
                try:
                    got = call(candidate, attempt)
                except ProviderError as e:
                    attempt.failed(e, time.monotonic())
                    upstream_s += attempt.upstream_s
                    if isinstance(e, ProviderHTTPError) and not e.retryable:
                        raise _client_error(e) from e
                    failures.append((candidate.label, e))
                    log.warning("attempt %d of %s failed: %s: %s (%s)", attempts, route.name, candidate.label,
                                e.public, e)
                    continue
                except BaseException:
                    attempt.duration_s = time.monotonic() - attempt.started
                    attempt.result = "error"
                    raise
                attempt.duration_s = time.monotonic() - attempt.started
                if outcome is not None:
                    outcome.answered_model = candidate.model
                    outcome.answered_provider = candidate.provider_name
                return wrap(got, candidate, attempts, upstream_s + attempt.upstream_s)
        raise AllProvidersFailedError(route.name, failures)
