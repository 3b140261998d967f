"""TensorZero's extensions of the OpenAI API on ``/openai/v1/chat/completions`` (and ``/v1``):
functions as ``tensorzero::function_name::F``, the ``tensorzero::*`` fields, and the answer's
model naming; and TensorZero's own Python client on ``/inference``."""

from __future__ import annotations

import json
import uuid

import pytest
from tensorzero import TensorZeroGateway
from upstream import CONTENT

from .test_inference import EMAIL, PERSON, _chat_answer

SYSTEM = [{"type": "text", "tensorzero::arguments": EMAIL["system"]}]
USER = [{"type": "text", "tensorzero::arguments": {"recipient": "Bob", "topic": "the launch"}}]
RENDERED = [{"role": "system", "content": 'You write emails for Acme. Sign them "Ada".'},
            {"role": "user", "content": "Write to Bob about the launch."}]


@pytest.fixture(scope="module")
def gw(corpus_gateway, upstream, raw_upstream):
    raw_upstream.on("json-text", lambda handler: handler.connection.sendall(
        _chat_answer({"role": "assistant", "content": json.dumps(PERSON)}, "stop")))
    return corpus_gateway("functions", upstream=upstream.url, raw=raw_upstream.url)


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai(prefix="/openai/v1")


class TestFunctionsThroughTheOpenAIClient:
    def test_a_function_with_schemas_and_the_variant_in_the_model_name(self, client, upstream):
        resp = client.chat.completions.create(model="tensorzero::function_name::draft_email",
                                              messages=[{"role": "system", "content": SYSTEM},
                                                        {"role": "user", "content": USER}])
        assert resp.choices[0].message.content == CONTENT
        assert resp.model == "tensorzero::function_name::draft_email::variant_name::v1"
        assert uuid.UUID(resp.id).version == 7 and uuid.UUID(resp.model_extra["episode_id"]).version == 7
        assert upstream.requests[0].body["messages"] == RENDERED

    def test_the_tensorzero_fields_pin_the_variant_and_the_episode(self, client, gw):
        episode = gw.request("POST", "/inference", {"function_name": "ab", "input": {}}).json()["episode_id"]
        resp = client.chat.completions.create(
            model="tensorzero::function_name::ab", messages=[{"role": "user", "content": "hi"}],
            extra_body={"tensorzero::variant_name": "b", "tensorzero::episode_id": episode,
                        "tensorzero::tags": {"team": "x"}})
        assert resp.model.endswith("::variant_name::b") and resp.model_extra["episode_id"] == episode

    def test_a_template_part(self, client, upstream):
        part = {"type": "tensorzero::template", "name": "fun_fact_topic", "arguments": {"topic": "owls"}}
        client.chat.completions.create(model="tensorzero::function_name::fun_fact",
                                       messages=[{"role": "user", "content": [part]}])
        assert upstream.requests[0].body["messages"][0]["content"].startswith("Share a fun fact about: owls.")

    def test_a_json_function_answers_its_json_as_the_content(self, client):
        resp = client.chat.completions.create(model="tensorzero::function_name::extract",
                                              messages=[{"role": "user", "content": "Ada, 36"}])
        assert json.loads(resp.choices[0].message.content) == PERSON

    def test_a_function_stream(self, client):
        chunks = list(client.chat.completions.create(
            model="tensorzero::function_name::draft_email", stream=True,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == CONTENT
        assert {c.model for c in chunks} == {"tensorzero::function_name::draft_email::variant_name::v1"}

    def test_an_unknown_tensorzero_field_is_a_400(self, gw):
        resp = gw.request("POST", "/openai/v1/chat/completions", {
            "model": "tensorzero::function_name::ab", "messages": [], "tensorzero::colour": "red"})
        assert resp.status == 400 and "tensorzero::colour" in resp.json()["error"]["message"]


class TestModelsWithTensorZeroFields:
    def test_the_fields_do_not_go_upstream_and_extra_body_edits_the_body(self, client, upstream):
        client.chat.completions.create(
            model="tensorzero::model_name::gpt", messages=[{"role": "user", "content": "hi"}],
            extra_body={"tensorzero::tags": {"a": "b"}, "tensorzero::episode_id": str(uuid.uuid4()),
                        "tensorzero::extra_body": [{"pointer": "/safety/level", "value": 2}]})
        sent = upstream.requests[0].body
        assert not any(k.startswith("tensorzero::") for k in sent)
        assert sent["safety"] == {"level": 2}


@pytest.fixture(scope="module")
def tz(gw):
    with TensorZeroGateway.build_http(gateway_url=gw.base_url) as tz:
        yield tz


    def test_credentials_are_refused(self, gw):
        resp = gw.request("POST", "/openai/v1/chat/completions", {
            "model": "tensorzero::model_name::gpt", "messages": [{"role": "user", "content": "hi"}],
            "tensorzero::credentials": {"k": "sk-secret"}})
        assert resp.status == 400 and "sk-secret" not in resp.body.decode()


class TestTensorZeroClient:
    def test_chat_inference(self, tz):
        result = tz.inference(function_name="draft_email", input=EMAIL)
        assert result.content[0].text == CONTENT and result.variant_name == "v1"
        assert result.usage.input_tokens == 7 and result.usage.output_tokens == 3

    def test_json_inference(self, tz):
        result = tz.inference(function_name="extract", input={"messages": [{"role": "user", "content": "Ada"}]})
        assert result.output.parsed == PERSON

    def test_stream(self, tz):
        chunks = list(tz.inference(function_name="draft_email", input=EMAIL, stream=True))
        assert "".join(c.content[0].text for c in chunks if c.content) == CONTENT

    def test_tool_calls(self, tz):
        result = tz.inference(function_name="weather", input={"messages": [{"role": "user", "content": "Paris?"}]})
        assert result.content[0].name == "get_temperature" and result.content[0].arguments["city"] == "Paris"
