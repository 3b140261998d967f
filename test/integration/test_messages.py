"""``POST /v1/messages`` through the official ``anthropic`` SDK, served by an OpenAI-wire model and by an
Anthropic model: plain and streamed messages, a tool-use round trip, and errors in Anthropic's shape."""

from __future__ import annotations

import base64
import json

import anthropic
import pytest
from configs import anthropic_provider, model_toml, openai_provider
from conftest import CLIENT_TIMEOUT_S
from media import png_bytes
from upstream import CONTENT, TOOL_ARGUMENTS, USAGE, tool_arguments
from upstream_anthropic import API_KEY, CLAUDE_TEXT, CLAUDE_USAGE, PARTIAL_TEXT

MESSAGES = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 100
TOOLS = [{"name": "get_weather", "description": "The weather in a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
TOOL_RESULT = "18 degrees and sunny"
SECOND_TOOL = {"name": "get_time", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}}}

#: Each backend: the gateway model, its tool-calling sibling, the text it answers and its usage.
BACKENDS = {
    "openai": ("gpt", "gpt-tools", CONTENT, (USAGE["prompt_tokens"], USAGE["completion_tokens"])),
    "anthropic": ("claude", "claude-tools", CLAUDE_TEXT,
                  (CLAUDE_USAGE["input_tokens"], CLAUDE_USAGE["output_tokens"])),
}


def _models(openai_url: str, anthropic_url: str) -> str:
    return "".join([
        model_toml("gpt", {"openai": openai_provider("ok", openai_url)}),
        model_toml("gpt-tools", {"openai": openai_provider("tool-call", openai_url)}),
        model_toml("gpt-refusing", {"openai": openai_provider("status-400", openai_url)}),
        model_toml("claude", {"anthropic": anthropic_provider("claude-ok", anthropic_url)}),
        model_toml("claude-tools", {"anthropic": anthropic_provider("claude-tool", anthropic_url)}),
        model_toml("claude-refusing", {"anthropic": anthropic_provider("status-400", anthropic_url)}),
        model_toml("claude-breaking", {
            "anthropic": anthropic_provider("claude-overloaded-mid-stream", anthropic_url)}),
        model_toml("embedder", {"openai": openai_provider("ok", openai_url)}, endpoints=["embedding"]),
    ])


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, anthropic_upstream):
    return module_gateway_factory(_models(upstream.url, anthropic_upstream.url),
                                  env={"ANTHROPIC_API_KEY": API_KEY})


@pytest.fixture(scope="module")
def client(gw):
    http_client = anthropic.DefaultHttpxClient(trust_env=False)
    with anthropic.Anthropic(base_url=gw.base_url, api_key="test-key", max_retries=0,
                             timeout=CLIENT_TIMEOUT_S, http_client=http_client) as client:
        yield client


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    return BACKENDS[request.param]


def _create(client, model: str, **kwargs):
    messages = kwargs.pop("messages", MESSAGES)
    return client.messages.create(model=model, max_tokens=MAX_TOKENS, messages=messages, **kwargs)


