"""``/batch_inference`` against a real ClickHouse: a batch on an OpenAI model goes through the loopback
Files and Batches API (pending while the provider works, then completed with each inference's answer
and rows; a failed provider batch is a failed batch; a line the provider refused leaves its inference
without a result), a batch on a provider without a batch API runs on the gateway itself (completed, or
failed when every inference fails); another instance reads a finished batch from ClickHouse alone;
the requests refused before anything is sent (the reason names the input), unknown batches and
inferences, ids that are not UUIDs, and no ClickHouse at all."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from configs import dummy_provider, guarded_model, local_profile, model_toml, openai_provider
from upstream_batches import API_KEY, USAGE, BatchesUpstream, answer_text

from .conftest import wait_rows

ANSWER = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
          "additionalProperties": False}
GREETING = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}

FUNCTIONS = """
[functions.haiku]
type = "chat"
[functions.haiku.variants.gpt]
type = "chat_completion"
model = "gpt"

[functions.extract]
type = "json"
output_schema = "{answer}"
[functions.extract.variants.gpt]
type = "chat_completion"
model = "gpt"

[functions.doomed]
type = "chat"
[functions.doomed.variants.gpt]
type = "chat_completion"
model = "gpt-fail"

[functions.echo]
type = "chat"
[functions.echo.variants.a]
type = "chat_completion"
model = "echo"
[functions.echo.variants.b]
type = "chat_completion"
model = "echo"

[functions.broken]
type = "chat"
[functions.broken.variants.only]
type = "chat_completion"
model = "broken"

[functions.guarded]
type = "chat"
[functions.guarded.variants.only]
type = "chat_completion"
model = "guarded-echo"

