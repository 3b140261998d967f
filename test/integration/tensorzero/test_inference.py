"""``POST /inference`` on the corpus config ``functions``: chat and json functions, schemas and
templates rendered into what the upstream receives, tools, variant weights, sticky episodes,
fallback variants, pinned variants, streams in TensorZero's chunk format, and its error shape."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from upstream import CONTENT, TOOL_ARGUMENTS
from upstream_raw import response

EMAIL = {"system": {"company": "Acme", "signature": "Ada"},
         "messages": [{"role": "user", "content": [{"type": "text", "arguments": {"recipient": "Bob",
                                                                              "topic": "the launch"}}]}]}
PERSON = {"name": "Ada", "age": 36}


def _chat_answer(message: dict, finish: str) -> bytes:
    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "raw",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}}
    return response(200, json.dumps(body).encode())


@pytest.fixture(scope="module")
def gw(corpus_gateway, upstream, raw_upstream):
    raw_upstream.on("json-text", lambda handler: handler.connection.sendall(
        _chat_answer({"role": "assistant", "content": json.dumps(PERSON)}, "stop")))
    call = {"id": "call_1", "type": "function", "function": {"name": "respond", "arguments": json.dumps(PERSON)}}
    raw_upstream.on("json-call", lambda handler: handler.connection.sendall(
        _chat_answer({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")))
    return corpus_gateway("functions", upstream=upstream.url, raw=raw_upstream.url)


def infer(gw, **body):
    return gw.request("POST", "/inference", body)


def _is_uuid7(value: str) -> bool:
    return uuid.UUID(value).version == 7


class TestChatFunction:
    def test_schemas_and_templates_render_into_what_the_upstream_receives(self, gw, upstream):
        resp = infer(gw, function_name="draft_email", input=EMAIL)
        assert resp.status == 200, resp
        body = resp.json()
        assert body["content"] == [{"type": "text", "text": CONTENT}]
        assert body["variant_name"] == "v1" and body["finish_reason"] == "stop"
        assert _is_uuid7(body["inference_id"]) and _is_uuid7(body["episode_id"])
        assert body["usage"] == {"input_tokens": 7, "output_tokens": 3, "cost": None}
        [rec] = upstream.requests
        assert rec.path == "/v1/chat/completions"
        assert rec.body["messages"] == [
            {"role": "system", "content": 'You write emails for Acme. Sign them "Ada".'},
            {"role": "user", "content": "Write to Bob about the launch."}]
        assert {k: rec.body[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop")} == {
            "temperature": 0.3, "top_p": 0.9, "max_tokens": 200, "seed": 7, "stop": ["END"]}

    def test_variant_and_request_extra_headers_reach_the_upstream(self, gw, upstream):
        resp = infer(gw, function_name="draft_email", input=EMAIL, extra_headers=[
            {"name": "X-Request", "value": "r1"}, {"variant_name": "other", "name": "X-Other", "value": "no"}])
        assert resp.status == 200, resp
        headers = upstream.requests[0].headers
        assert (headers["x-variant"], headers["x-request"]) == ("v1", "r1") and "x-other" not in headers

    def test_a_schema_violation_is_a_400_and_nothing_goes_upstream(self, gw, upstream):
        bad = {**EMAIL, "system": {"company": "Acme"}}
        resp = infer(gw, function_name="draft_email", input=bad)
        assert resp.status == 400
        assert "'signature' is a required property" in resp.json()["error"]
        assert upstream.requests == []

    def test_a_string_where_the_schema_wants_arguments_is_a_400(self, gw):
        resp = infer(gw, function_name="draft_email", input={**EMAIL, "messages": [
            {"role": "user", "content": "hello"}]})
        assert resp.status == 400 and "user schema" in resp.json()["error"]

    def test_a_named_template_with_an_included_snippet(self, gw, upstream):
        block = {"type": "template", "name": "fun_fact_topic", "arguments": {"topic": "octopuses"}}
        resp = infer(gw, function_name="fun_fact", input={"messages": [{"role": "user", "content": [block]}]})
        assert resp.status == 200, resp
        assert upstream.requests[0].body["messages"] == [
            {"role": "user", "content": "Share a fun fact about: octopuses. Keep it to one sentence."}]

    def test_raw_text_skips_the_template(self, gw, upstream):
        block = {"type": "raw_text", "value": "just this"}
        assert infer(gw, function_name="fun_fact", input={"messages": [
            {"role": "user", "content": [block]}]}).status == 200
        assert upstream.requests[0].body["messages"] == [{"role": "user", "content": "just this"}]


class TestTools:
    def test_the_function_tools_go_upstream_and_the_call_comes_back_validated(self, gw, upstream):
        resp = infer(gw, function_name="weather", input={"messages": [{"role": "user", "content": "Paris?"}]})
        assert resp.status == 200, resp
        [call] = resp.json()["content"]
        assert call["type"] == "tool_call" and call["name"] == "get_temperature"
        assert call["arguments"] == TOOL_ARGUMENTS and json.loads(call["raw_arguments"]) == TOOL_ARGUMENTS
        assert resp.json()["finish_reason"] == "tool_call"
        sent = upstream.requests[0].body
        assert [t["function"]["name"] for t in sent["tools"]] == ["get_temperature"]
        assert sent["tools"][0]["function"]["strict"] is True
        assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False

    def test_a_tool_result_turn_goes_upstream_as_a_tool_message(self, gw, upstream):
        messages = [
            {"role": "user", "content": "Paris?"},
            {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "get_temperature",
                                               "arguments": json.dumps(TOOL_ARGUMENTS)}]},
            {"role": "user", "content": [{"type": "tool_result", "id": "c1", "name": "get_temperature",
                                          "result": "21"}]},
        ]
        resp = infer(gw, function_name="weather", input={"messages": messages})
        assert resp.json()["content"] == [{"type": "text", "text": "the tool said: 21"}]
        sent = upstream.requests[0].body["messages"]
        assert sent[1]["tool_calls"][0]["id"] == "c1"
        assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": "21"}

    def test_allowed_tools_and_additional_tools(self, gw, upstream):
        extra = {"name": "get_humidity", "description": "Humidity", "parameters": {"type": "object"}}
        resp = infer(gw, function_name="weather", input={"messages": [{"role": "user", "content": "Paris?"}]},
                     additional_tools=[extra], allowed_tools=["get_humidity"])
        assert resp.status == 200, resp
        assert [t["function"]["name"] for t in upstream.requests[0].body["tools"]] == ["get_humidity"]


class TestVariants:
    def test_the_same_episode_gets_the_same_variant(self, gw):
        episode = infer(gw, function_name="ab", input={"messages": []}).json()["episode_id"]
        seen = {infer(gw, function_name="ab", input={"messages": []}, episode_id=episode).json()["variant_name"]
                for _ in range(5)}
        assert len(seen) == 1

    def test_weights_spread_episodes_over_the_candidates_only(self, gw):
        seen = {infer(gw, function_name="ab", input={"messages": []}).json()["variant_name"] for _ in range(30)}
        assert seen == {"a", "b"}

    def test_a_failing_candidate_is_retried_then_falls_back_to_the_fallback_variant(self, gw, upstream):
        resp = infer(gw, function_name="fallback", input={"messages": [{"role": "user", "content": "hi"}]})
        assert resp.status == 200, resp
        assert resp.json()["variant_name"] == "backup"
        assert [r.model for r in upstream.requests] == ["status-500"] * 3 + ["ok"]  # retries = 2

    @pytest.mark.parametrize("stream", [False, True])
    def test_a_variant_over_its_timeouts_gives_way(self, gw, stream):
        started = time.monotonic()
        resp = infer(gw, function_name="impatient", input={"messages": [{"role": "user", "content": "hi"}]},
                     stream=stream)
        assert resp.status == 200, resp
        body = resp.json() if not stream else json.loads(resp.sse_data()[0])
        assert body["variant_name"] == "backup" and time.monotonic() - started < 2.5

    def test_a_pinned_variant_runs_alone(self, gw, upstream):
        resp = infer(gw, function_name="ab", variant_name="never", input={"messages": []})
        assert resp.status == 502
        assert [r.model for r in upstream.requests] == ["status-500"]

    def test_unknown_function_and_variant_are_404(self, gw):
        assert infer(gw, function_name="nope", input={}).status == 404
        resp = infer(gw, function_name="ab", variant_name="zzz", input={})
        assert resp.status == 404 and resp.json() == {"error": "Unknown variant: zzz"}

    def test_a_variant_type_not_served_yet_is_a_400(self, gw):
        resp = infer(gw, function_name="bestof", input={"messages": []})
        assert resp.status == 400
        assert "experimental_best_of_n_sampling" in resp.json()["error"] and "not supported yet" in resp.json()["error"]

    def test_a_bad_episode_id_is_a_400(self, gw):
        resp = infer(gw, function_name="ab", input={}, episode_id=str(uuid.uuid4()))
        assert resp.status == 400 and "UUIDv7" in resp.json()["error"]


class TestJsonFunction:
    def test_strict_mode_sends_the_schema_and_parses_the_output(self, gw, raw_upstream):
        resp = infer(gw, function_name="extract", input={"messages": [{"role": "user", "content": "Ada, 36"}]})
        assert resp.status == 200, resp
        body = resp.json()
        assert body["output"] == {"raw": json.dumps(PERSON), "parsed": PERSON}
        assert body["variant_name"] == "strict"
        sent = raw_upstream.requests[-1].body
        assert sent["response_format"]["type"] == "json_schema"
        assert sent["response_format"]["json_schema"]["schema"]["required"] == ["name", "age"]

    def test_tool_mode_reads_the_answer_from_the_call(self, gw, raw_upstream):
        resp = infer(gw, function_name="extract", variant_name="tool",
                     input={"messages": [{"role": "user", "content": "Ada, 36"}]})
        assert resp.json()["output"]["parsed"] == PERSON
        assert resp.json()["finish_reason"] == "stop"
        assert raw_upstream.requests[-1].body["tool_choice"]["function"]["name"] == "respond"

    def test_a_request_output_schema_the_answer_breaks_parses_to_null(self, gw):
        schema = {"type": "object", "required": ["email"]}
        resp = infer(gw, function_name="extract", output_schema=schema,
                     input={"messages": [{"role": "user", "content": "Ada, 36"}]})
        assert resp.json()["output"] == {"raw": json.dumps(PERSON), "parsed": None}


class TestStreams:
    def test_a_chat_stream_in_tensorzero_chunks(self, gw):
        resp = infer(gw, function_name="draft_email", input=EMAIL, stream=True)
        assert resp.status == 200 and resp.headers["content-type"].startswith("text/event-stream")
        data = resp.sse_data()
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert {(c["variant_name"], c["episode_id"], c["inference_id"]) for c in chunks}.__len__() == 1
        text = "".join(b["text"] for c in chunks for b in c.get("content", ()) if b["type"] == "text")
        assert text == CONTENT
        assert all(b["id"] == "0" for c in chunks for b in c.get("content", ()))
        assert chunks[-1]["usage"] == {"input_tokens": 7, "output_tokens": 3, "cost": None}
        assert chunks[-1]["finish_reason"] == "stop"

    def test_a_json_stream_sends_raw_deltas(self, gw):
        resp = infer(gw, model_name="gpt", input={"messages": [{"role": "user", "content": "hi"}]}, stream=True)
        chunks = [json.loads(d) for d in resp.sse_data()[:-1]]
        assert "".join(b["text"] for c in chunks for b in c.get("content", ())) == CONTENT


class TestModelName:
    def test_a_configured_model_by_name(self, gw, upstream):
        resp = infer(gw, model_name="gpt", input={"system": "be brief", "messages": [
            {"role": "user", "content": "hi"}]})
        assert resp.status == 200 and resp.json()["variant_name"] == "gpt"
        assert upstream.requests[0].body["messages"][0] == {"role": "system", "content": "be brief"}

    def test_a_shorthand_model(self, gw):
        resp = infer(gw, model_name="dummy::echo", input={"messages": [{"role": "user", "content": "ping"}]})
        assert resp.status == 200, resp
        assert resp.json()["content"][0]["text"].endswith("ping")

    def test_exactly_one_of_function_and_model(self, gw):
        resp = infer(gw, function_name="ab", model_name="gpt", input={})
        assert resp.status == 400 and "exactly one" in resp.json()["error"]

    def test_an_unknown_field_is_ignored_as_tensorzero_does(self, gw):
        assert infer(gw, model_name="gpt", input={}, internal_dynamic_variant_config=None).status == 200

    def test_tensorzero_cost_and_edits_of_a_provider(self, gw, upstream):
        ask = {"messages": [{"role": "user", "content": "hi"}]}
        resp = infer(gw, model_name="priced", input=ask)
        assert resp.json()["usage"]["cost"] == pytest.approx(7 * 2.5e-6 + 3 * 10e-6)
        [rec] = upstream.requests
        assert rec.body["metadata"] == {"source": "budgateway"} and rec.headers["x-team"] == "search"
        chunks = [json.loads(d) for d in infer(gw, model_name="priced", input=ask, stream=True).sse_data()[:-1]]
        assert chunks[-1]["usage"]["cost"] == pytest.approx(7 * 2.5e-6 + 3 * 10e-6)

    def test_a_requests_extra_body_wins_over_the_providers(self, gw, upstream):
        resp = infer(gw, model_name="priced", input={"messages": [{"role": "user", "content": "hi"}]},
                     extra_body=[{"pointer": "/metadata/source", "value": "request"},
                                 {"variant_name": "elsewhere", "pointer": "/metadata/other", "value": 1}])
        assert resp.status == 200, resp
        assert upstream.requests[0].body["metadata"] == {"source": "request"}

    def test_raw_response_and_usage_on_request(self, gw):
        resp = infer(gw, model_name="gpt", input={"messages": [{"role": "user", "content": "hi"}]},
                     include_raw_response=True, include_raw_usage=True, include_original_response=True)
        body = resp.json()
        [raw] = body["raw_response"]
        assert raw["provider_type"] == "openai" and raw["api_type"] == "chat_completions"
        assert uuid.UUID(raw["model_inference_id"]).version == 7
        assert json.loads(raw["data"])["choices"][0]["message"]["content"] == CONTENT
        assert body["usage"]["raw_usage"][0]["data"]["prompt_tokens"] == 7
        assert json.loads(body["original_response"]) == json.loads(raw["data"])

    def test_dryrun_still_answers(self, gw):
        resp = infer(gw, model_name="gpt", input={"messages": [{"role": "user", "content": "hi"}]}, dryrun=True)
        assert resp.status == 200 and resp.json()["content"][0]["text"] == CONTENT


#: Bodies of odd shapes: each is the client's 400 (TensorZero's error shape), never a 500.
ODD_BODIES = [
    {"function_name": "weather", "input": {"messages": [{"role": "user", "content": [5]}]}},
    {"function_name": "weather", "input": {"messages": [{"role": "user", "content": [{"type": "unknown",
                                                                                      "data": {"type": "text"}}]}]}},
    {"function_name": "weather", "input": {"messages": []}, "tool_choice": {"specific": [1]}},
    {"function_name": "weather", "input": {"messages": [{"role": "user", "content": [
        {"type": "file", "file_type": "url", "url": "http://x/y.png", "mime_type": 5}]}]}},
    {"function_name": "extract", "input": {"messages": []}, "output_schema": {"$schema": []}},
    {"function_name": "weather", "input": {"messages": []}, "extra_headers": [{"name": "X", "value": "a\r\nB: c"}]},
    {"function_name": "weather", "input": {"messages": []}, "extra_headers": [{"name": "Content-Length", "value": "1"}]},
    {"function_name": "fun_fact", "input": {"messages": [{"role": "user", "content": [
        {"type": "template", "name": "fun_fact_topic", "arguments": {"topic": "x", "self": 1}}]}]}},
]
ODD_CHAT_BODIES = [
    {"model": "tensorzero::function_name::weather", "messages": [{"role": "assistant", "tool_calls": [1]}]},
    {"model": "tensorzero::function_name::weather", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": "http://x"}]}]},
    {"model": "tensorzero::function_name::weather", "messages": [], "tools": [{"function": "x"}]},
    {"model": "tensorzero::function_name::weather", "messages": [{"role": "system", "content": [{"text": 5}]}]},
]


@pytest.mark.parametrize("body", ODD_BODIES)
def test_odd_inference_bodies_are_400s(gw, body):
    resp = gw.request("POST", "/inference", body)
    assert resp.status == 400, resp
    assert isinstance(resp.json()["error"], str)


@pytest.mark.parametrize("body", ODD_CHAT_BODIES)
def test_odd_function_chat_bodies_are_400s(gw, body):
    resp = gw.request("POST", "/openai/v1/chat/completions", body)
    assert resp.status == 400, resp
