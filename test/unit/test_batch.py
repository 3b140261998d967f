"""Batch inference without ClickHouse: a request read into its inferences (the per-inference lists
spread, one variant for the batch, ids in the inputs' order, refusals naming the input), the JSONL
line an OpenAI batch sends, a provider's result lines, the runner's bounds and its shutdown, and the
routes in the app (a 503 without ClickHouse, behind auth like /inference)."""

from __future__ import annotations

import gevent
import pytest
import ujson
from falcon import testing

from gateway.app import create_app
from gateway.catalog import Catalog
from gateway.config import load_config_text
from gateway.errors import GatewayError, InvalidRequestError
from gateway.resources.batch import NO_CLICKHOUSE
from gateway.stores.keys import hash_key
from gateway.tensorzero.batch import Runner, id_time, read_batch
from gateway.tensorzero.batch_openai import OpenAIBatches, _result
from gateway.tensorzero.inference import NotFoundError
from providers.registry import build_registry

CONFIG = """
[models.echo]
routing = ["d"]
[models.echo.providers.d]
type = "dummy"
model_name = "echo"

[models.gpt]
routing = ["openai"]
[models.gpt.providers.openai]
type = "openai"
model_name = "gpt-4o-mini"
api_base = "http://127.0.0.1:9/v1"
api_key_location = "none"
extra_body = { seed = 7 }

[functions.chat]
type = "chat"
[functions.chat.variants.a]
type = "chat_completion"
model = "echo"
[functions.chat.variants.b]
type = "chat_completion"
model = "echo"

[functions.batched]
type = "chat"
[functions.batched.variants.gpt]
type = "chat_completion"
model = "gpt"
"""
REGISTRY = build_registry()
LOADED = load_config_text(CONFIG, "t.toml", REGISTRY)
FUNCTIONS = LOADED.tensorzero.functions
CATALOG = Catalog(LOADED.models, REGISTRY)


def _read(**body):
    return read_batch(body, FUNCTIONS, CATALOG, LOADED.tensorzero.templates)


def _inputs(*texts: str) -> list[dict]:
    return [{"messages": [{"role": "user", "content": t}]} for t in texts]


def _refused(**body) -> str:
    with pytest.raises(InvalidRequestError) as e:
        _read(**body)
    return str(e.value)


class TestRead:
    def test_the_per_inference_lists_spread_over_the_inputs(self):
        episode = _read(function_name="chat", inputs=_inputs("x")).items[0].episode_id
        batch = _read(function_name="chat", inputs=_inputs("a", "b", "c"), episode_ids=[None, episode, None],
                      tags=[{"k": "v"}, None, {}], params={"chat_completion": {"temperature": [0.5, None, 1.0],
                                                                               "max_tokens": None}})
        items = batch.items
        assert [i.chat["messages"][0]["content"] for i in items] == ["a", "b", "c"]
        assert [i.chat.get("temperature") for i in items] == [0.5, None, 1.0]
        assert items[1].episode_id == episode and items[0].episode_id != items[2].episode_id
        assert [i.record.tags for i in items] == [{"k": "v"}, {}, {}]
        # Ids in the inputs' order, each a UUIDv7 made after the batch's.
        ids = [i.inference_id for i in items]
        assert ids == sorted(ids) and len(set(ids)) == 3
        assert all(id_time(i) >= id_time(batch.head.batch_id) for i in ids)

    def test_one_variant_runs_the_whole_batch(self):
        drawn = {_read(function_name="chat", inputs=_inputs(*"abcdefgh")).head.variant_name for _ in range(40)}
        assert drawn == {"a", "b"}  # each batch draws one; over many batches, both
        batch = _read(function_name="chat", inputs=_inputs(*"abcdefgh"), variant_name="b")
        assert {i.record.variant_name for i in batch.items} == {"b"}
        assert (batch.head.model_name, batch.head.provider_name) == ("echo", "d")

    def test_refusals_name_the_input(self):
        assert "'inputs' is required" in _refused(function_name="chat")
        assert "'inputs' is required" in _refused(function_name="chat", inputs={"messages": []})
        message = _refused(function_name="chat", inputs=[*_inputs("a"), {"messages": [{"role": "tool"}]}])
        assert message.startswith("inputs[1]: ")
        assert "one element per input (2" in _refused(function_name="chat", inputs=_inputs("a", "b"), tags=[{}])
        assert _refused(function_name="chat", inputs=_inputs("a"), episode_ids=["nope"]).startswith("episode_ids[0]")
        assert "params.chat_completion.seed" in _refused(function_name="chat", inputs=_inputs("a"),
                                                         params={"chat_completion": {"seed": 1}})
        assert _refused(function_name="chat", inputs=_inputs("a"), parallel_tool_calls=["yes"]) \
            .startswith("parallel_tool_calls[0]")
        assert "credentials" in _refused(function_name="chat", inputs=_inputs("a"), credentials={"k": 1})
        assert "a dry run" in _refused(function_name="chat", inputs=_inputs("a"), dryrun=True)
        with pytest.raises(NotFoundError):
            _read(function_name="nope", inputs=_inputs("a"))
        with pytest.raises(NotFoundError):
            _read(function_name="chat", inputs=_inputs("a"), variant_name="c")