[functions.greet]
type = "chat"
system_schema = "{greeting}"
[functions.greet.variants.plain]
type = "chat_completion"
model = "echo"
system_template = "{greeting_template}"
"""
FLUSH_MS = 100
DONE_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def batches():
    server = BatchesUpstream(polls_to_complete=2).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def batch_db() -> str:
    return f"t_batch_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def models(batches, tmp_path_factory) -> str:
    files = tmp_path_factory.mktemp("batch_files")
    (files / "answer.json").write_text(json.dumps(ANSWER))
    (files / "greeting.json").write_text(json.dumps(GREETING))
    (files / "greeting.minijinja").write_text("Greet {{ name }}.")
    key = "env::BATCH_UPSTREAM_KEY"
    return (model_toml("gpt", {"openai": openai_provider("ok", batches.url, api_key_location=key)})
            + model_toml("gpt-fail", {"openai": openai_provider("batch-fail", batches.url, api_key_location=key)})
            + model_toml("echo", {"d": dummy_provider("echo")})
            + model_toml("broken", {"d": dummy_provider("error")})
            + guarded_model("guarded-echo", dummy_provider("echo"), "pii")
            + local_profile("pii", ["input"], "redact", pii=["email"])
            + FUNCTIONS.format(answer=files / "answer.json", greeting=files / "greeting.json",
                               greeting_template=files / "greeting.minijinja"))


@pytest.fixture(scope="module")
def gw(module_gateway_factory, clickhouse, batch_db, models, tmp_path_factory):
    return module_gateway_factory(models, settings={
        "workers": 1,
        "observability.clickhouse_url": clickhouse.native_url(batch_db),
        "observability.flush_interval_ms": FLUSH_MS,
        "observability.spool_dir": str(tmp_path_factory.mktemp("spool")),
    }, env={"BATCH_UPSTREAM_KEY": API_KEY})


def _messages(text: str) -> dict:
    return {"messages": [{"role": "user", "content": text}]}


def _post(gw, **body) -> dict:
    resp = gw.request("POST", "/batch_inference", body)
    assert resp.status == 200, resp
    made = resp.json()
    assert set(made) == {"batch_id", "inference_ids", "episode_ids"}
    for value in [made["batch_id"], *made["inference_ids"], *made["episode_ids"]]:
        assert uuid.UUID(value).version == 7
    assert len(made["inference_ids"]) == len(made["episode_ids"]) == len(body["inputs"])
    return made


def _get(gw, batch_id: str, inference_id: str | None = None) -> dict:
    path = f"/batch_inference/{batch_id}" + (f"/inference/{inference_id}" if inference_id else "")
    resp = gw.request("GET", path)
    assert resp.status == 200, resp
    return resp.json()


def _until_done(gw, batch_id: str) -> dict:
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while True:
        got = _get(gw, batch_id)
        if got["status"] != "pending" or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _refused(gw, status: int, path: str = "/batch_inference", body: object = None, method: str = "POST") -> str:
    resp = gw.request(method, path, body)
    assert resp.status == status, resp
    assert set(resp.json()) == {"error"}, resp  # TensorZero's error shape
    return resp.json()["error"]


def _rows(clickhouse, db: str, table: str, where: str, count: int) -> list[dict]:
    return wait_rows(clickhouse, f"SELECT * FROM {db}.{table} WHERE {where}", count)


def _ids(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


# --- OpenAI's Batches API ------------------------------------------------------------------------------


def test_an_openai_batch_is_pending_then_completed_with_its_answers_and_rows(gw, batches, clickhouse, batch_db):
    batches.clear()
    texts = ["an old pond", "a frog jumps", "the sound of water"]
    episode = str(uuid.UUID(_post(gw, function_name="echo", inputs=[_messages("x")])["episode_ids"][0]))
    made = _post(gw, function_name="haiku", inputs=[_messages(t) for t in texts],
                 episode_ids=[None, episode, None], tags=[{"author": "basho"}, None, None],
                 params={"chat_completion": {"temperature": [0.2, None, 0.9]}})
    ids = made["inference_ids"]
    assert made["episode_ids"][1] == episode

    # What went upstream: one file of one line per input, then a batch of it.
    (upload,) = [r for r in batches.requests if r.route == "/v1/files"]
    assert upload.form.get("purpose") == "batch"
    lines = [json.loads(line) for line in upload.form.files_named("file")[0].data.decode().splitlines()]
    assert [line["custom_id"] for line in lines] == ids
    assert {(line["method"], line["url"]) for line in lines} == {("POST", "/v1/chat/completions")}
    assert [line["body"]["model"] for line in lines] == ["ok"] * 3
    assert [line["body"].get("temperature") for line in lines] == [0.2, None, 0.9]
    assert [line["body"]["messages"] for line in lines] == [[{"role": "user", "content": t}] for t in texts]
    (create,) = [r for r in batches.requests if r.route == "/v1/batches"]
    assert create.body["completion_window"] == "24h" and create.body["endpoint"] == "/v1/chat/completions"

    # The provider's first poll: still in progress.
    assert _get(gw, made["batch_id"]) == {"status": "pending", "batch_id": made["batch_id"], "inference_ids": ids}
    completed = _get(gw, made["batch_id"])
    assert completed["status"] == "completed" and completed["batch_id"] == made["batch_id"]
    inferences = completed["inferences"]
    assert [i["inference_id"] for i in inferences] == ids
    assert [i["episode_id"] for i in inferences] == made["episode_ids"]
    assert [i["content"] for i in inferences] == [[{"type": "text", "text": answer_text(t)}] for t in texts]
    for inference in inferences:
        assert inference["variant_name"] == "gpt" and inference["finish_reason"] == "stop"
        assert inference["usage"]["input_tokens"] == USAGE["prompt_tokens"]
        assert inference["usage"]["output_tokens"] == USAGE["completion_tokens"]

    rows = _rows(clickhouse, batch_db, "ChatInference", f"id IN ({_ids(ids)}) ORDER BY toString(id)", 3)
    assert [json.loads(r["output"]) for r in rows] == [i["content"] for i in inferences]
    assert [r["episode_id"] for r in rows] == made["episode_ids"]
    assert {r["function_name"] for r in rows} == {"haiku"} and {r["variant_name"] for r in rows} == {"gpt"}
    assert json.loads(rows[0]["input"]) == _messages(texts[0])
    assert json.loads(rows[0]["inference_params"])["chat_completion"]["temperature"] == 0.2
    tags = rows[0]["tags"]
    assert (json.loads(tags) if isinstance(tags, str) else tags) == {"author": "basho"}
    _rows(clickhouse, batch_db, "InferenceById", f"id IN ({_ids(ids)})", 3)
    _rows(clickhouse, batch_db, "InferenceByEpisodeId", f"id IN ({_ids(ids)})", 3)
    used = _rows(clickhouse, batch_db, "ModelInference", f"inference_id IN ({_ids(ids)})", 3)
    assert {(r["model_name"], r["model_provider_name"], r["result"]) for r in used} == {("gpt", "openai", "ok")}
    _rows(clickhouse, batch_db, "BatchModelInference", f"batch_id = '{made['batch_id']}'", 3)
    states = _rows(clickhouse, batch_db, "BatchRequest", f"batch_id = '{made['batch_id']}'", 2)
    assert sorted(r["status"] for r in states) == ["completed", "pending"]
    assert {json.loads(r["batch_params"])["batch_id"] for r in states} == {_provider_batch(batches, ids)}

    # Polled again: the same answers, now read back from ClickHouse; the provider is not asked again.
    polls = len([r for r in batches.requests if r.route.startswith("/v1/batches/")])
    assert _get(gw, made["batch_id"]) == completed
    assert len([r for r in batches.requests if r.route.startswith("/v1/batches/")]) == polls
    one = _get(gw, made["batch_id"], ids[1])
    assert one == {"status": "completed", "batch_id": made["batch_id"], "inferences": [inferences[1]]}


def _provider_batch(batches: BatchesUpstream, ids: list[str]) -> str:
    """The id of the provider's batch that holds the inferences ``ids``."""
    (found,) = [b["id"] for b in batches.batches.values()
                if [line["custom_id"] for line in batches.lines(b["input_file_id"])] == ids]
    return found


