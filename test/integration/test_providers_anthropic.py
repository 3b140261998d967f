"""The ``anthropic`` provider through the OpenAI SDK: chat requests translated to Anthropic's Messages API
(plain and streamed), tool calls both ways, and overloaded answers falling back."""

from __future__ import annotations

import base64
import json

import openai
import pytest
from configs import anthropic_provider, model_toml, openai_provider
from media import png_bytes
from upstream import CONTENT, TOOL_ARGUMENTS, tool_arguments
from upstream_anthropic import API_KEY, API_VERSION, CLAUDE_TEXT, CLAUDE_USAGE, PARTIAL_TEXT, TOOL_PREFACE

MESSAGES = [{"role": "user", "content": "hi"}]
WRONG_KEY_ENV = "BUDGATEWAY_TEST_WRONG_ANTHROPIC_KEY"
DEFAULT_MAX_TOKENS = 4096
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}]
TOOL_RESULT = "18 degrees and sunny"
SECOND_TOOL = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
TWO_TOOLS = [*TOOLS, SECOND_TOOL]


def _models(anthropic_url: str, openai_url: str) -> str:
    backup = openai_provider("ok", openai_url)
    return "".join([
        model_toml("claude", {"anthropic": anthropic_provider("claude-ok", anthropic_url)}),
        model_toml("claude-tools", {"anthropic": anthropic_provider("claude-tool", anthropic_url)}),
        model_toml("claude-small", {"anthropic": anthropic_provider("claude-ok", anthropic_url,
                                                                    default_max_tokens=256)}),
        model_toml("claude-refusing", {"anthropic": anthropic_provider("status-400", anthropic_url)}),
        model_toml("claude-wrong-key", {"anthropic": anthropic_provider(
            "claude-ok", anthropic_url, api_key_location=f"env::{WRONG_KEY_ENV}")}),
        model_toml("overloaded", {"anthropic": anthropic_provider("claude-overloaded", anthropic_url)}),
        model_toml("overloaded-then-openai", {
            "anthropic": anthropic_provider("claude-overloaded", anthropic_url), "backup": backup}),
        model_toml("overloaded-in-stream-then-openai", {
            "anthropic": anthropic_provider("claude-overloaded-in-stream", anthropic_url), "backup": backup}),
        model_toml("overloaded-mid-stream-then-openai", {
            "anthropic": anthropic_provider("claude-overloaded-mid-stream", anthropic_url),
            "backup": backup}),
    ])


