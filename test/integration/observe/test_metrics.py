"""``GET /metrics`` with two workers: every family the issue names, and counts equal to what was sent."""

from __future__ import annotations

import pytest
from configs import model_toml, openai_provider
from prometheus_client.parser import text_string_to_metric_families
from upstream_endpoints import USAGE

MESSAGES = [{"role": "user", "content": "hi"}]
PLAIN, STREAMS = 24, 6
PRICING = {"input_cost": 1.0, "output_cost": 2.0, "per_tokens": 1000, "currency": "USD"}
FAMILIES = (
    "budgateway_requests", "budgateway_request_duration_seconds", "budgateway_overhead_seconds",
    "budgateway_ttft_seconds", "budgateway_tokens", "budgateway_cost", "budgateway_provider_attempts",
    "budgateway_fallbacks", "budgateway_streams_active", "budgateway_streams_cut",
    "budgateway_analytics_queue_depth", "budgateway_analytics_rows",
)


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, tmp_path_factory):
    models = (model_toml("m", {"up": openai_provider("ok", upstream.url)}, pricing=PRICING)
              + model_toml("fb", {"bad": openai_provider("status-500", upstream.url),
                                  "good": openai_provider("ok", upstream.url)})
              + model_toml("cut", {"up": openai_provider("close-mid-stream-2", upstream.url)}))
    spool = tmp_path_factory.mktemp("spool")
    gw = module_gateway_factory(models, "--workers", "2", settings={"observability.spool_dir": str(spool),
                                                                   "observability.flush_interval_ms": 100})
    for _ in range(PLAIN):
        assert gw.request("POST", "/v1/chat/completions", {"model": "m", "messages": MESSAGES}).status == 200
    client = gw.openai()
    for _ in range(STREAMS):
        list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert gw.request("POST", "/v1/chat/completions", {"model": "fb", "messages": MESSAGES}).status == 200
    assert gw.request("POST", "/v1/chat/completions", {"model": "nope", "messages": MESSAGES}).status == 404
    cut = gw.request("POST", "/v1/chat/completions", {"model": "cut", "messages": MESSAGES, "stream": True})
    assert b"stream_failed" in cut.body
    return gw


def _samples(gw) -> list:
    text = gw.request("GET", "/metrics").body.decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _total(samples, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def test_every_family_is_there(gw):
    text = gw.request("GET", "/metrics").body.decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert set(FAMILIES) <= names, set(FAMILIES) - names


def test_counts_equal_what_was_sent(gw):
    samples = _samples(gw)
    route = "/v1/chat/completions"
    assert _total(samples, "budgateway_requests_total", route=route, model="m", provider="up",
                  status="200") == PLAIN + STREAMS
    assert _total(samples, "budgateway_request_duration_seconds_count", route=route, model="m") == PLAIN + STREAMS
    assert _total(samples, "budgateway_ttft_seconds_count", model="m", provider="up") == STREAMS
    assert _total(samples, "budgateway_tokens_total", model="m", kind="input") == (PLAIN + STREAMS) * USAGE[
        "prompt_tokens"]
    assert _total(samples, "budgateway_tokens_total", model="m", kind="output") == (PLAIN + STREAMS) * USAGE[
        "completion_tokens"]
    cost = (USAGE["prompt_tokens"] * 1.0 + USAGE["completion_tokens"] * 2.0) / 1000
    assert _total(samples, "budgateway_cost_total", model="m", currency="USD") == pytest.approx(
        (PLAIN + STREAMS) * cost)
    assert _total(samples, "budgateway_provider_attempts_total", model="fb", provider="bad", result="http_500") == 1
    assert _total(samples, "budgateway_provider_attempts_total", model="fb", provider="good", result="ok") == 1
    assert _total(samples, "budgateway_fallbacks_total", model="fb") == 1
    assert _total(samples, "budgateway_requests_total", model="_unknown", status="404") == 1
    assert _total(samples, "budgateway_streams_active") == 0
    assert _total(samples, "budgateway_overhead_seconds_count", route=route) == PLAIN + STREAMS + 3
    assert _total(samples, "budgateway_streams_cut_total", model="cut", provider="up") == 1
    assert _total(samples, "budgateway_requests_total", model="cut", status="502") == 1


def test_analytics_rows_are_counted(gw):
    from .conftest import wait_for

    expected = PLAIN + STREAMS + 3  # requests with an analytics row; the 404 one too
    wait_for(lambda: _total(_samples(gw), "budgateway_analytics_rows_total", table="GatewayAnalytics",
                            result="spooled") >= expected, what="spooled rows counted")
