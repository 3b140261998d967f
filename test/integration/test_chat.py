"""Plain chat completions through the gateway to an OpenAI-compatible upstream, with the official SDK."""

from __future__ import annotations

import uuid

import pytest
from configs import model_toml, openai_provider
from upstream import CONTENT, USAGE

MESSAGES = [{"role": "user", "content": "hi"}]
KEY_ENV = "BUDGATEWAY_TEST_UPSTREAM_KEY"
ENV_KEY = "sk-upstream-from-env"
FILE_KEY = "sk-upstream-from-file"
COMPATIBLE_TYPES = ("vllm", "sglang", "tgi", "bud")


def _models(api_base: str, key_file: str) -> str:
    primary = openai_provider("ok", api_base, api_key_location=f"env::{KEY_ENV}",
                              extra_headers={"x-extra": "1"}, extra_body={"foo": "bar"})
    text = model_toml("gpt", {"primary": primary})
    text += model_toml("keyless", {"p": openai_provider("ok-keyless", api_base)})
    text += model_toml("file-key", {"p": openai_provider("ok-file-key", api_base,
                                                         api_key_location=f"path::{key_file}")})
    for t in COMPATIBLE_TYPES:
        # bud keeps its own default key location: test_bud_provider_sends_no_key_by_default checks it.
        location = None if t == "bud" else "none"
        provider = openai_provider(f"ok-{t}", api_base, type=t, api_key_location=location)
        text += model_toml(f"t-{t}", {"p": provider})
    return text


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, tmp_path_factory, upstream_client):
    key_file = tmp_path_factory.mktemp("keys") / "upstream.key"
    key_file.write_text(FILE_KEY)
    return module_gateway_factory(_models(upstream.url, str(key_file)), env={KEY_ENV: ENV_KEY},
                                  settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


class TestPlainCompletion:
    def test_returns_the_upstream_answer(self, client):
        resp = client.chat.completions.create(model="gpt", messages=MESSAGES)
        assert resp.object == "chat.completion"
        assert resp.choices[0].message.role == "assistant"
        assert resp.choices[0].message.content == CONTENT
        assert resp.choices[0].finish_reason == "stop"
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
            USAGE["prompt_tokens"], USAGE["completion_tokens"], USAGE["total_tokens"])

    def test_model_field_is_what_the_client_sent(self, client):
        assert client.chat.completions.create(model="gpt", messages=MESSAGES).model == "gpt"

    def test_tensorzero_model_name_prefix_is_routed_and_echoed(self, client):
        resp = client.chat.completions.create(model="tensorzero::model_name::gpt", messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT
        assert resp.model == "tensorzero::model_name::gpt"

    def test_openai_prefixed_route_serves_completions(self, gw):
        resp = gw.openai(prefix="/openai/v1").chat.completions.create(model="gpt", messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT

    def test_upstream_receives_the_providers_model_name(self, client, upstream):
        client.chat.completions.create(model="gpt", messages=MESSAGES)
        assert [r.model for r in upstream.requests] == ["ok"]

    def test_upstream_path_is_api_base_plus_chat_completions(self, client, upstream):
        client.chat.completions.create(model="gpt", messages=MESSAGES)
        assert [r.path for r in upstream.requests] == ["/v1/chat/completions"]


class TestResponseHeaders:
    def test_request_id_is_echoed(self, client):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt", messages=MESSAGES, extra_headers={"x-request-id": "req-from-client-42"})
        assert raw.headers["x-request-id"] == "req-from-client-42"

    def test_request_id_is_a_new_uuid_when_the_client_sends_none(self, client):
        first = client.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
        second = client.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
        ids = [first.headers["x-request-id"], second.headers["x-request-id"]]
        for value in ids:
            uuid.UUID(value)
        assert ids[0] != ids[1]

    def test_provider_header_names_model_and_provider(self, client):
        raw = client.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
        assert raw.headers["x-budgateway-provider"] == "gpt/primary"

    def test_attempts_header_is_one_when_the_first_provider_answers(self, client):
        raw = client.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
        assert raw.headers["x-budgateway-attempts"] == "1"

    def test_overhead_header_is_a_non_negative_float(self, client):
        raw = client.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES)
        assert float(raw.headers["x-budgateway-overhead-ms"]) >= 0.0


class TestPassthrough:
    def test_known_and_unknown_fields_reach_upstream_unchanged(self, client, upstream):
        tools = [{"type": "function", "function": {"name": "lookup", "description": "Look a thing up",
                                                    "parameters": {"type": "object", "properties": {
                                                        "q": {"type": "string"}}, "required": ["q"]}}}]
        client.chat.completions.create(
            model="keyless", messages=MESSAGES, tools=tools, tool_choice="auto",
            response_format={"type": "json_object"}, seed=7, n=1, temperature=0.25, max_tokens=33,
            extra_body={"some_unknown_field": {"nested": [1, "two", None, True]}, "top_k": 5})
        [rec] = upstream.requests
        assert rec.body == {
            "model": "ok-keyless", "messages": MESSAGES, "tools": tools, "tool_choice": "auto",
            "response_format": {"type": "json_object"}, "seed": 7, "n": 1, "temperature": 0.25,
            "max_tokens": 33, "some_unknown_field": {"nested": [1, "two", None, True]}, "top_k": 5,
        }

    def test_extra_body_is_merged_into_the_upstream_body(self, client, upstream):
        client.chat.completions.create(model="gpt", messages=MESSAGES, seed=3)
        [rec] = upstream.requests
        assert rec.body == {"model": "ok", "messages": MESSAGES, "seed": 3, "foo": "bar"}

    def test_extra_headers_are_sent_upstream(self, client, upstream):
        client.chat.completions.create(model="gpt", messages=MESSAGES)
        [rec] = upstream.requests
        assert rec.headers.get("x-extra") == "1"


class TestUpstreamCredentials:
    def test_configured_env_key_replaces_the_client_authorization(self, client, upstream):
        client.chat.completions.create(model="gpt", messages=MESSAGES)
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {ENV_KEY}"

    def test_client_authorization_is_not_forwarded_when_no_key_is_configured(self, client, upstream):
        client.chat.completions.create(model="keyless", messages=MESSAGES)
        [rec] = upstream.requests
        assert "authorization" not in rec.headers

    def test_key_read_from_a_file_is_sent(self, client, upstream):
        client.chat.completions.create(model="file-key", messages=MESSAGES)
        [rec] = upstream.requests
        assert rec.headers.get("authorization") == f"Bearer {FILE_KEY}"

    def test_bud_provider_sends_no_key_by_default(self, client, upstream):
        client.chat.completions.create(model="t-bud", messages=MESSAGES)
        [rec] = upstream.requests
        assert "authorization" not in rec.headers


class TestCompatibleProviderTypes:
    @pytest.mark.parametrize("provider_type", COMPATIBLE_TYPES)
    def test_openai_compatible_type_answers_from_its_api_base(self, client, upstream, provider_type):
        resp = client.chat.completions.create(model=f"t-{provider_type}", messages=MESSAGES)
        assert resp.choices[0].message.content == CONTENT
        assert resp.model == f"t-{provider_type}"
        assert [r.model for r in upstream.requests] == [f"ok-{provider_type}"]
