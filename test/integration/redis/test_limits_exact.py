"""Rate limits shared by two gateways of two workers each through one Redis: exactly N of a burst are
admitted whatever process serves them, token reservations settle to the real usage, and concurrency
leases are released however a request ends (its answer, an upstream failure, the client leaving) or
expire when the worker holding them is killed.

Every key is written before the gateways start, so every worker has it from its first full load and
no limit is spent on finding out whether a worker knows a key yet.
"""

from __future__ import annotations

import collections
import http.client
import json
import math
import os
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from budapp import grant, new_raw_key
from configs import dummy_provider, model_toml, openai_provider, toml_value
from conftest import CLIENT_TIMEOUT_S
from upstream import USAGE

from .limits_helpers import DENIED
from .polling import INITIAL_LOAD_TIMEOUT_S, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
ALGORITHMS = ("fixed_window", "sliding_window", "token_bucket")
WORKERS = 2
#: Long enough for a busy two-core machine: every check must go to Redis, none to the fallback.
REDIS_TIMEOUT_MS = 1000
LEASE_TTL_S = 2
SETTINGS = {"workers": WORKERS, "rate_limits": {"redis_timeout_ms": REDIS_TIMEOUT_MS, "lease_ttl_s": LEASE_TTL_S}}

#: requests_per_minute of the exactness models; a burst of BURST_FACTOR times as many requests.
N = 20
BURST_FACTOR = 3
BURST_THREADS = 30
#: tokens_per_minute of the model streamed to one after another, and what each stream really uses.
SEQUENTIAL_TOKENS = 45
TOKENS_PER_STREAM = USAGE["prompt_tokens"] + USAGE["completion_tokens"]
#: tokens_per_minute of the model a burst of streams reserves against, each mostly its max_tokens.
BURST_TOKENS = 5000
MAX_TOKENS = 1000
STREAM_BURST = 12
#: max_concurrent_requests of the slow model, and how slow its upstream is.
K = 3
SLOW_MS = 1500
#: Streams that hold their lease far longer than any test waits: the first event at once, then 20 s.
HELD_STREAM = "stream-delay-20000-1"
#: Streams read to their end, each followed at once by a request on the other gateway.
STREAM_END_ROUNDS = 5
#: Bounds on a busy two-core machine.
IN_FLIGHT_TIMEOUT_S = 5.0  # until the upstream has every request of a batch sent at once
HANGUP_RELEASE_S = 1.5  # from closing the client connection until a new request is admitted
LEASE_EXPIRY_MARGIN_S = 1.5  # past lease_ttl_s, for the expiry to be seen and the probe to pass
BURST_TIMEOUT_S = 30.0

CONCURRENCY_BODY = {"error": {"message": "Too many concurrent requests", "type": "rate_limit_error",
                              "param": None, "code": "concurrency_limit_exceeded"}}


def _limited(name: str, provider: dict, limits: dict) -> str:
    """A model of one provider and its ``[models."name".rate_limits]`` table (after the model's own)."""
    table = "".join(f"{k} = {toml_value(v)}\n" for k, v in limits.items())
    return model_toml(name, {"p": provider}) + f"\n[models.{json.dumps(name)}.rate_limits]\n" + table


def _models(api: str) -> str:
    exact = [_limited(f"exact-{a}", openai_provider("ok", api), {"algorithm": a, "requests_per_minute": N})
             for a in ALGORITHMS]
    return "".join([
        *exact,
        _limited("tokens-seq", openai_provider("ok", api), {"tokens_per_minute": SEQUENTIAL_TOKENS}),
        _limited("tokens-burst", openai_provider(HELD_STREAM, api),
                 {"algorithm": "fixed_window", "tokens_per_minute": BURST_TOKENS}),
        _limited("lease-slow", openai_provider(f"slow-{SLOW_MS}", api), {"max_concurrent_requests": K}),
        _limited("lease-fail", dummy_provider("error"), {"max_concurrent_requests": 1}),
        _limited("lease-stream", openai_provider(HELD_STREAM, api), {"max_concurrent_requests": 1}),
        _limited("lease-quick-stream", openai_provider("ok", api), {"max_concurrent_requests": 1}),
    ])


MODELS = [f"exact-{a}" for a in ALGORITHMS] + ["tokens-seq", "tokens-burst", "lease-slow", "lease-fail",
                                               "lease-stream", "lease-quick-stream"]
#: One key per test, so no test spends another's limits.
KEY_NAMES = [f"exact-{a}" for a in ALGORITHMS] + ["tokens-seq", "tokens-burst", "cap", "success", "fail",
                                                  "stream-end", "hangup", "kill"]


class _Key:
    def __init__(self) -> None:
        self.raw = new_raw_key()
        self.id = str(uuid.uuid4())

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.raw}"}

    def lease_set(self, model: str) -> str:
        """The Redis sorted set of the key's concurrency leases on ``model``."""
        return f"rl:{{m={model}|k:{self.id}}}:leases"


