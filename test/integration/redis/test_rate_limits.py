"""Rate limits against a real Redis: each algorithm's count, headers and reset; per key, model and client
scopes; token limits; defaults and switches; TensorZero's ``[[rate_limiting.rules]]``; limits changed
while the gateway runs; and Redis going away mid-test (in-process limiting, or 503) and coming back.

The gateways are shared by the module and run one worker (so an in-process limit of N admits exactly N).
Each test counts on a key, model, client or tag value of its own, so no two tests share a counter.
The outage tests run last and in order: ``TestWhileRedisIsDown`` with their Redis stopped, then it is
started again (empty) for ``TestAfterRedisRestarts``.
"""

from __future__ import annotations

import json
import time
import uuid

import openai
import pytest
from budapp import grant, new_raw_key
from configs import dummy_provider, toml_value

from providers.dummy import DEFAULT_TEXT

from .limits_helpers import (
    DENIED,
    UNAVAILABLE,
    assert_denied,
    assert_request_headers,
    duration_s,
    limited_model,
)
from .polling import CHANGE_VISIBLE_S, wait_loaded, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
AUTH_DB, OPEN_DB = 0, 1
#: The limits' Redis timeout in these gateways: generous, so a busy machine does not time out spuriously.
REDIS_TIMEOUT_MS = 500
#: Each answer's client timeout: with Redis gone too, no request may hang.
REQUEST_TIMEOUT_S = 5.0
#: From Redis being started again until each gateway counts in it once more (retried a second after a
#: failure; a stale pooled connection costs one more failure).
RESUME_TIMEOUT_S = 10.0
LOCAL_CHECKS = "budgateway_rate_limit_local_checks_total"
DENIALS = "budgateway_limit_denials_total"
LOCAL_REASONS = {"redis_error", "redis_timeout", "redis_unavailable"}
#: The dummy provider's usage: a prompt token per four characters of the messages' JSON, and a
#: completion token per word of its answer.
DUMMY_COMPLETION_TOKENS = len(DEFAULT_TEXT.split(" "))
_EMPTY_MESSAGE_JSON = len(json.dumps([{"role": "user", "content": ""}], separators=(",", ":")))


class _Case:
    """A per-minute model of one algorithm: what it admits, its longest reset, its longest wait."""

    def __init__(self, limits: dict, admits: int, reset_s: int, wait_s: int) -> None:
        self.limits, self.admits, self.reset_s, self.wait_s = limits, admits, reset_s, wait_s


PER_MINUTE = {
    "fixed_window": _Case({"algorithm": "fixed_window", "requests_per_minute": 3}, 3, 60, 60),
    # The weighted previous window fades over one more window: a slot frees within 1.5 windows.
    "sliding_window": _Case({"algorithm": "sliding_window", "requests_per_minute": 3}, 3, 60, 90),
    # A burst of 4 over a refill of 2 a minute: a token back within 30 s, the bucket full within 120 s.
    "token_bucket": _Case({"algorithm": "token_bucket", "requests_per_minute": 2, "burst_size": 4}, 4, 120, 30),
}
#: Models whose windows are a second long, for the tests that wait a window out.
PER_SECOND = {
    "fixed_window": {"algorithm": "fixed_window", "requests_per_second": 2},
    "sliding_window": {"algorithm": "sliding_window", "requests_per_second": 2},
    "token_bucket": {"algorithm": "token_bucket", "requests_per_second": 1, "burst_size": 2},
}
PER_SECOND_ADMITS = 2
ALGORITHMS = list(PER_MINUTE)
#: ``[gateway.rate_limits] default_requests_per_minute`` of the authenticated gateway.
DEFAULT_RPM = 3
TOKENS_FIXED, TOKENS_BUCKET = 1000, 120
#: What the token bucket test overshoots its limit by: at 2 tokens a second, 1.5 s of refusals.
TOKENS_OVER = 3


def _payload(model: str, body: dict | None = None) -> dict:
    return {"model": model, "messages": MESSAGES, **(body or {})}


