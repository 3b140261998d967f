"""The ``google_ai_studio_gemini`` provider through the OpenAI SDK: chat requests translated to Gemini's
generateContent (plain and streamed over SSE), tool calls both ways, finish reasons and usage, and
Gemini's error answers passed through, falling back, or failing the chain."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import openai
import pytest
from configs import model_toml, openai_provider
from media import png_bytes
from upstream import CONTENT, TOOL_ARGUMENTS, tool_arguments
from upstream_gemini import (
    API_KEY,
    GEMINI_TEXT,
    GEMINI_USAGE,
    PARTIAL_TEXT,
    RESPONSE_ID,
    SIGNATURE,
    THINKING_USAGE,
    TOOL_PREFACE,
    GeminiUpstream,
    tool_said,
)

TYPE = "google_ai_studio_gemini"
MESSAGES = [{"role": "user", "content": "hi"}]
#: A key location the config names (the other models read the type's default, GOOGLE_AI_STUDIO_API_KEY).
KEY_ENV = "BUDGATEWAY_TEST_GEMINI_KEY"
WRONG_KEY_ENV = "BUDGATEWAY_TEST_WRONG_GEMINI_KEY"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def gemini_provider(model_name: str, api_base: str, *,
                    api_key_location: str | None = None) -> dict[str, object]:
    """A ``google_ai_studio_gemini`` table; by default the key is read from the type's default variable."""
    table: dict[str, object] = {"type": TYPE, "model_name": model_name, "api_base": api_base}
    if api_key_location is not None:
        table["api_key_location"] = api_key_location
    return table


def _models(gemini_url: str, openai_url: str) -> str:
    def one(name: str, upstream_model: str, **key: str) -> str:
        return model_toml(name, {"gemini": gemini_provider(upstream_model, gemini_url, **key)})

    def with_backup(name: str, upstream_model: str) -> str:
        return model_toml(name, {"gemini": gemini_provider(upstream_model, gemini_url),
                                 "backup": openai_provider("ok", openai_url)})

    return "".join([
        one("gemini", "gemini-ok"),
        one("gemini-named-key", "gemini-ok", api_key_location=f"env::{KEY_ENV}"),
        one("gemini-wrong-key", "gemini-ok", api_key_location=f"env::{WRONG_KEY_ENV}"),
        *(one(name, name) for name in ("gemini-tool", "gemini-thinking", "gemini-max-tokens", "gemini-safety",
                                       "gemini-blocked", "gemini-error-mid-stream", "gemini-no-finish",
                                       "gemini-not-json", "gemini-shapeless")),
        one("gemini-refusing", "status-400"),
        one("gemini-missing", "status-404"),
        one("gemini-limited", "status-429"),
        one("gemini-unavailable", "status-503"),
        with_backup("unavailable-then-openai", "status-503"),
        with_backup("error-in-stream-then-openai", "gemini-error-in-stream"),
        with_backup("not-json-then-openai", "gemini-not-json"),
    ])


@pytest.fixture(scope="module")
def gemini_upstream() -> Iterator[GeminiUpstream]:
    server = GeminiUpstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_gemini_records(gemini_upstream: GeminiUpstream) -> None:
    gemini_upstream.clear()