class TestPlainMessages:
    def test_answer_is_an_anthropic_message(self, client, backend):
        model, _, text, (input_tokens, output_tokens) = backend
        msg = _create(client, model)
        assert (msg.type, msg.role, msg.model) == ("message", "assistant", model)
        assert msg.id.startswith("msg_")
        assert [(b.type, b.text) for b in msg.content] == [("text", text)]
        assert msg.stop_reason == "end_turn"
        assert (msg.usage.input_tokens, msg.usage.output_tokens) == (input_tokens, output_tokens)

    def test_openai_backend_receives_a_chat_request(self, client, upstream):
        _create(client, "gpt", system="be brief", stop_sequences=["END"], metadata={"user_id": "user-1"},
                extra_body={"temperature": 0.3})
        [rec] = upstream.requests
        assert rec.path == "/v1/chat/completions"
        assert rec.body == {"model": "ok", "messages": [{"role": "system", "content": "be brief"}, *MESSAGES],
                            "max_tokens": MAX_TOKENS, "stop": ["END"], "temperature": 0.3, "user": "user-1"}

    def test_anthropic_backend_receives_the_messages_request(self, client, anthropic_upstream):
        _create(client, "claude", system="be brief", stop_sequences=["END"], metadata={"user_id": "user-1"},
                extra_body={"temperature": 0.3})
        [rec] = anthropic_upstream.requests
        assert rec.body == {"model": "claude-ok", "system": "be brief",
                            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                            "max_tokens": MAX_TOKENS, "stop_sequences": ["END"], "temperature": 0.3,
                            "metadata": {"user_id": "user-1"}}

    def test_openai_backend_receives_images_and_system_blocks(self, client, upstream):
        data = base64.b64encode(png_bytes()).decode()
        content = [{"type": "text", "text": "what is this?"},
                   {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}]
        system = [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}]
        _create(client, "gpt", system=system, messages=[{"role": "user", "content": content}])
        [rec] = upstream.requests
        [system, user] = rec.body["messages"]
        assert system["role"] == "system"
        assert "be brief" in system["content"] and "be kind" in system["content"]
        assert user == {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]}

    def test_answer_names_the_provider(self, client):
        raw = client.messages.with_raw_response.create(model="claude", max_tokens=MAX_TOKENS,
                                                       messages=MESSAGES)
        assert raw.headers["x-budgateway-provider"] == "claude/anthropic"
        assert raw.headers["x-budgateway-attempts"] == "1"
        assert raw.headers["x-request-id"]


class TestStreamedMessages:
    def test_events_come_in_anthropics_order(self, client, backend):
        model, _, text, _ = backend
        events = list(_create(client, model, stream=True))
        words = len(text.split())
        assert [e.type for e in events] == [
            "message_start", "content_block_start", *["content_block_delta"] * words, "content_block_stop",
            "message_delta", "message_stop"]
        assert events[0].message.model == model
        assert {e.index for e in events if e.type.startswith("content_block")} == {0}
        assert events[-2].delta.stop_reason == "end_turn"

    def test_stream_helper_assembles_the_text_and_usage(self, client, backend):
        model, _, text, (_, output_tokens) = backend
        with client.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=MESSAGES) as stream:
            assert "".join(stream.text_stream) == text
            final = stream.get_final_message()
        assert [b.text for b in final.content] == [text]
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == output_tokens

    def test_final_usage_counts_the_input_tokens(self, client, backend):
        model, _, _, (input_tokens, _) = backend
        with client.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=MESSAGES) as stream:
            final = stream.get_final_message()
        assert final.usage.input_tokens == input_tokens


    def test_failure_after_the_first_event_ends_with_an_error_event(self, client):
        events = []
        with pytest.raises(anthropic.APIStatusError) as exc_info:
            for event in _create(client, "claude-breaking", stream=True):
                events.append(event)
        text = [e.delta.text for e in events if e.type == "content_block_delta"]
        assert text == [PARTIAL_TEXT]
        assert exc_info.value.body["type"] == "error"
        assert "HTTP 529 from provider" in exc_info.value.body["error"]["message"]
        assert "Overloaded" not in exc_info.value.body["error"]["message"]
        assert "message_stop" not in [e.type for e in events]