def _chat(gw, model: str, key: str | None = None, *, body: dict | None = None,
          headers: dict[str, str] | None = None):
    hdrs = dict(headers or {})
    if key is not None:
        hdrs["Authorization"] = f"Bearer {key}"
    return gw.request("POST", "/v1/chat/completions", _payload(model, body), headers=hdrs,
                      timeout=REQUEST_TIMEOUT_S)


def _statuses(gw, model: str, key: str | None = None, n: int = 1, **kwargs) -> list[int]:
    return [_chat(gw, model, key, **kwargs).status for _ in range(n)]


def _within(timeout: float, predicate) -> float:
    """Seconds until ``predicate`` held; fails the test if it did not within ``timeout``."""
    elapsed = wait_until(predicate, timeout)
    assert elapsed is not None, f"not effective within {timeout} s"
    return elapsed


def _content_for_tokens(total: int) -> str:
    """A user message for which the dummy reports ``total`` tokens of usage."""
    return "x" * (4 * (total - DUMMY_COMPLETION_TOKENS) - _EMPTY_MESSAGE_JSON)


# -- the authenticated gateway: budapp keys, limits per key and model --------------------------------

AUTH_MODELS = "".join(
    [limited_model(f"rpm-{alg}", case.limits) for alg, case in PER_MINUTE.items()]
    + [limited_model(f"rps-{alg}", limits) for alg, limits in PER_SECOND.items()]
    + [limited_model(name, {"algorithm": "fixed_window", "requests_per_minute": 2})
       for name in ("sdk-limited", "scoped-a", "scoped-b")]
    + [limited_model("tok-fixed", {"algorithm": "fixed_window", "tokens_per_minute": TOKENS_FIXED}),
       limited_model("tok-bucket", {"algorithm": "token_bucket", "tokens_per_minute": TOKENS_BUCKET}),
       limited_model("plain"),
       limited_model("switched-off", {"enabled": False, "requests_per_minute": 1})]
)


@pytest.fixture(scope="module")
def auth_redis(redis_server):
    return redis_server.client(AUTH_DB)


@pytest.fixture(scope="module")
def auth_writer(redis_server, budapp_factory, key_pair):
    return budapp_factory(redis_server, AUTH_DB, key_pair)


@pytest.fixture(scope="module")
def auth_gw(module_gateway_factory, redis_server, key_pair, store_env):
    settings = {"workers": 1, "rate_limits": {"default_requests_per_minute": DEFAULT_RPM,
                                              "redis_timeout_ms": REDIS_TIMEOUT_MS}}
    env = store_env(redis_server.url(AUTH_DB), private_key=key_pair.pkcs1_pem())
    gateway = module_gateway_factory(AUTH_MODELS, settings=settings, env=env)
    wait_loaded(gateway)
    return gateway


@pytest.fixture
def key_for(auth_gw, auth_writer):
    """``make(*models) -> (raw key, api_key_id)``: a budapp key for the config models, once the gateway has it."""

    def make(*models: str) -> tuple[str, str]:
        raw, key_id = new_raw_key(), str(uuid.uuid4())
        metadata = {"api_key_id": key_id, "user_id": f"user-{key_id}", "api_key_project_id": "project-test"}
        auth_writer.put_key(raw, {m: grant(m) for m in models}, metadata=metadata)
        auth = {"Authorization": f"Bearer {raw}"}
        _within(CHANGE_VISIBLE_S, lambda: auth_gw.request("GET", "/v1/models", headers=auth).status == 200)
        return raw, key_id

    return make