class TestOpenAI:
    def test_a_line_is_the_provider_s_own_request(self):
        batch = _read(function_name="batched", inputs=_inputs("hi"))
        item = batch.items[0]
        line = ujson.loads(OpenAIBatches(None, 1 << 20).line(batch.candidate, item.inference_id, item.chat))
        assert line == {"custom_id": item.inference_id, "method": "POST", "url": "/v1/chat/completions",
                        "body": {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-4o-mini", "seed": 7}}

    def test_result_lines(self):
        ok = _result({"custom_id": "x", "error": None, "response": {"status_code": 200, "body": {"choices": []}}})
        assert (ok.body, ok.error) == ({"choices": []}, None)
        refused = _result({"response": {"status_code": 400, "body": {"error": {"message": "too long"}}}, "error": None})
        assert (refused.body, refused.error) == (None, "HTTP 400: too long")
        expired = _result({"response": None, "error": {"code": "batch_expired", "message": "not done in time"}})
        assert expired.error == "not done in time"


class _Router:
    """Answers each chat after ``delay_s``, counting how many run at once; "fail" fails."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.now = self.most = 0

    def chat(self, route, request, peer, outcome):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            gevent.sleep(self.delay_s)
            text = request.body["messages"][-1]["content"]
            if text == "fail":
                raise GatewayError("it failed", status=502)
            body = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}]}
            return type("Got", (), {"result": type("R", (), {"body": body})})()
        finally:
            self.now -= 1


def _runner(router, rows, ended, **bounds) -> Runner:
    return Runner(router, lambda table, row: rows.append((table, row)), [], lambda b, row: ended.append(row),
                  **bounds)


class TestRunner:
    def test_bounds_and_the_last_row(self):
        router, rows, ended = _Router(0.01), [], []
        runner = _runner(router, rows, ended, per_batch=3, total=4)
        first = _read(function_name="chat", inputs=_inputs(*[str(n) for n in range(10)], "fail"))
        second = _read(function_name="chat", inputs=_inputs("fail", "fail"))
        runner.start(first, {"kind": "gateway"}, None)
        runner.start(second, {"kind": "gateway"}, None)
        gevent.sleep(0.5)
        assert router.most == 4  # three of the first and one of the second, at most
        by_batch = {row["batch_id"]: row for row in ended}
        done = by_batch[first.head.batch_id]
        assert done["status"] == "completed" and ujson.loads(done["batch_params"])["completed"] == 10
        assert ujson.loads(done["errors"])[0].startswith(first.items[-1].inference_id + ": it failed")
        assert by_batch[second.head.batch_id]["status"] == "failed"
        assert [table for table, _ in rows] == ["BatchRequest", "BatchRequest"]

    def test_a_batch_still_running_at_shutdown_is_recorded_as_failed(self):
        router, rows, ended = _Router(5.0), [], []
        runner = _runner(router, rows, ended)
        batch = _read(function_name="chat", inputs=_inputs("slow", "slower"))
        runner.start(batch, {"kind": "gateway"}, None)
        gevent.sleep(0.05)
        runner.close(0.2)
        (row,) = ended
        assert row["status"] == "failed" and "stopped" in ujson.loads(row["errors"])[0]
        assert router.now == 0  # its inferences were stopped too
        with pytest.raises(GatewayError):
            runner.start(batch, {"kind": "gateway"}, None)


KEY = "batch-test-key"
AUTH = f'\n[api_keys."{hash_key(KEY)}".echo]\nendpoint_id = "e"\nmodel_id = "m"\nproject_id = "p"\n'


def _client(text: str) -> testing.TestClient:
    return testing.TestClient(create_app(load_config_text(text, "t.toml", REGISTRY), REGISTRY))


class TestRoute:
    def test_without_clickhouse_every_route_is_a_503(self):
        c = _client(CONFIG)
        body = ujson.dumps({"function_name": "chat", "inputs": _inputs("x")})
        r = c.simulate_post("/batch_inference", body=body)
        assert (r.status_code, r.json) == (503, {"error": NO_CLICKHOUSE})
        batch_id = "0190a0e0-0000-7000-8000-000000000000"
        assert c.simulate_get(f"/batch_inference/{batch_id}").json == {"error": NO_CLICKHOUSE}
        assert c.simulate_get(f"/batch_inference/{batch_id}/inference/{batch_id}").status_code == 503

    def test_it_needs_a_key_when_auth_is_on(self):
        c = _client(CONFIG + AUTH)
        body = ujson.dumps({"function_name": "chat", "inputs": _inputs("x")})
        r = c.simulate_post("/batch_inference", body=body)
        assert r.status_code == 401 and set(r.json) == {"error"}
        r = c.simulate_post("/batch_inference", body=body, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 503