class TestToolUse:
    def test_tool_use_block_with_its_input(self, client, backend):
        _, model, _, _ = backend
        msg = _create(client, model, tools=TOOLS)
        [tool_use] = [b for b in msg.content if b.type == "tool_use"]
        assert (tool_use.name, tool_use.input) == ("get_weather", TOOL_ARGUMENTS)
        assert msg.stop_reason == "tool_use"

    def test_streamed_tool_use_input_arrives_as_json_deltas(self, client, backend):
        _, model, _, _ = backend
        with client.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=MESSAGES,
                                    tools=TOOLS) as stream:
            events = list(stream)
            final = stream.get_final_message()
        partial = [e.delta.partial_json for e in events
                   if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        assert json.loads("".join(partial)) == TOOL_ARGUMENTS
        [tool_use] = [b for b in final.content if b.type == "tool_use"]
        assert (tool_use.name, tool_use.input) == ("get_weather", TOOL_ARGUMENTS)
        assert final.stop_reason == "tool_use"

    def test_round_trip_with_the_tool_result(self, client, backend):
        _, model, _, _ = backend
        first = _create(client, model, tools=TOOLS)
        [tool_use] = [b for b in first.content if b.type == "tool_use"]
        messages = [*MESSAGES, {"role": "assistant", "content": first.content},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": tool_use.id, "content": TOOL_RESULT}]}]
        second = _create(client, model, tools=TOOLS, messages=messages)
        assert [b.text for b in second.content] == [f"the tool said: {TOOL_RESULT}"]
        assert second.stop_reason == "end_turn"

    def test_parallel_tool_uses_are_blocks_of_their_own(self, client, backend):
        _, model, _, _ = backend
        msg = _create(client, model, tools=[*TOOLS, SECOND_TOOL])
        uses = [(b.name, b.input) for b in msg.content if b.type == "tool_use"]
        assert uses == [("get_weather", tool_arguments(0)), ("get_time", tool_arguments(1))]
        assert len({b.id for b in msg.content if b.type == "tool_use"}) == 2

    def test_streamed_parallel_tool_uses_are_blocks_of_their_own(self, client, backend):
        _, model, _, _ = backend
        with client.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=MESSAGES,
                                    tools=[*TOOLS, SECOND_TOOL]) as stream:
            final = stream.get_final_message()
        uses = [(b.name, b.input) for b in final.content if b.type == "tool_use"]
        assert uses == [("get_weather", tool_arguments(0)), ("get_time", tool_arguments(1))]

    def test_tool_choice_reaches_the_openai_backend(self, client, upstream):
        _create(client, "gpt-tools", tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"})
        expected = {"type": "function", "function": {"name": "get_weather"}}
        assert upstream.requests[0].body["tool_choice"] == expected

    def test_openai_backend_receives_tool_calls_and_the_tool_message(self, client, upstream):
        first = _create(client, "gpt-tools", tools=TOOLS)
        [tool_use] = [b for b in first.content if b.type == "tool_use"]
        messages = [*MESSAGES, {"role": "assistant", "content": first.content},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": tool_use.id, "content": TOOL_RESULT}]}]
        _create(client, "gpt-tools", tools=TOOLS, messages=messages)
        body = upstream.requests[-1].body
        function = {"name": "get_weather", "description": TOOLS[0]["description"],
                    "parameters": TOOLS[0]["input_schema"]}
        assert body["tools"] == [{"type": "function", "function": function}]
        assistant, tool = body["messages"][1:]
        [call] = assistant.pop("tool_calls")
        assert json.loads(call["function"].pop("arguments")) == TOOL_ARGUMENTS
        assert call == {"id": tool_use.id, "type": "function", "function": {"name": "get_weather"}}
        assert assistant == {"role": "assistant", "content": None}
        assert tool == {"role": "tool", "tool_call_id": tool_use.id, "content": TOOL_RESULT}


class TestErrors:
    def test_unknown_model_is_404_in_anthropics_shape(self, client):
        with pytest.raises(anthropic.NotFoundError) as exc_info:
            _create(client, "no-such-model")
        assert exc_info.value.body["type"] == "error"
        assert exc_info.value.body["error"]["type"] == "not_found_error"

    def test_model_without_chat_is_400(self, client):
        with pytest.raises(anthropic.BadRequestError) as exc_info:
            _create(client, "embedder")
        assert exc_info.value.body["error"] == {"type": "invalid_request_error",
                                                "message": "Model embedder does not support chat"}

    def test_missing_max_tokens_is_400_invalid_request_error(self, gw):
        resp = gw.request("POST", "/v1/messages", {"model": "gpt", "messages": MESSAGES})
        assert resp.status == 400, resp
        body = resp.json()
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in body["error"]["message"]

    @pytest.mark.parametrize("model", ["gpt-refusing", "claude-refusing"])
    def test_provider_error_keeps_its_message_in_anthropics_shape(self, client, model):
        with pytest.raises(anthropic.BadRequestError) as exc_info:
            _create(client, model)
        expected = {"type": "invalid_request_error", "message": "upstream error 400"}
        assert exc_info.value.body["error"] == expected
