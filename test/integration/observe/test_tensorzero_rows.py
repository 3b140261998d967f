"""The rows of ``POST /inference`` in ClickHouse: ``ChatInference`` or ``JsonInference`` with the
input and output, and the ``InferenceById`` / ``InferenceByEpisodeId`` lookups, all keyed by the
inference id the answer gives; a dry run writes none of them."""

from __future__ import annotations

import json
import uuid

import pytest
from configs import dummy_provider, model_toml

from .conftest import wait_rows

FUNCTIONS = """
[functions.greet]
type = "chat"
[functions.greet.variants.plain]
type = "chat_completion"
model = "echo"
temperature = 0.5

[functions.extract]
type = "json"
[functions.extract.variants.plain]
type = "chat_completion"
model = "echo"
json_mode = "off"
"""


@pytest.fixture(scope="module")
def tz_db() -> str:
    return f"t_tz_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gw(module_gateway_factory, clickhouse, tz_db, tmp_path_factory):
    return module_gateway_factory(model_toml("echo", {"d": dummy_provider("echo")}) + FUNCTIONS, settings={
        "workers": 1,
        "observability.clickhouse_url": clickhouse.native_url(tz_db),
        "observability.flush_interval_ms": 100,
        "observability.spool_dir": str(tmp_path_factory.mktemp("spool")),
    })


def _infer(gw, **body) -> dict:
    resp = gw.request("POST", "/inference", body)
    assert resp.status == 200, resp
    return resp.json()


def test_a_chat_inference_row_and_its_lookups(gw, clickhouse, tz_db):
    inp = {"messages": [{"role": "user", "content": "hello there"}]}
    answer = _infer(gw, function_name="greet", input=inp, tags={"user": "u1"})
    where = f"WHERE id = '{answer['inference_id']}'"
    (row,) = wait_rows(clickhouse, f"SELECT * FROM {tz_db}.ChatInference {where}", 1)
    assert (row["function_name"], row["variant_name"], row["episode_id"]) == ("greet", "plain", answer["episode_id"])
    assert json.loads(row["input"]) == inp
    assert json.loads(row["output"]) == answer["content"]
    assert json.loads(row["inference_params"])["chat_completion"]["temperature"] == 0.5
    assert json.loads(row["tags"]) == {"user": "u1"} or row["tags"] == {"user": "u1"}
    (by_id,) = wait_rows(clickhouse, f"SELECT * FROM {tz_db}.InferenceById {where}", 1)
    assert (by_id["function_type"], by_id["episode_id"]) == ("chat", answer["episode_id"])
    wait_rows(clickhouse, f"SELECT * FROM {tz_db}.InferenceByEpisodeId WHERE episode_id = '{answer['episode_id']}'", 1)
    (model_row,) = wait_rows(clickhouse, f"SELECT * FROM {tz_db}.ModelInference WHERE inference_id = "
                                         f"'{answer['inference_id']}'", 1)
    assert model_row["model_name"] == "echo"


def test_a_json_inference_row(gw, clickhouse, tz_db):
    answer = _infer(gw, function_name="extract", input={"messages": [{"role": "user", "content": '{"a": 1}'}]})
    (row,) = wait_rows(clickhouse, f"SELECT * FROM {tz_db}.JsonInference WHERE id = '{answer['inference_id']}'", 1)
    assert json.loads(row["output"]) == answer["output"]


def test_a_dry_run_writes_no_inference_row(gw, clickhouse, tz_db):
    dry = _infer(gw, function_name="greet", input={"messages": [{"role": "user", "content": "dry"}]}, dryrun=True)
    after = _infer(gw, function_name="greet", input={"messages": [{"role": "user", "content": "wet"}]})
    wait_rows(clickhouse, f"SELECT * FROM {tz_db}.ChatInference WHERE id = '{after['inference_id']}'", 1)
    assert clickhouse.rows(f"SELECT * FROM {tz_db}.ChatInference WHERE id = '{dry['inference_id']}'") == []


def test_a_function_streamed_through_the_openai_route_keeps_its_output(gw, clickhouse, tz_db):
    resp = gw.request("POST", "/openai/v1/chat/completions", {
        "model": "tensorzero::function_name::greet", "stream": True,
        "messages": [{"role": "user", "content": "stream me"}]})
    chunks = [json.loads(d) for d in resp.sse_data() if d != "[DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "stream me"
    inference_id = resp.headers["x-tensorzero-inference-id"]
    (row,) = wait_rows(clickhouse, f"SELECT * FROM {tz_db}.ChatInference WHERE id = '{inference_id}'", 1)
    assert json.loads(row["output"]) == [{"type": "text", "text": "stream me"}]