@pytest.fixture(scope="module")
def gw(module_gateway_factory, anthropic_upstream, upstream, upstream_client):
    # The key sits in the type's default variable: no api_key_location above names it.
    env = {"ANTHROPIC_API_KEY": API_KEY, WRONG_KEY_ENV: "sk-ant-wrong"}
    return module_gateway_factory(_models(anthropic_upstream.url, upstream.url), env=env,
                                  settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


def _only(anthropic_upstream):
    [rec] = anthropic_upstream.requests
    return rec


def _tool_round_trip_messages(call_id: str) -> list[dict]:
    call = {"id": call_id, "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(TOOL_ARGUMENTS)}}
    return [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": TOOL_PREFACE, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
    ]


class TestAnthropicChat:
    def test_plain_answer_is_a_chat_completion(self, client):
        resp = client.chat.completions.create(model="claude", messages=MESSAGES)
        assert resp.object == "chat.completion"
        assert resp.choices[0].message.role == "assistant"
        assert resp.choices[0].message.content == CLAUDE_TEXT
        assert resp.choices[0].finish_reason == "stop"
        assert resp.model == "claude"
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
            CLAUDE_USAGE["input_tokens"], CLAUDE_USAGE["output_tokens"], sum(CLAUDE_USAGE.values()))

    def test_request_is_a_messages_request_with_key_and_version(self, client, anthropic_upstream):
        client.chat.completions.create(
            model="claude", messages=[{"role": "system", "content": "be brief"}, *MESSAGES],
            stop="END", temperature=0.5)
        rec = _only(anthropic_upstream)
        assert rec.path == "/v1/messages"
        assert rec.headers["x-api-key"] == API_KEY
        assert rec.headers["anthropic-version"] == API_VERSION
        assert "authorization" not in rec.headers
        assert rec.body == {
            "model": "claude-ok", "system": "be brief", "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "max_tokens": DEFAULT_MAX_TOKENS, "stop_sequences": ["END"], "temperature": 0.5}

    @pytest.mark.parametrize(("model", "limits", "expected"), [
        ("claude-small", {}, 256),
        ("claude", {"max_tokens": 77}, 77),
        ("claude", {"max_completion_tokens": 55}, 55),
    ], ids=["configured-default", "max_tokens", "max_completion_tokens"])
    def test_max_tokens_is_always_sent(self, client, anthropic_upstream, model, limits, expected):
        client.chat.completions.create(model=model, messages=MESSAGES, **limits)
        assert _only(anthropic_upstream).body["max_tokens"] == expected

    def test_image_part_becomes_a_base64_image_block(self, client, anthropic_upstream):
        data = base64.b64encode(png_bytes()).decode()
        content = [{"type": "text", "text": "what is this?"},
                   {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": content}])
        assert _only(anthropic_upstream).body["messages"] == [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}]}]

    def test_stream_arrives_as_chat_chunks(self, client, anthropic_upstream):
        chunks = list(client.chat.completions.create(model="claude", messages=MESSAGES, stream=True,
                                                     stream_options={"include_usage": True}))
        text = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(text) == CLAUDE_TEXT
        assert len(text) == len(CLAUDE_TEXT.split())
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == []
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (
            CLAUDE_USAGE["input_tokens"], CLAUDE_USAGE["output_tokens"])
        assert {c.model for c in chunks} == {"claude"}
        assert _only(anthropic_upstream).body["stream"] is True


class TestAnthropicTools:
    def test_tool_use_comes_back_as_a_tool_call(self, client):
        resp = client.chat.completions.create(model="claude-tools", messages=MESSAGES, tools=TOOLS)
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == TOOL_PREFACE
        [call] = choice.message.tool_calls
        assert (call.id, call.type, call.function.name) == ("toolu_upstream_01", "function", "get_weather")
        assert json.loads(call.function.arguments) == TOOL_ARGUMENTS

    def test_tools_are_sent_as_anthropic_tools(self, client, anthropic_upstream):
        client.chat.completions.create(model="claude-tools", messages=MESSAGES, tools=TOOLS,
                                       tool_choice="required")
        body = _only(anthropic_upstream).body
        function = TOOLS[0]["function"]
        assert body["tools"] == [{"name": function["name"], "description": function["description"],
                                  "input_schema": function["parameters"]}]
        assert body["tool_choice"] == {"type": "any"}

    def test_tool_result_round_trip(self, client, anthropic_upstream):
        first = client.chat.completions.create(model="claude-tools", messages=MESSAGES, tools=TOOLS)
        call_id = first.choices[0].message.tool_calls[0].id
        messages = _tool_round_trip_messages(call_id)
        resp = client.chat.completions.create(model="claude-tools", messages=messages, tools=TOOLS)
        assert resp.choices[0].message.content == f"the tool said: {TOOL_RESULT}"
        assert resp.choices[0].finish_reason == "stop"
        second = anthropic_upstream.requests[-1].body
        assert second["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "What is the weather in Paris?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": TOOL_PREFACE},
                {"type": "tool_use", "id": call_id, "name": "get_weather", "input": TOOL_ARGUMENTS}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": call_id, "content": TOOL_RESULT}]},
        ]

    def test_streamed_tool_use_arrives_as_tool_call_deltas(self, client):
        chunks = list(client.chat.completions.create(model="claude-tools", messages=MESSAGES, tools=TOOLS,
                                                     stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        calls = [call for d in deltas for call in d.tool_calls or ()]
        assert calls[0].id == "toolu_upstream_01"
        assert calls[0].function.name == "get_weather"
        assert {call.index for call in calls} == {0}
        assert json.loads("".join(call.function.arguments or "" for call in calls)) == TOOL_ARGUMENTS
        assert "".join(d.content or "" for d in deltas) == TOOL_PREFACE
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


    def test_parallel_tool_uses_come_back_as_separate_tool_calls(self, client):
        resp = client.chat.completions.create(model="claude-tools", messages=MESSAGES, tools=TWO_TOOLS)
        calls = resp.choices[0].message.tool_calls
        assert [(c.id, c.function.name) for c in calls] == [("toolu_upstream_01", "get_weather"),
                                                            ("toolu_upstream_02", "get_time")]
        assert [json.loads(c.function.arguments) for c in calls] == [tool_arguments(0), tool_arguments(1)]

    def test_streamed_parallel_tool_uses_keep_their_own_index(self, client):
        chunks = client.chat.completions.create(model="claude-tools", messages=MESSAGES, tools=TWO_TOOLS,
                                                stream=True)
        arguments: dict[int, str] = {}
        names: dict[int, str] = {}
        for chunk in chunks:
            for call in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
                arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
                if call.function.name:
                    names[call.index] = call.function.name
        assert names == {0: "get_weather", 1: "get_time"}
        assert {i: json.loads(a) for i, a in arguments.items()} == {i: tool_arguments(i) for i in (0, 1)}


class TestAnthropicFailures:
    @pytest.mark.parametrize(("model", "stream"), [
        ("overloaded-then-openai", False),
        ("overloaded-then-openai", True),
        ("overloaded-in-stream-then-openai", True),
    ], ids=["529", "529-streamed", "error-event-in-stream"])
    def test_overloaded_falls_back_to_the_next_provider(self, client, model, stream):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, stream=stream)
        assert raw.headers["x-budgateway-provider"] == f"{model}/backup"
        assert raw.headers["x-budgateway-attempts"] == "2"
        if stream:
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            text = raw.parse().choices[0].message.content
        assert text == CONTENT

    def test_error_after_the_first_text_ends_the_stream_without_fallback(self, client, upstream):
        stream = client.chat.completions.with_raw_response.create(
            model="overloaded-mid-stream-then-openai", messages=MESSAGES, stream=True)
        assert stream.headers["x-budgateway-attempts"] == "1"
        text = []
        with pytest.raises(openai.APIError) as exc_info:
            for chunk in stream.parse():
                text += [c.delta.content or "" for c in chunk.choices]
        assert "".join(text) == PARTIAL_TEXT
        assert "HTTP 529 from provider" in exc_info.value.message
        assert upstream.requests == []

    def test_overloaded_alone_fails_the_chain_naming_the_status(self, client):
        with pytest.raises(openai.APIStatusError) as exc_info:
            client.chat.completions.create(model="overloaded", messages=MESSAGES)
        assert exc_info.value.code == "all_providers_failed"
        assert "HTTP 529 from provider" in exc_info.value.body["message"]

    def test_client_error_keeps_anthropics_message(self, client):
        with pytest.raises(openai.BadRequestError) as exc_info:
            client.chat.completions.create(model="claude-refusing", messages=MESSAGES)
        assert exc_info.value.body["message"] == "upstream error 400"
        assert exc_info.value.type == "invalid_request_error"

    def test_wrong_key_is_401_authentication_error(self, client):
        with pytest.raises(openai.AuthenticationError) as exc_info:
            client.chat.completions.create(model="claude-wrong-key", messages=MESSAGES)
        assert exc_info.value.body["message"] == "invalid x-api-key"
        assert exc_info.value.type == "authentication_error"