def test_a_json_batch_and_a_line_the_provider_refused(gw, batches, clickhouse, batch_db):
    batches.clear()
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 3}}, "required": ["answer"]}
    made = _post(gw, function_name="extract", inputs=[_messages("Ada"), _messages("fail-line"), _messages("Grace")],
                 output_schemas=[None, None, schema])
    ids = made["inference_ids"]
    assert _get(gw, made["batch_id"])["status"] == "pending"
    completed = _get(gw, made["batch_id"])
    assert completed["status"] == "completed"
    by_id = {i["inference_id"]: i for i in completed["inferences"]}
    assert set(by_id) == {ids[0], ids[2]}
    assert by_id[ids[0]]["output"] == {"raw": '{"answer": "Ada"}', "parsed": {"answer": "Ada"}}
    # The inference's own schema (at most 3 characters) does not take "Grace".
    assert by_id[ids[2]]["output"] == {"raw": '{"answer": "Grace"}', "parsed": None}
    rows = _rows(clickhouse, batch_db, "JsonInference", f"id IN ({_ids(ids)}) ORDER BY toString(id)", 2)
    assert json.loads(rows[1]["output_schema"]) == schema
    refused = _get(gw, made["batch_id"], ids[1])
    assert refused["status"] == "failed" and "this line was refused" in refused["errors"][0]
    assert _get(gw, made["batch_id"], ids[0])["inferences"] == [by_id[ids[0]]]


def test_a_failed_provider_batch_is_a_failed_batch(gw, clickhouse, batch_db):
    made = _post(gw, function_name="doomed", inputs=[_messages("a"), _messages("b")])
    assert _get(gw, made["batch_id"])["status"] == "pending"
    failed = _get(gw, made["batch_id"])
    assert failed == {"status": "failed", "batch_id": made["batch_id"],
                      "errors": ["The model batch-fail does not exist"]}
    _rows(clickhouse, batch_db, "BatchRequest", f"batch_id = '{made['batch_id']}' AND status = 'failed'", 1)
    assert _get(gw, made["batch_id"], made["inference_ids"][0])["status"] == "failed"


# --- batches the gateway runs ---------------------------------------------------------------------------


def test_a_batch_without_a_batch_api_runs_on_the_gateway(gw, clickhouse, batch_db):
    texts = [f"echo number {n}" for n in range(12)]
    made = _post(gw, function_name="echo", inputs=[_messages(t) for t in texts])
    done = _until_done(gw, made["batch_id"])
    assert done["status"] == "completed", done
    inferences = done["inferences"]
    assert [i["inference_id"] for i in inferences] == made["inference_ids"]
    assert [i["content"] for i in inferences] == [[{"type": "text", "text": t}] for t in texts]
    # One variant for the whole batch, whichever was drawn.
    assert len({i["variant_name"] for i in inferences}) == 1
    assert all(i["usage"]["output_tokens"] > 0 and i["finish_reason"] == "stop" for i in inferences)
    ids = _ids(made["inference_ids"])
    _rows(clickhouse, batch_db, "ChatInference", f"id IN ({ids})", 12)
    _rows(clickhouse, batch_db, "ModelInference", f"inference_id IN ({ids}) AND result = 'ok'", 12)
    one = _get(gw, made["batch_id"], made["inference_ids"][5])
    assert one["inferences"] == [inferences[5]]


def test_a_batch_whose_every_inference_fails_is_failed(gw, clickhouse, batch_db):
    made = _post(gw, function_name="broken", inputs=[_messages("a"), _messages("b")])
    done = _until_done(gw, made["batch_id"])
    assert done["status"] == "failed" and len(done["errors"]) == 2, done
    assert {e.split(":")[0] for e in done["errors"]} == set(made["inference_ids"])


