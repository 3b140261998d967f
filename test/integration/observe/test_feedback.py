"""``POST /feedback`` against a real ClickHouse: each kind of feedback (boolean, float, comment,
demonstration) at its level answered with a feedback id and written as its row; the requests it
refuses (level, type, schema, unknown metric, field or target) and why; a dry run writes nothing;
ClickHouse unreachable is a 503."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from pathlib import Path

import pytest
from configs import dummy_provider, model_toml
from upstream import free_port

from gateway.outcome import new_inference_id

from .conftest import wait_rows

LOOKUP = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"],
          "additionalProperties": False}
EXTRACT = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
           "required": ["name"], "additionalProperties": False}

CONFIG = """
[metrics.accepted]
type = "boolean"
optimize = "max"
level = "inference"

[metrics.rating]
type = "float"
optimize = "max"
level = "episode"

[tools.lookup]
description = "Look a word up"
parameters = "{lookup}"

[functions.greet]
type = "chat"
tools = ["lookup"]
[functions.greet.variants.plain]
type = "chat_completion"
model = "echo"

[functions.extract]
type = "json"
output_schema = "{extract}"
[functions.extract.variants.plain]
type = "chat_completion"
model = "echo"
json_mode = "off"

[functions.anything]
type = "json"
[functions.anything.variants.plain]
type = "chat_completion"
model = "echo"
json_mode = "off"
"""
FLUSH_MS = 100
#: The gateway waits 2 x the flush interval + 1 s for a target before its 404.
NOT_FOUND_WAIT_S = 2 * FLUSH_MS / 1000 + 1.0


@pytest.fixture(scope="module")
def fb_db() -> str:
    return f"t_fb_{uuid.uuid4().hex[:8]}"


def _config(schemas: Path) -> str:
    """The models, metrics, tool and functions, with the schema files written into ``schemas``."""
    (schemas / "lookup.json").write_text(json.dumps(LOOKUP))
    (schemas / "extract.json").write_text(json.dumps(EXTRACT))
    # Absolute paths: the factory writes the config into a folder of its own.
    functions = CONFIG.format(lookup=schemas / "lookup.json", extract=schemas / "extract.json")
    return model_toml("echo", {"d": dummy_provider("echo")}) + functions


@pytest.fixture(scope="module")
def gw(module_gateway_factory, clickhouse, fb_db, tmp_path_factory):
    return module_gateway_factory(_config(tmp_path_factory.mktemp("schemas")), settings={
        "workers": 1,
        "observability.clickhouse_url": clickhouse.native_url(fb_db),
        "observability.flush_interval_ms": FLUSH_MS,
        "observability.spool_dir": str(tmp_path_factory.mktemp("spool")),
    })


def _infer(gw, function_name: str = "greet", text: str = "hello", **body) -> dict:
    resp = gw.request("POST", "/inference", {"function_name": function_name,
                                             "input": {"messages": [{"role": "user", "content": text}]}, **body})
    assert resp.status == 200, resp
    return resp.json()


def _feedback(gw, **body) -> dict:
    resp = gw.request("POST", "/feedback", body)
    assert resp.status == 200, resp
    feedback_id = resp.json()["feedback_id"]
    assert uuid.UUID(feedback_id).version == 7
    return resp.json()


def _refused(gw, status: int, **body) -> str:
    resp = gw.request("POST", "/feedback", body)
    assert resp.status == status, resp
    assert set(resp.json()) == {"error"}, resp  # TensorZero's error shape
    return resp.json()["error"]


def _tags(row: dict) -> dict:
    # A Map on current servers, a JSON string on 18.16.
    return json.loads(row["tags"]) if isinstance(row["tags"], str) else row["tags"]


def _one(clickhouse, db: str, table: str, feedback_id: str) -> dict:
    (row,) = wait_rows(clickhouse, f"SELECT * FROM {db}.{table} WHERE id = '{feedback_id}'", 1)
    return row


# --- each kind of feedback and its row ---------------------------------------------------------------


def test_a_boolean_inference_level_feedback_right_after_its_inference(gw, clickhouse, fb_db):
    # Sent at once: the inference's row is not in ClickHouse yet, and the gateway waits for it.
    inference = _infer(gw)
    answer = _feedback(gw, metric_name="accepted", inference_id=inference["inference_id"], value=True,
                       tags={"author": "alice"})
    row = _one(clickhouse, fb_db, "BooleanMetricFeedback", answer["feedback_id"])
    assert (row["target_id"], row["metric_name"]) == (inference["inference_id"], "accepted")
    assert row["value"] in (True, 1)
    assert _tags(row) == {"author": "alice"}


def test_a_float_episode_level_feedback(gw, clickhouse, fb_db):
    inference = _infer(gw)
    first = _feedback(gw, metric_name="rating", episode_id=inference["episode_id"], value=4.5)
    second = _feedback(gw, metric_name="rating", episode_id=inference["episode_id"], value=10)
    row = _one(clickhouse, fb_db, "FloatMetricFeedback", first["feedback_id"])
    assert (row["target_id"], row["metric_name"], row["value"]) == (inference["episode_id"], "rating", 4.5)
    assert _tags(row) == {}
    assert _one(clickhouse, fb_db, "FloatMetricFeedback", second["feedback_id"])["value"] == 10.0


def test_a_comment_on_an_inference_and_on_an_episode(gw, clickhouse, fb_db):
    inference = _infer(gw)
    on_inference = _feedback(gw, metric_name="comment", inference_id=inference["inference_id"], value="too long")
    on_episode = _feedback(gw, metric_name="comment", episode_id=inference["episode_id"], value="went well")
    row = _one(clickhouse, fb_db, "CommentFeedback", on_inference["feedback_id"])
    assert (row["target_id"], row["target_type"], row["value"]) == (inference["inference_id"], "inference",
                                                                     "too long")
    row = _one(clickhouse, fb_db, "CommentFeedback", on_episode["feedback_id"])
    assert (row["target_id"], row["target_type"], row["value"]) == (inference["episode_id"], "episode", "went well")


def test_a_chat_demonstration_as_a_string(gw, clickhouse, fb_db):
    inference = _infer(gw)
    answer = _feedback(gw, metric_name="demonstration", inference_id=inference["inference_id"], value="Hi there!")
    row = _one(clickhouse, fb_db, "DemonstrationFeedback", answer["feedback_id"])
    assert row["inference_id"] == inference["inference_id"]
    assert json.loads(row["value"]) == [{"type": "text", "text": "Hi there!"}]


def test_a_chat_demonstration_with_a_tool_call(gw, clickhouse, fb_db):
    inference = _infer(gw)
    blocks = [{"type": "text", "text": "Let me look."},
              {"type": "tool_call", "id": "call_1", "name": "lookup", "arguments": {"word": "gateway"}}]
    answer = _feedback(gw, metric_name="demonstration", inference_id=inference["inference_id"], value=blocks)
    stored = json.loads(_one(clickhouse, fb_db, "DemonstrationFeedback", answer["feedback_id"])["value"])
    assert stored[0] == blocks[0]
    assert stored[1] == {"type": "tool_call", "id": "call_1", "name": "lookup", "raw_name": "lookup",
                         "arguments": {"word": "gateway"}, "raw_arguments": '{"word":"gateway"}'}


def test_a_chat_demonstration_must_call_an_offered_tool_with_valid_arguments(gw):
    inference_id = _infer(gw)["inference_id"]
    unknown = [{"type": "tool_call", "id": "c", "name": "search", "arguments": {"q": "x"}}]
    message = _refused(gw, 400, metric_name="demonstration", inference_id=inference_id, value=unknown)
    assert "'search' is not one of the tools" in message
    bad_arguments = [{"type": "tool_call", "id": "c", "name": "lookup", "arguments": {"word": 3}}]
    message = _refused(gw, 400, metric_name="demonstration", inference_id=inference_id, value=bad_arguments)
    assert "do not match its parameters" in message
    message = _refused(gw, 400, metric_name="demonstration", inference_id=inference_id, value={"text": "hi"})
    assert "string or a list of content blocks" in message


def test_a_json_demonstration_is_checked_against_the_output_schema(gw, clickhouse, fb_db):
    inference = _infer(gw, "extract", '{"name": "Ada"}')
    value = {"name": "Ada", "age": 36}
    answer = _feedback(gw, metric_name="demonstration", inference_id=inference["inference_id"], value=value)
    stored = json.loads(_one(clickhouse, fb_db, "DemonstrationFeedback", answer["feedback_id"])["value"])
    assert stored["parsed"] == value and json.loads(stored["raw"]) == value
    message = _refused(gw, 400, metric_name="demonstration", inference_id=inference["inference_id"],
                       value={"age": "old"})
    assert "does not match the function's output schema" in message


def test_a_json_demonstration_follows_the_inference_s_own_output_schema(gw):
    # A request's output_schema replaces the function's: the demonstration must fit what was asked.
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    inference_id = _infer(gw, "extract", '{"city": "Oslo"}', output_schema=schema)["inference_id"]
    _feedback(gw, metric_name="demonstration", inference_id=inference_id, value={"city": "Oslo"})
    _refused(gw, 400, metric_name="demonstration", inference_id=inference_id, value={"name": "Ada"})


def test_a_json_function_without_an_output_schema_takes_any_demonstration(gw, clickhouse, fb_db):
    inference_id = _infer(gw, "anything", "[1, 2]")["inference_id"]
    answer = _feedback(gw, metric_name="demonstration", inference_id=inference_id, value=[1, "two"])
    stored = json.loads(_one(clickhouse, fb_db, "DemonstrationFeedback", answer["feedback_id"])["value"])
    assert stored == {"raw": '[1,"two"]', "parsed": [1, "two"]}


# --- what is refused --------------------------------------------------------------------------------


def test_the_wrong_level_is_a_400(gw):
    inference = _infer(gw)
    message = _refused(gw, 400, metric_name="accepted", episode_id=inference["episode_id"], value=True)
    assert "'accepted' is an inference-level metric" in message and "'inference_id'" in message
    message = _refused(gw, 400, metric_name="rating", inference_id=inference["inference_id"], value=1.0)
    assert "episode-level" in message
    message = _refused(gw, 400, metric_name="demonstration", episode_id=inference["episode_id"], value="x")
    assert "a demonstration is for an inference" in message
    both = {"inference_id": inference["inference_id"], "episode_id": inference["episode_id"]}
    assert "exactly one of" in _refused(gw, 400, metric_name="comment", value="x", **both)
    assert "exactly one of" in _refused(gw, 400, metric_name="comment", value="x")


def test_a_value_of_the_wrong_type_is_a_400(gw):
    inference = _infer(gw)
    inference_id, episode_id = inference["inference_id"], inference["episode_id"]
    assert "must be a boolean" in _refused(gw, 400, metric_name="accepted", inference_id=inference_id, value="yes")
    assert "must be a boolean" in _refused(gw, 400, metric_name="accepted", inference_id=inference_id, value=1)
    assert "must be a number" in _refused(gw, 400, metric_name="rating", episode_id=episode_id, value=True)
    assert "must be a number" in _refused(gw, 400, metric_name="rating", episode_id=episode_id, value="4")
    assert "must be a string" in _refused(gw, 400, metric_name="comment", inference_id=inference_id, value=3)
    assert "'value' is required" in _refused(gw, 400, metric_name="accepted", inference_id=inference_id)


def test_an_unknown_metric_is_a_404(gw):
    inference_id = _infer(gw)["inference_id"]
    assert _refused(gw, 404, metric_name="nope", inference_id=inference_id, value=True) == "Unknown metric: nope"


def test_an_unknown_field_a_bad_id_or_bad_tags_are_400s(gw):
    inference_id = _infer(gw)["inference_id"]
    message = _refused(gw, 400, metric_name="accepted", inference_id=inference_id, value=True, colour="red")
    assert message == "unknown field 'colour'"
    assert "must be a UUIDv7" in _refused(gw, 400, metric_name="accepted", inference_id="not-a-uuid", value=True)
    assert "must be a UUIDv7" in _refused(gw, 400, metric_name="accepted", inference_id=str(uuid.uuid4()),
                                          value=True)
    assert "'tags'" in _refused(gw, 400, metric_name="accepted", inference_id=inference_id, value=True,
                                tags={"n": 1})
    assert "'dryrun'" in _refused(gw, 400, metric_name="accepted", inference_id=inference_id, value=True,
                                  dryrun="yes")
    resp = gw.request("POST", "/feedback", b"{not json")
    assert resp.status == 400 and "not valid JSON" in resp.json()["error"]
    # A chunked body (no Content-Length) is read as well.
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=15)
    try:
        body = json.dumps({"metric_name": "accepted", "inference_id": inference_id, "value": "no"}).encode()
        conn.request("POST", "/feedback", body=iter([body[:10], body[10:]]), encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400 and "must be a boolean" in json.loads(resp.read())["error"]
    finally:
        conn.close()


def test_an_unknown_inference_or_episode_is_a_404_after_a_bounded_wait(gw):
    missing = new_inference_id()  # a UUIDv7 no inference has
    started = time.monotonic()
    message = _refused(gw, 404, metric_name="accepted", inference_id=missing, value=True)
    assert message == f"Inference not found: {missing}"
    assert NOT_FOUND_WAIT_S <= time.monotonic() - started < NOT_FOUND_WAIT_S + 3.0
    assert _refused(gw, 404, metric_name="comment", episode_id=missing, value="x") == f"Episode not found: {missing}"
    assert _refused(gw, 404, metric_name="demonstration", inference_id=missing, value="x").startswith("Inference")


def test_a_dry_run_is_answered_and_not_written(gw, clickhouse, fb_db):
    inference_id = _infer(gw)["inference_id"]
    dry = _feedback(gw, metric_name="accepted", inference_id=inference_id, value=False, dryrun=True)
    wet = _feedback(gw, metric_name="accepted", inference_id=inference_id, value=False, internal=True)
    _one(clickhouse, fb_db, "BooleanMetricFeedback", wet["feedback_id"])  # written after the dry run's would be
    assert clickhouse.rows(f"SELECT * FROM {fb_db}.BooleanMetricFeedback WHERE id = '{dry['feedback_id']}'") == []
    # A dry run is still checked: a bad one is refused as a real one would be.
    assert "must be a boolean" in _refused(gw, 400, metric_name="accepted", inference_id=inference_id, value=0,
                                           dryrun=True)


# --- the HTTP interface; ClickHouse away --------------------------------------------------------------------------------


def test_lookups_over_the_http_interface(gateway_factory, clickhouse, database, tmp_path):
    gw = gateway_factory(_config(tmp_path), settings={
        "workers": 1, "observability.clickhouse_url": clickhouse.http_url(database),
        "observability.flush_interval_ms": FLUSH_MS,
    })
    inference = _infer(gw, "extract", '{"name": "Ada"}')
    answer = _feedback(gw, metric_name="demonstration", inference_id=inference["inference_id"], value={"name": "A"})
    assert json.loads(_one(clickhouse, database, "DemonstrationFeedback", answer["feedback_id"])["value"]) == \
        {"raw": '{"name":"A"}', "parsed": {"name": "A"}}
    _refused(gw, 400, metric_name="demonstration", inference_id=inference["inference_id"], value={"age": 1})
    answer = _feedback(gw, metric_name="rating", episode_id=inference["episode_id"], value=0.25)
    assert _one(clickhouse, database, "FloatMetricFeedback", answer["feedback_id"])["value"] == 0.25
    missing = new_inference_id()
    assert _refused(gw, 404, metric_name="accepted", inference_id=missing, value=True).endswith(missing)


def test_an_unreachable_clickhouse_is_a_503(gateway_factory, tmp_path):
    nowhere = f"clickhouse://bud:x@127.0.0.1:{free_port()}/feedback"
    gw = gateway_factory(_config(tmp_path), settings={
        "workers": 1, "observability.clickhouse_url": nowhere, "observability.spool_dir": str(tmp_path / "spool"),
    })
    inference_id = _infer(gw)["inference_id"]  # inferences go on (their rows are spooled)
    message = _refused(gw, 503, metric_name="accepted", inference_id=inference_id, value=True)
    assert message.startswith("ClickHouse is unavailable") and "127.0.0.1" not in message
