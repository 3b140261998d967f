"""ClickHouse analytics end to end: the rows of plain, streamed, failed-over and rejected requests, by value.

One gateway (native protocol, GeoIP and ASN test databases, a spool) writes into one database of the
session's ClickHouse 18.16 (or whatever the machine has); each test finds its own requests by their
inference id (the ``x-tensorzero-inference-id`` header) or by a user agent of its own.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import openai
import pytest
from configs import dummy_provider, model_toml, openai_provider
from upstream_endpoints import USAGE

from gateway.observe.migrations import MIGRATIONS

from .conftest import wait_rows

GEOIP = Path(__file__).resolve().parents[2] / "data" / "geoip"
PRICING = {"input_cost": 2.0, "output_cost": 4.0, "per_tokens": 1000, "currency": "USD"}
COST = (USAGE["prompt_tokens"] * 2.0 + USAGE["completion_tokens"] * 4.0) / 1000
MESSAGES = [{"role": "user", "content": "hi"}]
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.1 Mobile/15E148 Safari/604.1")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def _models(api: str) -> str:
    return (
        model_toml("priced", {"up": openai_provider("ok", api)}, pricing=PRICING)
        + model_toml("failover", {"first": openai_provider("status-500", api), "second": openai_provider("ok", api)},
                     pricing=PRICING)
        + model_toml("free", {"d": dummy_provider("hello")})
    )


@pytest.fixture(scope="module")
def analytics_db() -> str:
    return f"t_analytics_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, clickhouse, analytics_db, tmp_path_factory):
    spool = tmp_path_factory.mktemp("spool")
    return module_gateway_factory(_models(upstream.url), settings={
        "observability.clickhouse_url": clickhouse.native_url(analytics_db),
        "observability.flush_interval_ms": 100,
        "observability.spool_dir": str(spool),
        "analytics.geoip_db_path": str(GEOIP / "GeoIP2-City-Test.mmdb"),
        "analytics.geoip_asn_db_path": str(GEOIP / "GeoLite2-ASN-Test.mmdb"),
    })


def _analytics(clickhouse, db: str, inference_id: str) -> dict:
    return wait_rows(clickhouse, f"SELECT * FROM {db}.GatewayAnalytics WHERE inference_id = '{inference_id}'", 1)[0]


def _inferences(clickhouse, db: str, inference_id: str, count: int) -> list[dict]:
    return wait_rows(clickhouse, f"SELECT * FROM {db}.ModelInference WHERE inference_id = '{inference_id}' "
                                 f"ORDER BY attempt", count)


def test_plain_chat_leaves_both_rows(gw, clickhouse, analytics_db):
    headers = {"User-Agent": CHROME, "X-Forwarded-For": "81.2.69.142", "Authorization": "Bearer sk-never-stored"}
    resp = gw.request("POST", "/v1/chat/completions", {"model": "priced", "messages": MESSAGES}, headers=headers)
    assert resp.status == 200, resp
    inference_id = resp.headers["x-tensorzero-inference-id"]
    assert uuid.UUID(inference_id).version == 7
    assert resp.headers["x-tensorzero-gateway-version"]

    row = _analytics(clickhouse, analytics_db, inference_id)
    assert (row["client_ip"], row["proxy_chain"]) == ("81.2.69.142", "81.2.69.142, 127.0.0.1")
    assert (row["country_code"], row["country_name"], row["city"], row["region"]) == ("GB", "United Kingdom",
                                                                                     "London", "England")
    assert row["timezone"] == "Europe/London" and abs(row["latitude"] - 51.5142) < 1e-6
    assert (row["browser_name"], row["browser_version"], row["os_name"], row["device_type"], row["is_bot"]) == (
        "Chrome", "120.0", "Windows", "desktop", 0)
    assert (row["method"], row["path"], row["status_code"], row["model_name"], row["model_provider"]) == (
        "POST", "/v1/chat/completions", 200, "priced", "up")
    assert row["body_size"] == len(json.dumps({"model": "priced", "messages": MESSAGES}))
    assert row["response_size"] == len(resp.body)
    assert row["total_duration_ms"] >= row["gateway_processing_ms"] > 0
    assert row["error_type"] is None and row["is_blocked"] == 0 and row["is_stream"] == 0

    [inference] = _inferences(clickhouse, analytics_db, inference_id, 1)
    assert (inference["model_name"], inference["model_provider_name"], inference["endpoint_type"]) == (
        "priced", "up", "chat")
    assert (inference["input_tokens"], inference["output_tokens"]) == (USAGE["prompt_tokens"],
                                                                       USAGE["completion_tokens"])
    assert inference["cost"] == pytest.approx(COST) and inference["currency"] == "USD"
    assert (inference["status_code"], inference["result"], inference["error"]) == (200, "ok", None)
    assert json.loads(inference["raw_request"])["messages"] == MESSAGES
    assert json.loads(inference["raw_response"])["model"] == "priced"
    everything = json.dumps(clickhouse.rows(f"SELECT * FROM {analytics_db}.GatewayAnalytics")) + json.dumps(
        clickhouse.rows(f"SELECT * FROM {analytics_db}.ModelInference"))
    assert "sk-never-stored" not in everything


def test_stream_records_usage_the_client_did_not_ask_for(gw, clickhouse, analytics_db):
    client = gw.openai(default_headers={"User-Agent": IPHONE, "X-Forwarded-For": "216.160.83.56"})
    with client.chat.completions.with_streaming_response.create(model="priced", messages=MESSAGES,
                                                                stream=True) as resp:
        inference_id = resp.headers["x-tensorzero-inference-id"]
        chunks = list(resp.parse())
    assert all(chunk.usage is None for chunk in chunks), "the usage chunk reached a client that did not ask"

    row = _analytics(clickhouse, analytics_db, inference_id)
    assert (row["is_stream"], row["stream_cut"], row["status_code"]) == (1, 0, 200)
    assert (row["country_code"], row["city"], row["asn"]) == ("US", "Milton", 209)
    assert (row["device_type"], row["os_name"], row["browser_name"]) == ("mobile", "iOS", "Mobile Safari")
    [inference] = _inferences(clickhouse, analytics_db, inference_id, 1)
    assert (inference["input_tokens"], inference["output_tokens"]) == (USAGE["prompt_tokens"],
                                                                       USAGE["completion_tokens"])
    assert inference["is_stream"] == 1 and inference["ttft_ms"] is not None
    assert inference["cost"] == pytest.approx(COST)
    assert "data: [DONE]" in inference["raw_response"]


def test_failover_leaves_a_row_per_attempt(gw, clickhouse, analytics_db):
    resp = gw.request("POST", "/v1/chat/completions", {"model": "failover", "messages": MESSAGES},
                      headers={"User-Agent": GOOGLEBOT})
    assert resp.status == 200, resp
    inference_id = resp.headers["x-tensorzero-inference-id"]
    failed, answered = _inferences(clickhouse, analytics_db, inference_id, 2)
    assert (failed["model_provider_name"], failed["status_code"], failed["result"]) == ("first", 500, "http_500")
    assert failed["error"] and failed["input_tokens"] is None and failed["cost"] is None
    assert failed["raw_response"] is None
    assert (answered["model_provider_name"], answered["result"], answered["input_tokens"]) == (
        "second", "ok", USAGE["prompt_tokens"])
    row = _analytics(clickhouse, analytics_db, inference_id)
    assert (row["model_provider"], row["is_bot"], row["device_type"]) == ("second", 1, "bot")


def test_rejected_requests_have_their_row(gw, clickhouse, analytics_db):
    agent = f"rejected-test/{uuid.uuid4().hex}"
    resp = gw.request("POST", "/v1/chat/completions", {"model": "no-such-model", "messages": MESSAGES},
                      headers={"User-Agent": agent})
    assert resp.status == 404
    inference_id = resp.headers["x-tensorzero-inference-id"]
    row = _analytics(clickhouse, analytics_db, inference_id)
    assert (row["status_code"], row["error_type"], row["model_name"]) == (404, "model_not_found", "no-such-model")
    assert "no-such-model" in row["error_message"]
    assert clickhouse.rows(f"SELECT id FROM {analytics_db}.ModelInference WHERE inference_id = '{inference_id}'") == []

    resp = gw.request("GET", "/v1/no-such-route", headers={"User-Agent": agent})
    assert resp.status == 404
    rows = wait_rows(clickhouse, f"SELECT * FROM {analytics_db}.GatewayAnalytics WHERE user_agent = '{agent}' "
                                 f"AND path = '/v1/no-such-route'", 1)
    assert rows[0]["error_type"] == "unknown_url" and rows[0]["inference_id"] is None


def test_health_names_clickhouse_and_is_not_recorded(gw, clickhouse, analytics_db):
    assert gw.request("GET", "/health").json() == {"gateway": "ok", "clickhouse": "ok"}
    assert clickhouse.rows(f"SELECT id FROM {analytics_db}.GatewayAnalytics WHERE path = '/health'") == []


def test_migrations_are_recorded_once(gw, clickhouse, analytics_db):
    gw.request("POST", "/v1/chat/completions", {"model": "free", "messages": MESSAGES})
    rows = wait_rows(clickhouse, f"SELECT number, name FROM {analytics_db}.BudgatewayMigrations ORDER BY number",
                     len(MIGRATIONS))
    assert [r["number"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


def test_sdk_errors_are_rows_too(gw, clickhouse, analytics_db):
    client = gw.openai()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="priced", messages="not a list")
    inference_id = caught.value.response.headers["x-tensorzero-inference-id"]
    row = _analytics(clickhouse, analytics_db, inference_id)
    assert (row["status_code"], row["model_name"]) == (400, "priced")
    assert row["error_message"] == "'messages' must be an array"