def test_another_instance_reads_a_finished_batch_from_clickhouse(gw, module_gateway_factory, clickhouse, batch_db,
                                                                 models):
    made = _post(gw, function_name="echo", inputs=[_messages("one"), _messages("two")])
    done = _until_done(gw, made["batch_id"])
    assert done["status"] == "completed"
    # Over the HTTP interface this time, where every value comes back as text.
    other = module_gateway_factory(models, settings={
        "workers": 1, "observability.clickhouse_url": clickhouse.http_url(batch_db),
        "observability.flush_interval_ms": FLUSH_MS,
    }, env={"BATCH_UPSTREAM_KEY": API_KEY})
    assert _get(other, made["batch_id"]) == done


# --- refused ----------------------------------------------------------------------------------------


def test_a_bad_input_is_a_400_naming_its_index_and_nothing_is_sent(gw, batches):
    batches.clear()
    ok = _messages("fine")
    assert "'inputs' is required" in _refused(gw, 400, body={"function_name": "haiku"})
    assert "'inputs' is required" in _refused(gw, 400, body={"function_name": "haiku", "inputs": []})
    bad_role = {"messages": [{"role": "system", "content": "x"}]}
    message = _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok, bad_role]})
    assert message.startswith("inputs[1]: ") and "role" in message
    message = _refused(gw, 400, body={"function_name": "greet", "inputs": [
        {"system": {"name": "Ada"}, **ok}, {"system": {"name": "Bob"}, **ok}, {"system": {"nom": "Cy"}, **ok}]})
    assert message.startswith("inputs[2]: ") and "schema" in message
    message = _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok, ok], "episode_ids": [None]})
    assert "'episode_ids'" in message and "one element per input" in message
    message = _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok, ok],
                                      "episode_ids": [None, str(uuid.uuid4())]})
    assert message.startswith("episode_ids[1]: ") and "UUIDv7" in message
    message = _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok, ok],
                                      "params": {"chat_completion": {"temperature": [0.1]}}})
    assert "params.chat_completion.temperature" in message
    message = _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok], "output_schemas": [ANSWER]})
    assert message.startswith("output_schemas[0]: ")
    message = _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok, ok], "tool_choice": [None, "sometimes"]})
    assert message.startswith("tool_choice[1]: ")
    message = _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok], "tags": [{"n": 1}]})
    assert message.startswith("tags[0]: ")
    assert "streaming" in _refused(gw, 400, body={"function_name": "haiku", "inputs": [ok], "stream": True})
    assert _refused(gw, 404, body={"function_name": "nope", "inputs": [ok]}) == "Unknown function: nope"
    assert _refused(gw, 404, body={"function_name": "haiku", "inputs": [ok], "variant_name": "nope"}) == \
        "Unknown variant: nope"
    assert "not valid JSON" in _refused(gw, 400, body=b"{nope")
    assert batches.requests == []


def test_unknown_batches_and_inferences_are_404s_and_ids_must_be_uuids(gw):
    made = _post(gw, function_name="echo", inputs=[_messages("x")])
    missing, stranger = str(uuid.uuid4()), str(uuid.uuid4())
    assert _refused(gw, 404, f"/batch_inference/{missing}", method="GET") == f"Batch not found: {missing}"
    message = _refused(gw, 404, f"/batch_inference/{made['batch_id']}/inference/{stranger}", method="GET")
    assert message == f"Inference {stranger} is not in batch {made['batch_id']}"
    assert _refused(gw, 400, "/batch_inference/not-a-uuid", method="GET") == "'batch_id' must be a UUID"
    message = _refused(gw, 400, f"/batch_inference/{made['batch_id']}/inference/42", method="GET")
    assert message == "'inference_id' must be a UUID"


def test_without_clickhouse_it_is_a_503(gateway_factory, models):
    gw = gateway_factory(models, settings={"workers": 1}, env={"BATCH_UPSTREAM_KEY": API_KEY})
    expected = "batch inference needs ClickHouse ([gateway.observability] clickhouse_url)"
    assert _refused(gw, 503, body={"function_name": "echo", "inputs": [_messages("x")]}) == expected
    assert _refused(gw, 503, f"/batch_inference/{uuid.uuid4()}", method="GET") == expected



def test_the_inputs_of_a_batch_pass_the_models_guardrail(gw):
    made = _post(gw, function_name="guarded", inputs=[_messages("mail jane.doe@example.com"), _messages("hi")])
    done = _until_done(gw, made["batch_id"])
    assert done["status"] == "completed", done
    texts = [i["content"][0]["text"] for i in done["inferences"]]
    assert "jane.doe@example.com" not in texts[0] and "[REDACTED_EMAIL]" in texts[0]
