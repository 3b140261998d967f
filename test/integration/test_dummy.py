"""The dummy provider through the official SDK: plain, streamed, echo, failing and rate-limited models."""

from __future__ import annotations

import openai
import pytest
from configs import dummy_provider, model_toml

DUMMY_TEXT = "Hello from the budgateway dummy provider."
MESSAGES = [{"role": "user", "content": "hi"}]

MODELS = "".join([
    model_toml("dummy", {"d": dummy_provider("hello")}),
    model_toml("echo", {"d": dummy_provider("echo")}),
    model_toml("error-then-ok", {"bad": dummy_provider("error"), "good": dummy_provider("hello")}),
    model_toml("always-error", {"bad": dummy_provider("error")}),
    model_toml("rate-limited", {"a": dummy_provider("rate_limit"), "b": dummy_provider("rate_limit")}),
])


@pytest.fixture(scope="module")
def gw(module_gateway_factory):
    return module_gateway_factory(MODELS)


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


class TestDummyCompletion:
    def test_answers_with_the_dummy_text(self, client):
        resp = client.chat.completions.create(model="dummy", messages=MESSAGES)
        assert resp.choices[0].message.content == DUMMY_TEXT
        assert resp.choices[0].finish_reason == "stop"
        assert resp.model == "dummy"

    def test_echo_returns_the_last_user_message(self, client):
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "the first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "the last question, with ünïcödé"},
        ]
        resp = client.chat.completions.create(model="echo", messages=messages)
        assert resp.choices[0].message.content == "the last question, with ünïcödé"


class TestDummyStream:
    def test_stream_comes_in_one_word_chunks_ending_with_stop(self, client):
        chunks = list(client.chat.completions.create(model="dummy", messages=MESSAGES, stream=True))
        pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == DUMMY_TEXT
        assert len(pieces) == len(DUMMY_TEXT.split())
        assert all(len(p.split()) == 1 for p in pieces)
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert {c.model for c in chunks} == {"dummy"}

    def test_stream_has_a_usage_chunk_when_asked(self, client):
        chunks = list(client.chat.completions.create(model="dummy", messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}))
        assert chunks[-1].choices == []
        usage = chunks[-1].usage
        assert usage.completion_tokens > 0
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    def test_echo_streams_the_last_user_message(self, client):
        text = "stream this back please"
        chunks = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": text}],
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


class TestDummyFailures:
    def test_error_model_falls_back_to_the_next_provider(self, client):
        raw = client.chat.completions.with_raw_response.create(model="error-then-ok", messages=MESSAGES)
        assert raw.parse().choices[0].message.content == DUMMY_TEXT
        assert raw.headers["x-budgateway-provider"] == "error-then-ok/good"
        assert raw.headers["x-budgateway-attempts"] == "2"

    def test_error_model_alone_fails_with_502(self, client):
        with pytest.raises(openai.APIStatusError) as exc_info:
            client.chat.completions.create(model="always-error", messages=MESSAGES)
        assert exc_info.value.status_code == 502
        assert exc_info.value.code == "all_providers_failed"

    def test_rate_limited_models_fail_with_429(self, client):
        with pytest.raises(openai.RateLimitError) as exc_info:
            client.chat.completions.create(model="rate-limited", messages=MESSAGES)
        assert exc_info.value.code == "all_providers_failed"
        assert exc_info.value.body["type"] == "rate_limit_error"