@pytest.fixture(scope="module")
def gw(module_gateway_factory, gemini_upstream, upstream, upstream_client):
    env = {"GOOGLE_AI_STUDIO_API_KEY": API_KEY, KEY_ENV: API_KEY, WRONG_KEY_ENV: "AIza-wrong"}
    return module_gateway_factory(_models(gemini_upstream.url, upstream.url), env=env,
                                  settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


def _only(gemini_upstream):
    [rec] = gemini_upstream.requests
    return rec


def _stream(client, **kwargs) -> list:
    return list(client.chat.completions.create(stream=True, **kwargs))


def _text(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _finishes(chunks) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


class TestGeminiChat:
    def test_plain_answer_is_a_chat_completion(self, client):
        resp = client.chat.completions.create(model="gemini", messages=MESSAGES)
        assert resp.object == "chat.completion"
        assert resp.id == RESPONSE_ID
        assert resp.model == "gemini"
        [choice] = resp.choices
        assert (choice.message.role, choice.message.content, choice.finish_reason) == (
            "assistant", GEMINI_TEXT, "stop")
        assert choice.message.tool_calls is None
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
            GEMINI_USAGE["promptTokenCount"], GEMINI_USAGE["candidatesTokenCount"],
            GEMINI_USAGE["totalTokenCount"])

    def test_request_is_a_generate_content_request_with_the_key_header(self, client, gemini_upstream):
        client.chat.completions.create(model="gemini", messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "developer", "content": [{"type": "text", "text": "answer in English"}]},
            {"role": "user", "content": "how are you?"},
            {"role": "user", "content": [{"type": "text", "text": "and today?"}]},
        ], temperature=0.5, top_p=0.9, max_tokens=77, stop="END", seed=7, presence_penalty=0.1,
            frequency_penalty=0.2)
        rec = _only(gemini_upstream)
        assert rec.route == "/v1beta/models/gemini-ok:generateContent"
        assert rec.query == {}  # the key never goes in the URL
        assert rec.headers["x-goog-api-key"] == API_KEY
        assert "authorization" not in rec.headers
        assert rec.body == {
            "systemInstruction": {"parts": [{"text": "be brief\n\nanswer in English"}]},
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "hello"}]},
                {"role": "user", "parts": [{"text": "how are you?"}, {"text": "and today?"}]},
            ],
            "generationConfig": {"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 77,
                                 "stopSequences": ["END"], "seed": 7, "presencePenalty": 0.1,
                                 "frequencyPenalty": 0.2},
        }

    def test_a_named_env_key_location_is_read(self, client, gemini_upstream):
        resp = client.chat.completions.create(model="gemini-named-key", messages=MESSAGES)
        assert resp.choices[0].message.content == GEMINI_TEXT
        assert _only(gemini_upstream).headers["x-goog-api-key"] == API_KEY

    @pytest.mark.parametrize(("options", "config"), [
        ({"max_completion_tokens": 55, "stop": ["a", "b"]},
         {"maxOutputTokens": 55, "stopSequences": ["a", "b"]}),
        ({"response_format": {"type": "json_object"}}, {"responseMimeType": "application/json"}),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}},
         {"responseMimeType": "application/json",
          "responseSchema": {"type": "object", "properties": {"city": {"type": "string"}}}}),
    ], ids=["max_completion_tokens-and-stop-list", "json_object", "json_schema"])
    def test_generation_config(self, client, gemini_upstream, options, config):
        client.chat.completions.create(model="gemini", messages=MESSAGES, **options)
        assert _only(gemini_upstream).body["generationConfig"] == config

    def test_image_parts_become_inline_and_file_data(self, client, gemini_upstream):
        data = base64.b64encode(png_bytes()).decode()
        content = [{"type": "text", "text": "what are these?"},
                   {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                   {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]
        client.chat.completions.create(model="gemini", messages=[{"role": "user", "content": content}])
        assert _only(gemini_upstream).body["contents"] == [{"role": "user", "parts": [
            {"text": "what are these?"},
            {"inlineData": {"mimeType": "image/png", "data": data}},
            {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}]}]

    def test_n_gives_one_choice_per_candidate(self, client, gemini_upstream):
        resp = client.chat.completions.create(model="gemini", messages=MESSAGES, n=2)
        assert [(c.index, c.message.content) for c in resp.choices] == [(0, GEMINI_TEXT), (1, GEMINI_TEXT)]
        assert _only(gemini_upstream).body["generationConfig"] == {"candidateCount": 2}

    def test_thoughts_are_not_content_but_count_as_reasoning_tokens(self, client):
        resp = client.chat.completions.create(model="gemini-thinking", messages=MESSAGES)
        assert resp.choices[0].message.content == GEMINI_TEXT
        usage = resp.usage
        assert usage.prompt_tokens == THINKING_USAGE["promptTokenCount"]
        assert usage.completion_tokens == (THINKING_USAGE["candidatesTokenCount"]
                                           + THINKING_USAGE["thoughtsTokenCount"])
        assert usage.total_tokens == THINKING_USAGE["totalTokenCount"]
        assert usage.completion_tokens_details.reasoning_tokens == THINKING_USAGE["thoughtsTokenCount"]
        assert usage.prompt_tokens_details.cached_tokens == THINKING_USAGE["cachedContentTokenCount"]

    @pytest.mark.parametrize(("model", "finish", "content"), [
        ("gemini-max-tokens", "length", PARTIAL_TEXT),
        ("gemini-safety", "content_filter", ""),
        ("gemini-blocked", "content_filter", ""),
    ], ids=["MAX_TOKENS", "SAFETY", "prompt-blocked"])
    def test_finish_reasons(self, client, model, finish, content):
        resp = client.chat.completions.create(model=model, messages=MESSAGES)
        assert (resp.choices[0].finish_reason, resp.choices[0].message.content) == (finish, content)

    def test_stream_arrives_as_chat_chunks_with_usage(self, client, gemini_upstream):
        chunks = _stream(client, model="gemini", messages=MESSAGES, stream_options={"include_usage": True})
        rec = _only(gemini_upstream)
        assert rec.route == "/v1beta/models/gemini-ok:streamGenerateContent"
        assert rec.query == {"alt": ["sse"]}
        assert rec.headers["x-goog-api-key"] == API_KEY
        text = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert "".join(text) == GEMINI_TEXT
        assert len(text) == len(GEMINI_TEXT.split())
        assert chunks[0].choices[0].delta.role == "assistant"
        assert _finishes(chunks) == ["stop"]
        assert chunks[-1].choices == []
        assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens,
                chunks[-1].usage.total_tokens) == (GEMINI_USAGE["promptTokenCount"],
                                                   GEMINI_USAGE["candidatesTokenCount"],
                                                   GEMINI_USAGE["totalTokenCount"])
        assert {c.model for c in chunks} == {"gemini"}
        assert {c.id for c in chunks} == {RESPONSE_ID}

    def test_stream_without_include_usage_has_no_usage(self, client):
        chunks = _stream(client, model="gemini", messages=MESSAGES)
        assert _text(chunks) == GEMINI_TEXT
        assert all(c.choices and c.usage is None for c in chunks)

    @pytest.mark.parametrize(("model", "finish", "text"), [
        ("gemini-max-tokens", "length", PARTIAL_TEXT),
        ("gemini-safety", "content_filter", ""),
        ("gemini-blocked", "content_filter", ""),
        ("gemini-thinking", "stop", GEMINI_TEXT),
    ], ids=["MAX_TOKENS", "SAFETY", "prompt-blocked", "thoughts-left-out"])
    def test_streamed_finish_reasons(self, client, model, finish, text):
        chunks = _stream(client, model=model, messages=MESSAGES, stream_options={"include_usage": True})
        assert _finishes(chunks) == [finish]
        assert _text(chunks) == text
        assert chunks[-1].usage is not None


class TestGeminiTools:
    @pytest.mark.parametrize(("choice", "config"), [
        (None, None),
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "get_time"}},
         {"mode": "ANY", "allowedFunctionNames": ["get_time"]}),
    ], ids=["unset", "auto", "none", "required", "named"])
    def test_tools_are_sent_as_function_declarations(self, client, gemini_upstream, choice, config):
        options = {} if choice is None else {"tool_choice": choice}
        client.chat.completions.create(model="gemini", messages=MESSAGES, tools=[WEATHER, TIME], **options)
        body = _only(gemini_upstream).body
        assert body["tools"] == [{"functionDeclarations": [
            {"name": t["function"]["name"], "description": t["function"]["description"],
             "parameters": t["function"]["parameters"]} for t in (WEATHER, TIME)]}]
        assert body.get("toolConfig") == (None if config is None else {"functionCallingConfig": config})

    def test_a_function_without_parameters_is_declared_without_a_schema(self, client, gemini_upstream):
        # Gemini refuses an OBJECT schema without properties, which is what OpenAI clients send for it.
        now = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
        resp = client.chat.completions.create(model="gemini", messages=MESSAGES, tools=[now])
        assert resp.choices[0].message.content == GEMINI_TEXT
        assert _only(gemini_upstream).body["tools"] == [{"functionDeclarations": [{"name": "now"}]}]

    def test_function_calls_come_back_as_tool_calls(self, client):
        resp = client.chat.completions.create(model="gemini-tool", messages=MESSAGES, tools=[WEATHER, TIME])
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == TOOL_PREFACE
        calls = choice.message.tool_calls
        assert [(c.type, c.function.name) for c in calls] == [("function", "get_weather"),
                                                              ("function", "get_time")]
        assert [json.loads(c.function.arguments) for c in calls] == [tool_arguments(0), tool_arguments(1)]
        assert all(c.id.startswith("call_") for c in calls)
        assert len({c.id for c in calls}) == 2

    def test_tool_results_round_trip_as_function_responses(self, client, gemini_upstream):
        first = client.chat.completions.create(model="gemini-tool", messages=MESSAGES, tools=[WEATHER, TIME])
        message = first.choices[0].message
        weather_id, time_id = (c.id for c in message.tool_calls)
        messages = [
            *MESSAGES,
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": weather_id, "content": '{"temperature": 18, "sky": "sunny"}'},
            {"role": "tool", "tool_call_id": time_id, "content": "10:30"},
        ]
        resp = client.chat.completions.create(model="gemini-tool", messages=messages, tools=[WEATHER, TIME])
        responses = [{"name": "get_weather", "response": {"temperature": 18, "sky": "sunny"}},
                     {"name": "get_time", "response": {"content": "10:30"}}]
        assert resp.choices[0].message.content == tool_said(responses)
        assert resp.choices[0].finish_reason == "stop"
        assert gemini_upstream.requests[-1].body["contents"] == [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [
                {"text": TOOL_PREFACE},
                # The first call's thought signature went out inside its id and comes back with it.
                {"functionCall": {"name": "get_weather", "args": TOOL_ARGUMENTS},
                 "thoughtSignature": SIGNATURE},
                {"functionCall": {"name": "get_time", "args": tool_arguments(1)}}]},
            # Both answers in one turn: Gemini wants as many responses as there were calls.
            {"role": "user", "parts": [{"functionResponse": r} for r in responses]},
        ]

    def test_tool_arguments_that_are_not_json_are_the_clients_error(self, client, gemini_upstream):
        function = {"name": "get_weather", "arguments": "{not json"}
        call = {"id": "call_1", "type": "function", "function": function}
        messages = [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}]
        with pytest.raises(openai.BadRequestError) as exc_info:
            client.chat.completions.create(model="gemini", messages=messages, tools=[WEATHER])
        assert exc_info.value.body["param"] == "messages[1].tool_calls[0].function.arguments"
        assert gemini_upstream.requests == []

    def test_streamed_function_calls_arrive_as_tool_call_deltas(self, client):
        chunks = _stream(client, model="gemini-tool", messages=MESSAGES, tools=[WEATHER, TIME],
                         stream_options={"include_usage": True})
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or ()]
        assert [(call.index, call.type, call.function.name) for call in calls] == [
            (0, "function", "get_weather"), (1, "function", "get_time")]
        assert [json.loads(c.function.arguments) for c in calls] == [tool_arguments(0), tool_arguments(1)]
        assert all(call.id.startswith("call_") for call in calls)
        assert _text(chunks) == TOOL_PREFACE
        assert _finishes(chunks) == ["tool_calls"]
        assert chunks[-1].usage.total_tokens == GEMINI_USAGE["totalTokenCount"]