@pytest.mark.parametrize("algorithm", ALGORITHMS)
class TestAlgorithms:
    def test_exactly_the_limit_is_admitted_then_429(self, auth_gw, key_for, algorithm):
        model, case = f"rpm-{algorithm}", PER_MINUTE[algorithm]
        key, _ = key_for(model)
        denied_before = auth_gw.metric_total(DENIALS, model=model, code="rate_limit_exceeded")
        answers = [_chat(auth_gw, model, key) for _ in range(case.admits + 2)]
        assert [a.status for a in answers] == [200] * case.admits + [429] * 2
        for resp in answers[case.admits:]:
            assert_denied(resp, case.wait_s)
        assert auth_gw.metric_total(DENIALS, model=model, code="rate_limit_exceeded") == denied_before + 2

    def test_admitted_answers_count_the_remaining_down(self, auth_gw, key_for, algorithm):
        model, case = f"rpm-{algorithm}", PER_MINUTE[algorithm]
        key, _ = key_for(model)
        for remaining in reversed(range(case.admits)):
            sent_at = time.time()
            resp = _chat(auth_gw, model, key)
            assert resp.status == 200, resp
            assert_request_headers(resp, sent_at, case.admits, remaining, case.reset_s)

    def test_refusal_carries_the_limit_headers(self, auth_gw, key_for, algorithm):
        model, case = f"rpm-{algorithm}", PER_MINUTE[algorithm]
        key, _ = key_for(model)
        assert _statuses(auth_gw, model, key, case.admits) == [200] * case.admits
        sent_at = time.time()
        resp = _chat(auth_gw, model, key)
        assert_denied(resp, case.wait_s)
        assert_request_headers(resp, sent_at, case.admits, 0, case.reset_s)

    def test_request_after_retry_after_is_admitted(self, auth_gw, key_for, algorithm):
        model = f"rps-{algorithm}"
        key, _ = key_for(model)
        assert _statuses(auth_gw, model, key, PER_SECOND_ADMITS) == [200] * PER_SECOND_ADMITS
        retry = assert_denied(_chat(auth_gw, model, key), wait_s=2)
        time.sleep(retry)  # NOTE: the wait under test: the client is told to retry after this long
        resp = _chat(auth_gw, model, key)
        assert resp.status == 200, resp


class TestOpenAISDK:
    def test_sdk_sees_the_headers_and_raises_rate_limit_error(self, auth_gw, key_for, sdk):
        key, _ = key_for("sdk-limited")
        client = sdk(auth_gw, key)
        for remaining in (1, 0):
            raw = client.chat.completions.with_raw_response.create(model="sdk-limited", messages=MESSAGES)
            assert raw.headers["x-ratelimit-remaining-requests"] == str(remaining)
            assert raw.parse().choices[0].message.content
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="sdk-limited", messages=MESSAGES)
        error = caught.value
        assert (error.status_code, error.code, error.type) == (429, "rate_limit_exceeded", "rate_limit_error")
        headers = error.response.headers
        assert headers["x-ratelimit-limit-requests"] == "2"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert int(headers["retry-after"]) >= 1 and headers["retry-after-ms"].isdigit()


class TestScopes:
    def test_each_api_key_has_its_own_count(self, auth_gw, auth_redis, key_for):
        (first, first_id), (second, _) = key_for("scoped-a"), key_for("scoped-a")
        assert _statuses(auth_gw, "scoped-a", first, 3) == [200, 200, 429]
        assert _statuses(auth_gw, "scoped-a", second, 3) == [200, 200, 429]
        # Counted under the key's budapp api_key_id.
        assert float(auth_redis.hget(f"rl:{{m=scoped-a|k:{first_id}}}:fw:requests:60", "c")) == 2

    def test_each_model_has_its_own_count_for_one_key(self, auth_gw, key_for):
        key, _ = key_for("scoped-a", "scoped-b")
        assert _statuses(auth_gw, "scoped-a", key, 3) == [200, 200, 429]
        assert _statuses(auth_gw, "scoped-b", key, 3) == [200, 200, 429]