@pytest.fixture(scope="module")
def keys(redis_server, budapp_factory) -> dict[str, _Key]:
    writer = budapp_factory(redis_server, 0)
    made = {name: _Key() for name in KEY_NAMES}
    for key in made.values():
        metadata = {"api_key_id": key.id, "user_id": f"user-{key.id}", "api_key_project_id": "project-test"}
        writer.put_key(key.raw, {m: grant(m) for m in MODELS}, metadata=metadata)
    return made


def _wait_workers_loaded(gw) -> None:
    """Until every worker has logged its first full load from Redis (each worker loads on its own)."""
    loaded = wait_until(lambda: gw.log().count(" from redis in ") >= WORKERS, INITIAL_LOAD_TIMEOUT_S)
    assert loaded is not None, f"not every worker loaded from redis in {INITIAL_LOAD_TIMEOUT_S} s:\n{gw.log()}"


@pytest.fixture(scope="module")
def gws(module_gateway_factory, redis_server, keys, upstream, store_env):
    """Two gateways on the same Redis database."""
    started = []
    for _ in range(2):
        gw = module_gateway_factory(_models(upstream.url), settings=SETTINGS, env=store_env(redis_server.url(0)))
        started.append(gw)
    for gw in started:
        _wait_workers_loaded(gw)
    return started


@pytest.fixture(scope="module")
def redis_client(redis_server):
    return redis_server.client(0)


def _chat(gw, key: _Key, model: str, **extra):
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES, **extra},
                      headers=key.headers)