class TestGeminiFailures:
    def test_invalid_argument_keeps_geminis_message(self, client):
        with pytest.raises(openai.BadRequestError) as exc_info:
            client.chat.completions.create(model="gemini-refusing", messages=MESSAGES)
        assert exc_info.value.body["message"] == "upstream error 400"
        assert exc_info.value.type == "invalid_request_error"
        assert exc_info.value.code == "INVALID_ARGUMENT"

    def test_not_found_is_passed_through(self, client):
        with pytest.raises(openai.NotFoundError) as exc_info:
            client.chat.completions.create(model="gemini-missing", messages=MESSAGES)
        assert exc_info.value.code == "NOT_FOUND"

    def test_a_request_gemini_refuses_is_400_with_its_reason(self, client):
        with pytest.raises(openai.BadRequestError) as exc_info:
            client.chat.completions.create(model="gemini",
                                           messages=[{"role": "system", "content": "only this"}])
        assert "contents is not specified" in exc_info.value.body["message"]

    def test_wrong_key_is_401_authentication_error(self, client):
        with pytest.raises(openai.AuthenticationError) as exc_info:
            client.chat.completions.create(model="gemini-wrong-key", messages=MESSAGES)
        assert exc_info.value.body["message"] == "API key not valid. Please pass a valid API key."
        assert exc_info.value.type == "authentication_error"

    def test_resource_exhausted_alone_is_429(self, client):
        with pytest.raises(openai.RateLimitError) as exc_info:
            client.chat.completions.create(model="gemini-limited", messages=MESSAGES)
        assert "HTTP 429 from provider" in exc_info.value.body["message"]

    @pytest.mark.parametrize(("model", "stream"), [
        ("unavailable-then-openai", False),
        ("unavailable-then-openai", True),
        ("error-in-stream-then-openai", True),
        ("not-json-then-openai", False),
        ("not-json-then-openai", True),
    ], ids=["503", "503-streamed", "error-event-before-content", "not-json", "not-json-streamed"])
    def test_provider_trouble_falls_back_to_the_next_provider(self, client, model, stream):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, stream=stream)
        assert raw.headers["x-budgateway-provider"] == f"{model}/backup"
        assert raw.headers["x-budgateway-attempts"] == "2"
        text = _text(raw.parse()) if stream else raw.parse().choices[0].message.content
        assert text == CONTENT

    def test_unavailable_alone_fails_the_chain_naming_the_status(self, client):
        with pytest.raises(openai.APIStatusError) as exc_info:
            client.chat.completions.create(model="gemini-unavailable", messages=MESSAGES)
        assert exc_info.value.status_code == 502
        assert exc_info.value.code == "all_providers_failed"
        assert "HTTP 503 from provider" in exc_info.value.body["message"]

    @pytest.mark.parametrize("model", ["gemini-not-json", "gemini-shapeless"])
    @pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
    def test_malformed_answer_is_502(self, client, model, stream):
        with pytest.raises(openai.APIStatusError) as exc_info:
            client.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
        assert exc_info.value.status_code == 502
        assert "invalid response from provider" in exc_info.value.body["message"]

    @pytest.mark.parametrize(("model", "reason"), [
        ("gemini-error-mid-stream", "HTTP 503 from provider"),
        ("gemini-no-finish", "connection error"),
    ], ids=["error-event", "no-finishReason"])
    def test_failure_after_the_first_text_ends_the_stream_with_an_error(self, client, model, reason):
        text = []
        with pytest.raises(openai.APIError) as exc_info:
            for chunk in client.chat.completions.create(model=model, messages=MESSAGES, stream=True):
                text += [c.delta.content or "" for c in chunk.choices]
        assert "".join(text) == (PARTIAL_TEXT if model == "gemini-error-mid-stream" else GEMINI_TEXT)
        assert reason in exc_info.value.message
