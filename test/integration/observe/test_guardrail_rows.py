"""The ClickHouse rows of guardrail scans: one ``GuardrailInference`` row per scan (input, a whole
answer, a stream), with what the scan found and did, keyed by the request's inference id."""

from __future__ import annotations

import json
import uuid

import pytest
from configs import dummy_provider, local_profile, model_toml

from .conftest import wait_rows

CHAT_PATH = "/v1/chat/completions"
PROFILES = (local_profile("redact-in", ["input"], "redact", pii=["email"])
            + local_profile("block-out", ["output"], "block", deny_words=["forbidden"]))
MODELS = (model_toml("redacting", {"d": dummy_provider("echo")}).replace(
    '[models."redacting"]\n', '[models."redacting"]\nguardrail_profile = "redact-in"\n')
    + model_toml("blocking", {"d": dummy_provider("echo")}).replace(
    '[models."blocking"]\n', '[models."blocking"]\nguardrail_profile = "block-out"\n') + PROFILES)


@pytest.fixture(scope="module")
def guard_db() -> str:
    return f"t_guard_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gw(module_gateway_factory, clickhouse, guard_db, tmp_path_factory):
    return module_gateway_factory(MODELS, settings={
        "workers": 1,
        "observability.clickhouse_url": clickhouse.native_url(guard_db),
        "observability.flush_interval_ms": 100,
        "observability.spool_dir": str(tmp_path_factory.mktemp("spool")),
    })


def _scans(clickhouse, db: str, inference_id: str, count: int) -> list[dict]:
    return wait_rows(clickhouse, f"SELECT * FROM {db}.GuardrailInference WHERE inference_id = '{inference_id}' "
                                 "ORDER BY guard_type", count)


def test_an_input_redaction_is_one_row(gw, clickhouse, guard_db):
    resp = gw.request("POST", CHAT_PATH, {"model": "redacting", "messages": [
        {"role": "user", "content": "mail a.b@example.com"}]})
    assert resp.status == 200 and "[REDACTED_EMAIL]" in resp.body.decode()
    (row,) = _scans(clickhouse, guard_db, resp.headers["x-tensorzero-inference-id"], 1)
    assert (row["guardrail_profile"], row["guard_type"], row["action_taken"]) == ("redact-in", "input", "redacted")
    assert row["flagged"] == 1 and row["confidence_score"] == 1.0 and row["scan_latency_ms"] >= 0
    assert json.loads(row["provider_results"]) == {"found": ["email"]}


def test_a_clean_input_is_a_row_that_passed(gw, clickhouse, guard_db):
    resp = gw.request("POST", CHAT_PATH, {"model": "redacting", "messages": [{"role": "user", "content": "hello"}]})
    (row,) = _scans(clickhouse, guard_db, resp.headers["x-tensorzero-inference-id"], 1)
    assert (row["action_taken"], row["flagged"], row["confidence_score"]) == ("passed", 0, 0.0)


def test_a_blocked_answer_and_a_blocked_stream_are_rows(gw, clickhouse, guard_db):
    body = {"model": "blocking", "messages": [{"role": "user", "content": "this is forbidden"}]}
    whole = gw.request("POST", CHAT_PATH, body)
    assert whole.json()["choices"][0]["finish_reason"] == "content_filter"
    (row,) = _scans(clickhouse, guard_db, whole.headers["x-tensorzero-inference-id"], 1)
    assert (row["guard_type"], row["action_taken"], row["flagged"]) == ("output", "blocked", 1)
    streamed = gw.request("POST", CHAT_PATH, {**body, "stream": True})
    assert '"content_filter"' in streamed.body.decode()
    (row,) = _scans(clickhouse, guard_db, streamed.headers["x-tensorzero-inference-id"], 1)
    assert (row["guard_type"], row["action_taken"]) == ("output", "blocked")
    assert json.loads(row["provider_results"]) == {"found": ["deny_word"]}