class TestTokenLimits:
    def test_admission_reserves_the_estimate_and_shows_the_token_headers(self, auth_gw, key_for):
        key, _ = key_for("tok-fixed")
        body = {"max_tokens": 50}
        resp = _chat(auth_gw, "tok-fixed", key, body=body)
        assert resp.status == 200, resp
        estimate = len(json.dumps(_payload("tok-fixed", body)).encode()) // 4 + 50
        h = resp.headers
        assert h["x-ratelimit-limit-tokens"] == str(TOKENS_FIXED)
        assert h["x-ratelimit-remaining-tokens"] == str(TOKENS_FIXED - estimate)
        assert 0 <= duration_s(h["x-ratelimit-reset-tokens"]) <= 60
        assert h["X-RateLimit-Limit"] == str(TOKENS_FIXED)

    def test_reservation_is_settled_to_the_real_usage(self, auth_gw, auth_redis, key_for):
        key, key_id = key_for("tok-fixed")
        body = {"max_tokens": 50}
        used = _chat(auth_gw, "tok-fixed", key, body=body).json()["usage"]["total_tokens"]
        counter = f"rl:{{m=tok-fixed|k:{key_id}}}:fw:tokens:60"
        _within(CHANGE_VISIBLE_S, lambda: float(auth_redis.hget(counter, "c") or -1) == used)
        estimate = len(json.dumps(_payload("tok-fixed", body)).encode()) // 4 + 50
        resp = _chat(auth_gw, "tok-fixed", key, body=body)
        assert resp.headers["x-ratelimit-remaining-tokens"] == str(TOKENS_FIXED - used - estimate)

    def test_usage_over_the_limit_is_refused_until_the_bucket_refills(self, auth_gw, auth_redis, key_for):
        key, key_id = key_for("tok-bucket")
        big = {"messages": [{"role": "user", "content": _content_for_tokens(TOKENS_BUCKET + TOKENS_OVER)}]}
        first = _chat(auth_gw, "tok-bucket", key, body=big)
        assert first.status == 200, first
        assert first.json()["usage"]["total_tokens"] == TOKENS_BUCKET + TOKENS_OVER
        level = f"rl:{{m=tok-bucket|k:{key_id}}}:tb:tokens:60"
        _within(CHANGE_VISIBLE_S, lambda: float(auth_redis.hget(level, "l") or 0) == -TOKENS_OVER)
        denied = _chat(auth_gw, "tok-bucket", key, body={"max_tokens": 5})
        retry = assert_denied(denied, wait_s=2)
        h = denied.headers
        assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == (str(TOKENS_BUCKET), "0")
        assert duration_s(h["x-ratelimit-reset-tokens"]) > 0
        time.sleep(retry)  # NOTE: the wait under test: the bucket has refilled past empty by then
        resp = _chat(auth_gw, "tok-bucket", key, body={"max_tokens": 5})
        assert resp.status == 200, resp


class TestDefaultsAndSwitches:
    def test_default_requests_per_minute_limits_a_model_without_its_own(self, auth_gw, key_for):
        key, _ = key_for("plain")
        answers = [_chat(auth_gw, "plain", key) for _ in range(DEFAULT_RPM + 1)]
        assert [a.status for a in answers] == [200] * DEFAULT_RPM + [429]
        assert answers[0].headers["x-ratelimit-limit-requests"] == str(DEFAULT_RPM)

    def test_model_with_enabled_false_is_not_limited(self, auth_gw, key_for):
        key, _ = key_for("switched-off")
        answers = [_chat(auth_gw, "switched-off", key) for _ in range(DEFAULT_RPM + 2)]
        assert [a.status for a in answers] == [200] * (DEFAULT_RPM + 2)
        assert [a.headers.get("x-ratelimit-limit-requests") for a in answers] == [None] * len(answers)

    def test_gateway_with_enabled_false_limits_nothing(self, module_gateway_factory):
        gateway = module_gateway_factory(limited_model("off", {"requests_per_minute": 1}),
                                         settings={"workers": 1, "rate_limits": {"enabled": False}})
        answers = [_chat(gateway, "off") for _ in range(3)]
        assert [a.status for a in answers] == [200] * 3
        assert [a.headers.get("X-RateLimit-Limit") for a in answers] == [None] * 3


# -- the open gateway: no auth; raw keys and client IPs, TensorZero's rules, live changes --------------

