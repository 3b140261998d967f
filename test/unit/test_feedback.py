"""``POST /feedback`` without ClickHouse: the request's checks, a demonstration's, the rows made, and the
route in the app (checked before anything else; a 503 with no ClickHouse; behind auth like /inference)."""

from __future__ import annotations

import json

import pytest
import ujson
from falcon import testing

from gateway.app import create_app
from gateway.config import load_config_text
from gateway.config.functions import MetricTable
from gateway.errors import InvalidRequestError
from gateway.observe.tensorzero_tables import FEEDBACK
from gateway.outcome import new_inference_id
from gateway.resources.feedback import NO_CLICKHOUSE
from gateway.stores.keys import hash_key
from gateway.tensorzero.feedback import demonstration, read, row
from gateway.tensorzero.inference import NotFoundError
from gateway.tensorzero.templates import Schema
from providers.registry import build_registry

METRICS = {
    "accepted": MetricTable(type="boolean", optimize="max", level="inference"),
    "rating": MetricTable(type="float", optimize="min", level="episode"),
}
ID = new_inference_id()
LOOKUP = Schema({"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]})


def refused(body: dict) -> str:
    with pytest.raises(InvalidRequestError) as e:
        read(body, METRICS)
    return str(e.value)


class TestRead:
    def test_each_kind_and_its_level(self):
        got = read({"metric_name": "accepted", "inference_id": ID, "value": True, "tags": {"a": "b"}}, METRICS)
        assert (got.kind, got.level, got.target_id, got.value, got.tags, got.dryrun) == \
            ("boolean", "inference", ID, True, {"a": "b"}, False)
        got = read({"metric_name": "rating", "episode_id": ID, "value": 3, "dryrun": True}, METRICS)
        assert (got.kind, got.level, got.value, type(got.value), got.dryrun) == ("float", "episode", 3.0, float, True)
        assert read({"metric_name": "comment", "inference_id": ID, "value": "x"}, METRICS).level == "inference"
        assert read({"metric_name": "comment", "episode_id": ID, "value": "x"}, METRICS).level == "episode"
        got = read({"metric_name": "demonstration", "inference_id": ID, "value": [1], "internal": True}, METRICS)
        assert (got.kind, got.level, got.value) == ("demonstration", "inference", [1])

    @pytest.mark.parametrize(("body", "error"), [
        ({"metric_name": "accepted", "inference_id": ID, "value": True, "extra": 1}, "unknown field 'extra'"),
        ({"inference_id": ID, "value": True}, "'metric_name' is required"),
        ({"metric_name": "accepted", "value": True}, "exactly one of 'inference_id' and 'episode_id'"),
        ({"metric_name": "accepted", "inference_id": ID, "episode_id": ID, "value": True}, "exactly one of"),
        ({"metric_name": "accepted", "episode_id": ID, "value": True},
         "metric 'accepted' is an inference-level metric: it takes 'inference_id', not 'episode_id'"),
        ({"metric_name": "rating", "inference_id": ID, "value": 1}, "is an episode-level metric"),
        ({"metric_name": "demonstration", "episode_id": ID, "value": "x"}, "a demonstration is for an inference"),
        ({"metric_name": "accepted", "inference_id": "0000", "value": True}, "'inference_id' must be a UUIDv7"),
        ({"metric_name": "accepted", "inference_id": "00000000-0000-4000-8000-000000000000", "value": True},
         "must be a UUIDv7"),
        ({"metric_name": "accepted", "inference_id": ID}, "'value' is required"),
        ({"metric_name": "accepted", "inference_id": ID, "value": 1}, "must be a boolean"),
        ({"metric_name": "rating", "episode_id": ID, "value": False}, "must be a number"),
        ({"metric_name": "rating", "episode_id": ID, "value": float("inf")}, "must be a finite number"),
        ({"metric_name": "comment", "episode_id": ID, "value": None}, "must be a string"),
        ({"metric_name": "demonstration", "inference_id": ID, "value": None}, "cannot be null"),
        ({"metric_name": "accepted", "inference_id": ID, "value": True, "tags": {"a": 1}}, "'tags' must be"),
        ({"metric_name": "accepted", "inference_id": ID, "value": True, "dryrun": 1}, "'dryrun' must be"),
        ({"metric_name": "accepted", "inference_id": ID, "value": True, "internal": "y"}, "'internal' must be"),
    ])
    def test_refusals_say_why(self, body, error):
        assert error in refused(body)

    def test_an_unknown_metric_is_not_found(self):
        with pytest.raises(NotFoundError, match="Unknown metric: nope"):
            read({"metric_name": "nope", "inference_id": ID, "value": True}, METRICS)


class TestDemonstration:
    def test_chat_text_and_tool_calls_as_an_answer_has_them(self):
        assert json.loads(demonstration("hi", "chat", {}, None)) == [{"type": "text", "text": "hi"}]
        blocks = [{"type": "text", "text": "a"},
                  {"type": "tool_call", "id": "c1", "name": "lookup", "arguments": {"word": "w"}}]
        assert json.loads(demonstration(blocks, "chat", {"lookup": LOOKUP}, None)) == [
            {"type": "text", "text": "a"},
            {"type": "tool_call", "id": "c1", "raw_name": "lookup", "raw_arguments": '{"word":"w"}', "name": "lookup",
             "arguments": {"word": "w"}},
        ]

    @pytest.mark.parametrize(("value", "error"), [
        ({"text": "hi"}, "a string or a list of content blocks"),
        ([{"type": "image"}], "block 0: expected a content block of type 'text' or 'tool_call'"),
        (["hi"], "block 0: expected a content block"),
        ([{"type": "text"}], "block 0: a text block needs 'text'"),
        ([{"type": "tool_call", "name": "lookup", "arguments": {"word": "w"}}], "needs 'id' and 'name'"),
        ([{"type": "tool_call", "id": "c", "name": "search", "arguments": {}}], "'search' is not one of the tools"),
        ([{"type": "tool_call", "id": "c", "name": "lookup"}], "needs 'arguments'"),
        ([{"type": "tool_call", "id": "c", "name": "lookup", "arguments": {"word": 1}}],
         "the arguments of tool 'lookup' do not match its parameters: word: 1 is not of type 'string'"),
        ([{"type": "tool_call", "id": "c", "name": "lookup", "arguments": '{"word": "w"}'}], "do not match"),
    ])
    def test_chat_refusals(self, value, error):
        with pytest.raises(InvalidRequestError) as e:
            demonstration(value, "chat", {"lookup": LOOKUP}, None)
        assert error in str(e.value)

    def test_json_is_checked_against_the_schema_and_stored_raw_and_parsed(self):
        schema = Schema({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
        assert json.loads(demonstration({"n": 1}, "json", {}, schema)) == {"raw": '{"n":1}', "parsed": {"n": 1}}
        with pytest.raises(InvalidRequestError, match="does not match the function's output schema: n: 'x'"):
            demonstration({"n": "x"}, "json", {}, schema)
        assert json.loads(demonstration("free", "json", {}, None)) == {"raw": '"free"', "parsed": "free"}


class TestRow:
    @pytest.mark.parametrize(("body", "kind"), [
        ({"metric_name": "accepted", "inference_id": ID, "value": True}, "boolean"),
        ({"metric_name": "rating", "episode_id": ID, "value": 2.5}, "float"),
        ({"metric_name": "comment", "episode_id": ID, "value": "c"}, "comment"),
        ({"metric_name": "demonstration", "inference_id": ID, "value": "d"}, "demonstration"),
    ])
    def test_every_column_of_the_table_is_filled(self, body, kind):
        feedback = read({**body, "tags": {"k": "v"}}, METRICS)
        table, fields = row(feedback, "fid", 12.5, '[{"type":"text","text":"d"}]')
        assert table == FEEDBACK[kind].name
        assert set(fields) == {c.name for c in FEEDBACK[kind].columns}
        assert (fields["id"], fields["timestamp"], fields["tags"]) == ("fid", 12.5, {"k": "v"})

    def test_what_each_row_holds(self):
        _, fields = row(read({"metric_name": "comment", "episode_id": ID, "value": "c"}, METRICS), "f", 1.0)
        assert (fields["target_id"], fields["target_type"], fields["value"]) == (ID, "episode", "c")
        _, fields = row(read({"metric_name": "rating", "episode_id": ID, "value": 2}, METRICS), "f", 1.0)
        assert (fields["target_id"], fields["metric_name"], fields["value"]) == (ID, "rating", 2.0)
        _, fields = row(read({"metric_name": "demonstration", "inference_id": ID, "value": "d"}, METRICS), "f", 1.0,
                        "stored")
        assert (fields["inference_id"], fields["value"]) == (ID, "stored")


CONFIG = """
[models.echo]
routing = ["d"]
[models.echo.providers.d]
type = "dummy"
model_name = "echo"

[metrics.accepted]
type = "boolean"
optimize = "max"
level = "inference"
"""
KEY = "feedback-test-key"
AUTH = f'\n[api_keys."{hash_key(KEY)}".echo]\nendpoint_id = "e"\nmodel_id = "m"\nproject_id = "p"\n'


def client(text: str) -> testing.TestClient:
    registry = build_registry()
    return testing.TestClient(create_app(load_config_text(text, "t.toml", registry), registry))


def post(c: testing.TestClient, body, **kw):
    return c.simulate_post("/feedback", body=body if isinstance(body, bytes) else ujson.dumps(body), **kw)


GOOD = {"metric_name": "accepted", "inference_id": ID, "value": True}


class TestRoute:
    def test_without_clickhouse_a_good_request_is_a_503_and_a_bad_one_a_400(self):
        c = client(CONFIG)
        r = post(c, GOOD)
        assert (r.status_code, r.json) == (503, {"error": NO_CLICKHOUSE})
        assert "x-tensorzero-inference-id" not in r.headers  # not an inference route
        r = post(c, {**GOOD, "value": "yes"})
        assert r.status_code == 400 and "must be a boolean" in r.json["error"]
        assert post(c, {**GOOD, "metric_name": "nope"}).status_code == 404
        assert post(c, b"[1]").json == {"error": "Request body must be a JSON object"}
        assert post(c, b"").status_code == 400

    def test_a_body_over_the_limit_is_a_413(self):
        r = post(client("[gateway]\nmax_body_bytes = 100\n" + CONFIG), {**GOOD, "tags": {"k": "v" * 200}})
        assert r.status_code == 413 and set(r.json) == {"error"}

    def test_it_needs_a_key_when_auth_is_on(self):
        c = client(CONFIG + AUTH)
        r = post(c, GOOD)
        assert r.status_code == 401 and set(r.json) == {"error"}
        # With a key it gets past auth, and no stage asks for a model.
        assert post(c, GOOD, headers={"Authorization": f"Bearer {KEY}"}).status_code == 503
