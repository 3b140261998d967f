"""Routing: fallback across providers and fallback models, retries, and the all-providers-failed errors."""

from __future__ import annotations

import openai
import pytest
from configs import dummy_provider, model_toml, openai_provider
from upstream import CONTENT, refused_base_url

MESSAGES = [{"role": "user", "content": "hi"}]
# Provider timeouts written into this module's config. Slow upstreams take SLOW_MS, far beyond them.
TOTAL_MS, TTFT_MS, SLOW_MS = 600, 600, 3000
TIMEOUTS = {"non_streaming": {"total_ms": TOTAL_MS}, "streaming": {"ttft_ms": TTFT_MS, "total_ms": 10000}}
# The primary's failure, by test id: the upstream model name it is sent, or None for a refused connection.
FAILOVER_CAUSES = {
    "status-500": "status-500",
    "status-503": "status-503",
    "status-429": "status-429",
    "reset": "reset",
    "refused": None,
    "timeout": f"slow-{SLOW_MS}",
    "hang-after-headers": "hang-after-headers",
}
CLIENT_ERRORS = (400, 401, 422)


def _model(model: str, upstream_models: dict[str, str | None], api_base: str, **settings) -> str:
    """``model`` with a provider per entry, asking for that upstream model name (None: refused connection)."""
    providers = {name: openai_provider(model_name or "ok", api_base if model_name else refused_base_url(),
                                       timeouts=TIMEOUTS)
                 for name, model_name in upstream_models.items()}
    return model_toml(model, providers, **settings)