RULES = [
    {"model_inferences_per_minute": 2, "priority": 0,
     "scope": [{"tag_key": "user_id", "tag_value": "tensorzero::each"}]},
    {"model_inferences_per_minute": 4, "priority": 1, "scope": [{"tag_key": "user_id", "tag_value": "vip"}]},
    {"model_inferences_per_minute": 5, "priority": 1, "scope": [{"tag_key": "user_id", "tag_value": "vip-team"}]},
    {"model_inferences_per_minute": 2, "always": True,
     "scope": [{"tag_key": "team", "tag_value": "tensorzero::each"}]},
    {"model_inferences_per_minute": 3, "priority": 0,
     "scope": [{"tag_key": "tenant", "tag_value": "tensorzero::total"}]},
]
OPEN_MODELS = "".join(
    [limited_model(name, {"algorithm": "fixed_window", "requests_per_minute": 2}) for name in ("open-keys", "open-ips")]
    + [limited_model(name) for name in ("tz", "live-publish", "live-delete")]
    + ["\n[[rate_limiting.rules]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in rule.items())
       for rule in RULES]
)
DUMMY_SECTION = {"d": dummy_provider("hello")}


@pytest.fixture(scope="module")
def open_redis(redis_server):
    return redis_server.client(OPEN_DB)


@pytest.fixture(scope="module")
def open_writer(redis_server, budapp_factory, key_pair):
    return budapp_factory(redis_server, OPEN_DB, key_pair)


@pytest.fixture(scope="module")
def open_gw(module_gateway_factory, redis_server, key_pair, store_env):
    settings = {"workers": 1, "authentication": {"enabled": False},
                "rate_limits": {"redis_timeout_ms": REDIS_TIMEOUT_MS}}
    env = store_env(redis_server.url(OPEN_DB), private_key=key_pair.pkcs1_pem())
    gateway = module_gateway_factory(OPEN_MODELS, settings=settings, env=env)
    wait_loaded(gateway)
    return gateway


def _tagged(gw, tags: dict[str, str], n: int) -> list[int]:
    return _statuses(gw, "tz", n=n, body={"tensorzero::tags": tags})