class _Stream:
    """A streamed chat completion whose head has arrived; the rest is left unread until ``close``."""

    def __init__(self, gw, key: _Key, model: str, body: bytes | None = None,
                 conn: http.client.HTTPConnection | None = None) -> None:
        self.conn = conn or http.client.HTTPConnection("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT_S)
        if body is None:
            body = json.dumps({"model": model, "messages": MESSAGES, "stream": True}).encode()
        self.conn.request("POST", "/v1/chat/completions", body=body,
                          headers={"Content-Type": "application/json", **key.headers})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.error = json.loads(self.resp.read()) if self.status != 200 else None

    def close(self) -> None:
        # NOTE: both: the response's file keeps the socket open after the connection lets go of it.
        self.resp.close()
        self.conn.close()


def _in_flight(upstream, provider_model: str, count: int) -> None:
    """Until the upstream has received ``count`` requests for ``provider_model``."""
    arrived = upstream.wait_for(lambda: len(upstream.requests_for(provider_model)) >= count, IN_FLIGHT_TIMEOUT_S)
    assert arrived, f"{len(upstream.requests_for(provider_model))} of {count} requests reached the upstream"


class TestExactAcrossProcesses:
    @pytest.mark.parametrize("algorithm", ALGORITHMS)
    def test_burst_over_two_gateways_admits_exactly_n(self, gws, keys, algorithm):
        key, model = keys[f"exact-{algorithm}"], f"exact-{algorithm}"
        with ThreadPoolExecutor(BURST_THREADS) as pool:
            futures = [pool.submit(_chat, gws[i % 2], key, model) for i in range(BURST_FACTOR * N)]
            statuses = collections.Counter(f.result(BURST_TIMEOUT_S).status for f in futures)
        assert statuses == {200: N, 429: (BURST_FACTOR - 1) * N}
        # Every check went to Redis: with a fallback to the in-process limiter the count would prove nothing.
        assert [gw.metric_total("budgateway_rate_limit_local_checks_total") for gw in gws] == [0, 0]
        denials = sum(gw.metric_total("budgateway_limit_denials_total", model=model, code="rate_limit_exceeded")
                      for gw in gws)
        assert denials == (BURST_FACTOR - 1) * N


class TestTokenLimits:
    def test_streams_one_after_another_are_admitted_until_their_real_usage_reaches_the_limit(
            self, gws, keys, upstream):
        key = keys["tokens-seq"]
        admitted = math.ceil(SEQUENTIAL_TOKENS / TOKENS_PER_STREAM)
        statuses = []
        for i in range(admitted + 2):
            resp = _chat(gws[i % 2], key, "tokens-seq", stream=True)
            statuses.append(resp.status)
            if resp.status == 200:
                assert resp.sse_data()[-1] == "[DONE]", resp
        assert statuses == [200] * admitted + [429] * 2, "a stream's reservation outlived the stream's end"
        # The usage each stream settled to is the upstream's: the gateway asked for it on every stream.
        sent = upstream.requests_for("ok")
        assert [r.body.get("stream_options") for r in sent] == [{"include_usage": True}] * admitted

    def test_concurrent_streams_are_admitted_by_their_reservations(self, gws, keys):
        key = keys["tokens-burst"]
        body = json.dumps({"model": "tokens-burst", "messages": MESSAGES, "stream": True,
                           "max_tokens": MAX_TOKENS}).encode()
        estimate = len(body) // 4 + MAX_TOKENS
        # Admitted while the reserved total is under the limit: the k-th is admitted when (k - 1) * estimate < T.
        admitted = math.ceil(BURST_TOKENS / estimate)
        assert admitted < STREAM_BURST
        barrier = threading.Barrier(STREAM_BURST)

        def open_one(i: int) -> _Stream:
            barrier.wait(BURST_TIMEOUT_S)
            return _Stream(gws[i % 2], key, "tokens-burst", body)

        with ThreadPoolExecutor(STREAM_BURST) as pool:
            streams = list(pool.map(open_one, range(STREAM_BURST), timeout=BURST_TIMEOUT_S))
        try:
            # None has ended (each holds for 20 s), so no reservation was settled during the burst.
            statuses = collections.Counter(s.status for s in streams)
            assert statuses == {200: admitted, 429: STREAM_BURST - admitted}
            assert [s.error for s in streams if s.status == 429] == [DENIED] * (STREAM_BURST - admitted)
        finally:
            for s in streams:
                s.close()


class TestConcurrencyLeases:
    def _fill(self, gws, key: _Key) -> list:
        """K slow requests in flight, spread over both gateways; their futures."""
        pool = ThreadPoolExecutor(K)
        futures = [pool.submit(_chat, gws[i % 2], key, "lease-slow") for i in range(K)]
        pool.shutdown(wait=False)
        return futures

    def test_request_over_the_cap_is_refused_while_k_are_in_flight(self, gws, keys, upstream):
        key = keys["cap"]
        futures = self._fill(gws, key)
        _in_flight(upstream, f"slow-{SLOW_MS}", K)
        over = [_chat(gw, key, "lease-slow") for gw in gws]
        assert [(r.status, r.json()) for r in over] == [(429, CONCURRENCY_BODY)] * 2
        assert [f.result(CLIENT_TIMEOUT_S).status for f in futures] == [200] * K

    def test_leases_are_released_with_the_answers(self, gws, keys, upstream, redis_client):
        key = keys["success"]
        futures = self._fill(gws, key)
        _in_flight(upstream, f"slow-{SLOW_MS}", K)
        assert _chat(gws[0], key, "lease-slow").status == 429
        assert [f.result(CLIENT_TIMEOUT_S).status for f in futures] == [200] * K
        assert redis_client.zcard(key.lease_set("lease-slow")) == 0
        assert _chat(gws[1], key, "lease-slow").status == 200

    def test_lease_is_released_when_the_upstream_fails(self, gws, keys, redis_client):
        key = keys["fail"]
        statuses = [_chat(gws[i % 2], key, "lease-fail").status for i in range(4)]
        # With a lease left behind by a failure, every request after the first would be 429.
        assert all(s >= 500 for s in statuses), statuses
        assert redis_client.zcard(key.lease_set("lease-fail")) == 0

    def test_lease_is_released_by_the_end_of_a_stream(self, gws, keys, redis_client):
        key = keys["stream-end"]
        rounds = []
        for i in range(STREAM_END_ROUNDS):
            stream = _chat(gws[i % 2], key, "lease-quick-stream", stream=True)
            # Sent the moment the client has the whole stream: its lease must be gone by then.
            probe = _chat(gws[(i + 1) % 2], key, "lease-quick-stream")
            rounds.append((stream.status, probe.status))
        assert rounds == [(200, 200)] * STREAM_END_ROUNDS, "a stream's lease outlived the stream's end"
        assert redis_client.zcard(key.lease_set("lease-quick-stream")) == 0

    def test_lease_is_released_when_the_client_hangs_up(self, gws, keys, redis_client):
        key = keys["hangup"]
        stream = _Stream(gws[0], key, "lease-stream")
        assert stream.status == 200, stream.error
        try:
            # The non-streamed answer of this model comes at once: a probe, not a second long request.
            assert _chat(gws[1], key, "lease-stream").json() == CONCURRENCY_BODY
        finally:
            stream.close()
        passed = wait_until(lambda: _chat(gws[1], key, "lease-stream").status == 200, HANGUP_RELEASE_S)
        assert passed is not None, f"no request admitted within {HANGUP_RELEASE_S} s of the hang-up"
        assert redis_client.zcard(key.lease_set("lease-stream")) == 0

    def test_lease_of_a_killed_worker_expires_after_its_ttl(self, gws, keys, redis_client):
        key = keys["kill"]
        conn = http.client.HTTPConnection("127.0.0.1", gws[0].port, timeout=CLIENT_TIMEOUT_S)
        # The worker that answers /status on this keep-alive connection serves the stream after it too.
        conn.request("GET", "/status")
        status = conn.getresponse()
        worker_pid = json.loads(status.read())["pid"]
        assert worker_pid != gws[0].proc.pid
        stream = _Stream(gws[0], key, "lease-stream", conn=conn)
        assert stream.status == 200, stream.error
        try:
            os.kill(worker_pid, signal.SIGKILL)
            # Nobody released the lease: it outlives its worker until its TTL runs out.
            assert _chat(gws[1], key, "lease-stream").json() == CONCURRENCY_BODY
            timeout = LEASE_TTL_S + LEASE_EXPIRY_MARGIN_S
            passed = wait_until(lambda: _chat(gws[1], key, "lease-stream").status == 200, timeout)
            assert passed is not None, f"the killed worker's lease did not expire within {timeout} s"
        finally:
            stream.close()
        assert redis_client.zcard(key.lease_set("lease-stream")) == 0