def _models(api: str) -> str:
    text = ""
    for cause, model_name in FAILOVER_CAUSES.items():
        text += _model(f"fb-{cause}", {"primary": model_name, "backup": "ok"}, api)
    for status in CLIENT_ERRORS:
        text += _model(f"client-error-{status}", {"primary": f"status-{status}", "backup": "ok"}, api)
    text += _model("chain", {"a": "status-500", "b": "status-503", "c": "ok-c"}, api)
    text += _model("with-fallback-model", {"p": "status-503"}, api, fallback_models=["other-model"])
    text += _model("other-model", {"p1": "ok-other"}, api)
    text += _model("all-fail", {"first-choice": "status-500", "second-choice": None}, api)
    text += _model("all-rate-limited", {"a": "status-429", "b": "status-429"}, api)
    text += _model("all-time-out", {"a": f"slow-{SLOW_MS}", "b": "hang-after-headers"}, api)
    text += _model("retried", {"p": "status-500"}, api, retry_config={"num_retries": 2, "max_delay_s": 1})
    for model, retries in (("flaky-retried", 1), ("flaky-unretried", 0)):
        text += model_toml(model, {"p": dummy_provider("flaky")},
                           retry_config={"num_retries": retries, "max_delay_s": 1})
    return text


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, upstream_client):
    return module_gateway_factory(_models(upstream.url), settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


def _error(resp, status: int) -> dict:
    assert resp.status == status, resp
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


class TestFallback:
    @pytest.mark.parametrize("cause", FAILOVER_CAUSES)
    def test_falls_back_to_the_next_provider(self, client, upstream, cause):
        raw = client.chat.completions.with_raw_response.create(model=f"fb-{cause}", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == CONTENT
        assert raw.headers["x-budgateway-provider"] == f"fb-{cause}/backup"
        assert raw.headers["x-budgateway-attempts"] == "2"
        tried = [FAILOVER_CAUSES[cause]] if FAILOVER_CAUSES[cause] else []
        assert [r.model for r in upstream.requests] == [*tried, "ok"]

    def test_providers_are_tried_in_routing_order(self, client, upstream):
        raw = client.chat.completions.with_raw_response.create(model="chain", messages=MESSAGES)
        assert raw.headers["x-budgateway-provider"] == "chain/c"
        assert raw.headers["x-budgateway-attempts"] == "3"
        assert [r.model for r in upstream.requests] == ["status-500", "status-503", "ok-c"]

    def test_fallback_model_answers_after_the_models_own_providers(self, client, upstream):
        raw = client.chat.completions.with_raw_response.create(model="with-fallback-model", messages=MESSAGES)
        resp = raw.parse()
        assert resp.choices[0].message.content == CONTENT
        assert resp.model == "with-fallback-model"
        assert raw.headers["x-budgateway-provider"] == "other-model/p1"
        assert raw.headers["x-budgateway-attempts"] == "2"
        assert [r.model for r in upstream.requests] == ["status-503", "ok-other"]


class TestStreamFallback:
    @pytest.mark.parametrize("cause", FAILOVER_CAUSES)
    def test_stream_falls_back_before_its_first_event(self, client, upstream, cause):
        raw = client.chat.completions.with_raw_response.create(model=f"fb-{cause}", messages=MESSAGES,
                                                               stream=True)
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CONTENT
        assert {c.model for c in chunks} == {f"fb-{cause}"}
        assert raw.headers["x-budgateway-provider"] == f"fb-{cause}/backup"
        assert raw.headers["x-budgateway-attempts"] == "2"
        tried = [FAILOVER_CAUSES[cause]] if FAILOVER_CAUSES[cause] else []
        assert [r.model for r in upstream.requests] == [*tried, "ok"]


class TestNoFallbackOnClientErrors:
    @pytest.mark.parametrize("status", CLIENT_ERRORS)
    def test_provider_client_error_reaches_the_client(self, client, status):
        with pytest.raises(openai.APIStatusError) as exc_info:
            client.chat.completions.create(model=f"client-error-{status}", messages=MESSAGES)
        assert exc_info.value.status_code == status
        assert f"upstream error {status}" in exc_info.value.message

    @pytest.mark.parametrize("status", CLIENT_ERRORS)
    def test_provider_client_error_is_not_retried_elsewhere(self, client, upstream, status):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=f"client-error-{status}", messages=MESSAGES)
        assert [r.model for r in upstream.requests] == [f"status-{status}"]

    def test_provider_client_error_reaches_a_streaming_client(self, client, upstream):
        with pytest.raises(openai.APIStatusError) as exc_info:
            list(client.chat.completions.create(model="client-error-400", messages=MESSAGES, stream=True))
        assert exc_info.value.status_code == 400
        assert "upstream error 400" in exc_info.value.message
        assert [r.model for r in upstream.requests] == ["status-400"]


class TestRetries:
    def test_flaky_provider_succeeds_with_one_retry(self, client):
        raw = client.chat.completions.with_raw_response.create(model="flaky-retried", messages=MESSAGES)
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-budgateway-provider"] == "flaky-retried/p"
        assert raw.headers["x-budgateway-attempts"] == "2"

    def test_flaky_provider_fails_without_retries(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "flaky-unretried", "messages": MESSAGES})
        assert _error(resp, 502)["code"] == "all_providers_failed"

    def test_num_retries_repeats_the_failing_provider(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "retried", "messages": MESSAGES})
        assert _error(resp, 502)["code"] == "all_providers_failed"
        assert [r.model for r in upstream.requests] == ["status-500"] * 3


class TestAllProvidersFailed:
    def test_502_lists_every_attempt(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "all-fail", "messages": MESSAGES})
        error = _error(resp, 502)
        assert (error["type"], error["code"]) == ("server_error", "all_providers_failed")
        assert "first-choice" in error["message"] and "second-choice" in error["message"]

    def test_429_when_every_attempt_was_rate_limited(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "all-rate-limited", "messages": MESSAGES})
        error = _error(resp, 429)
        assert (error["type"], error["code"]) == ("rate_limit_error", "all_providers_failed")

    def test_504_when_every_attempt_timed_out(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "all-time-out", "messages": MESSAGES})
        assert _error(resp, 504)["code"] == "all_providers_failed"

    def test_502_for_a_stream_whose_providers_all_fail_before_the_first_event(self, gw):
        resp = gw.request("POST", "/v1/chat/completions",
                          {"model": "all-fail", "messages": MESSAGES, "stream": True})
        error = _error(resp, 502)
        assert (error["type"], error["code"]) == ("server_error", "all_providers_failed")

    def test_sdk_raises_the_status_error(self, client):
        with pytest.raises(openai.APIStatusError) as exc_info:
            client.chat.completions.create(model="all-fail", messages=MESSAGES)
        assert exc_info.value.status_code == 502
        assert exc_info.value.code == "all_providers_failed"