def _fresh(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


class TestScopesWithoutAuth:
    def test_each_raw_key_has_its_own_count(self, open_gw):
        first, second = new_raw_key("sk-"), new_raw_key("sk-")
        assert _statuses(open_gw, "open-keys", first, 3) == [200, 200, 429]
        assert _statuses(open_gw, "open-keys", second, 3) == [200, 200, 429]

    def test_without_a_key_each_client_ip_has_its_own_count(self, open_gw):
        # The loopback peer is a trusted proxy: X-Forwarded-For names the client.
        for ip in ("203.0.113.10", "203.0.113.11"):
            assert _statuses(open_gw, "open-ips", n=3, headers={"X-Forwarded-For": ip}) == [200, 200, 429]


class TestTensorZeroRules:
    def test_each_tag_value_is_limited_on_its_own(self, open_gw):
        for user in (_fresh("user"), _fresh("user")):
            assert _tagged(open_gw, {"user_id": user}, 3) == [200, 200, 429]

    def test_refusal_is_the_rate_limit_error(self, open_gw):
        user = _fresh("user")
        assert _tagged(open_gw, {"user_id": user}, 2) == [200, 200]
        assert_denied(_chat(open_gw, "tz", body={"tensorzero::tags": {"user_id": user}}), wait_s=60)

    def test_higher_priority_rule_for_one_value_overrides(self, open_gw):
        assert _tagged(open_gw, {"user_id": "vip"}, 5) == [200] * 4 + [429]

    def test_always_rule_applies_beside_the_highest_priority_rule(self, open_gw):
        # vip-team's own rule (priority 1, 5 a minute) wins over user_id's; team's (always, 2) still applies.
        assert _tagged(open_gw, {"user_id": "vip-team", "team": _fresh("team")}, 3) == [200, 200, 429]

    def test_total_rule_counts_every_value_together(self, open_gw):
        statuses = [_tagged(open_gw, {"tenant": _fresh("tenant")}, 1)[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]

    def test_rule_whose_tag_is_absent_does_not_limit(self, open_gw):
        assert _statuses(open_gw, "tz", n=6) == [200] * 6
        assert _tagged(open_gw, {"unrelated": "x"}, 6) == [200] * 6


def _limit_seen(gw, model: str, limit: int | None) -> bool:
    """Whether ``model`` answers a new client with ``limit`` requests (None: with no limit at all)."""
    resp = _chat(gw, model, new_raw_key("sk-"))
    shown = resp.headers.get("x-ratelimit-limit-requests")
    return resp.status == 200 and shown == (None if limit is None else str(limit))


def _publish(client, model: str, action: str, config: dict | None = None) -> None:
    message = json.dumps({"action": action, "config": config})
    assert client.publish(f"rate_limit:config:{model}", message) >= 1, "no gateway is subscribed"


class TestLiveChanges:
    def test_published_limit_applies_within_a_second(self, open_gw, open_redis):
        assert _limit_seen(open_gw, "live-publish", None)
        _publish(open_redis, "live-publish", "create", {"requests_per_minute": 2})
        _within(CHANGE_VISIBLE_S, lambda: _limit_seen(open_gw, "live-publish", 2))
        assert _statuses(open_gw, "live-publish", new_raw_key("sk-"), 3) == [200, 200, 429]

    def test_published_delete_removes_the_limit_within_a_second(self, open_gw, open_redis):
        _publish(open_redis, "live-delete", "create", {"requests_per_minute": 1})
        _within(CHANGE_VISIBLE_S, lambda: _limit_seen(open_gw, "live-delete", 1))
        key = new_raw_key("sk-")
        assert _statuses(open_gw, "live-delete", key, 2) == [200, 429]
        _publish(open_redis, "live-delete", "delete")
        _within(CHANGE_VISIBLE_S, lambda: _chat(open_gw, "live-delete", key).status == 200)
        assert _limit_seen(open_gw, "live-delete", None)

    def test_model_table_limits_change_within_a_second(self, open_gw, open_writer):
        endpoint = str(uuid.uuid4())
        open_writer.put_model(endpoint, DUMMY_SECTION, rate_limits={"requests_per_minute": 2})
        _within(CHANGE_VISIBLE_S, lambda: _limit_seen(open_gw, endpoint, 2))
        open_writer.put_model(endpoint, DUMMY_SECTION, rate_limits={"requests_per_minute": 5})
        _within(CHANGE_VISIBLE_S, lambda: _limit_seen(open_gw, endpoint, 5))

    def test_model_table_change_ends_a_published_override(self, open_gw, open_redis, open_writer):
        endpoint = str(uuid.uuid4())
        open_writer.put_model(endpoint, DUMMY_SECTION, rate_limits={"requests_per_minute": 4})
        _within(CHANGE_VISIBLE_S, lambda: _limit_seen(open_gw, endpoint, 4))
        _publish(open_redis, endpoint, "update", {"requests_per_minute": 2})
        _within(CHANGE_VISIBLE_S, lambda: _limit_seen(open_gw, endpoint, 2))
        open_writer.put_model(endpoint, DUMMY_SECTION, rate_limits={"requests_per_minute": 6})
        _within(CHANGE_VISIBLE_S, lambda: _limit_seen(open_gw, endpoint, 6))


# -- Redis going away: two gateways on one Redis, failing open and failing closed ----------------------

OUTAGE_LIMIT = 3
OUTAGE_MODELS = "".join([
    limited_model("outage-limited", {"algorithm": "fixed_window", "requests_per_minute": OUTAGE_LIMIT}),
    limited_model("outage-wide", {"algorithm": "fixed_window", "requests_per_minute": 1_000_000}),
    limited_model("outage-free"),
])


class _Outage:
    """The outage's Redis and its two gateways: ``open`` fails open (the default), ``closed`` does not."""

    def __init__(self, server, fail_open_gw, fail_closed_gw) -> None:
        self.server, self.open, self.closed = server, fail_open_gw, fail_closed_gw


@pytest.fixture(scope="module")
def outage(module_redis_factory, module_gateway_factory, store_env):
    server = module_redis_factory()
    gateways = []
    for fail_open in (True, False):
        settings = {"workers": 1, "authentication": {"enabled": False},
                    "rate_limits": {"fail_open": fail_open, "redis_timeout_ms": REDIS_TIMEOUT_MS}}
        gateway = module_gateway_factory(OUTAGE_MODELS, settings=settings, env=store_env(server.url(0)))
        wait_loaded(gateway)
        gateways.append(gateway)
    return _Outage(server, *gateways)


@pytest.fixture(scope="module")
def redis_down(outage):
    outage.server.stop()


def _counts_in_redis(gw) -> bool:
    """Whether a limited request of ``gw`` was checked in Redis (no in-process check was counted)."""
    before = gw.metric_total(LOCAL_CHECKS)
    admitted = _chat(gw, "outage-wide", new_raw_key("sk-")).status == 200
    return admitted and gw.metric_total(LOCAL_CHECKS) == before


@pytest.fixture(scope="module")
def redis_restarted(redis_down, outage):
    outage.server.start()
    for gw in (outage.open, outage.closed):
        assert wait_until(lambda gw=gw: _counts_in_redis(gw), RESUME_TIMEOUT_S) is not None, gw.log()


def _assert_shared_count(outage) -> None:
    """One key's limit is counted once across both gateways."""
    key = new_raw_key("sk-")
    first = _statuses(outage.open, "outage-limited", key, OUTAGE_LIMIT - 1)
    second = _statuses(outage.closed, "outage-limited", key, 1)
    assert first + second == [200] * OUTAGE_LIMIT
    assert [_chat(gw, "outage-limited", key).status for gw in (outage.open, outage.closed)] == [429, 429]


class TestBeforeTheOutage:
    def test_two_gateways_share_one_count(self, outage):
        _assert_shared_count(outage)


@pytest.mark.usefixtures("redis_down")
class TestWhileRedisIsDown:
    def test_fail_open_limits_in_process(self, outage):
        gw = outage.open
        key, before = new_raw_key("sk-"), gw.metric_total(LOCAL_CHECKS)
        answers = [_chat(gw, "outage-limited", key) for _ in range(OUTAGE_LIMIT + 2)]
        assert [a.status for a in answers] == [200] * OUTAGE_LIMIT + [429] * 2
        assert answers[-1].json() == DENIED
        assert gw.metric_total(LOCAL_CHECKS) == before + len(answers)

    def test_local_checks_are_counted_by_reason(self, outage):
        gw = outage.open
        assert _chat(gw, "outage-wide", new_raw_key("sk-")).status == 200
        reasons = {r for r in LOCAL_REASONS if gw.metric_total(LOCAL_CHECKS, reason=r) > 0}
        assert reasons and reasons <= LOCAL_REASONS
        assert sum(gw.metric_total(LOCAL_CHECKS, reason=r) for r in LOCAL_REASONS) == gw.metric_total(LOCAL_CHECKS)

    def test_fail_closed_answers_503_for_limited_models(self, outage):
        answers = [_chat(outage.closed, "outage-limited", new_raw_key("sk-")) for _ in range(3)]
        assert [a.status for a in answers] == [503] * 3
        assert [a.json() for a in answers] == [UNAVAILABLE] * 3

    def test_fail_closed_still_serves_models_without_limits(self, outage):
        assert _statuses(outage.closed, "outage-free", new_raw_key("sk-"), 2) == [200, 200]


@pytest.mark.usefixtures("redis_restarted")
class TestAfterRedisRestarts:
    def test_two_gateways_share_one_count_again(self, outage):
        _assert_shared_count(outage)

    def test_counters_are_in_redis_again(self, outage):
        client = outage.server.client(0)
        before = set(client.scan_iter("rl:{m=outage-limited|*"))
        key = new_raw_key("sk-")
        assert _statuses(outage.open, "outage-limited", key, OUTAGE_LIMIT) == [200] * OUTAGE_LIMIT
        [counter] = set(client.scan_iter("rl:{m=outage-limited|*")) - before
        assert float(client.hget(counter, "c")) == OUTAGE_LIMIT
