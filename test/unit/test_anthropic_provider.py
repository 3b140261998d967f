"""The anthropic provider: request, answer and event-stream translation from fixture payloads, no sockets."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import ujson
from fakes import FakeClient, FakeStream

from gateway.config.schema import ProviderConfig, TimeoutsConfig
from providers.anthropic import (
    API_VERSION,
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    anthropic_error,
    stream_anthropic,
    to_chat_completion,
    to_messages_request,
)
from providers.base import (
    Attempt,
    ChatRequest,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderResponseError,
)
from providers.credentials import Credential, Secret

MODEL = "claude-test-1"
KEY = "sk-ant-test"


def _config(**options: object) -> ProviderConfig:
    return ProviderConfig(
        name="claude",
        type="anthropic",
        model_name=MODEL,
        api_base=None,
        api_key_location="dynamic::anthropic",
        timeouts=TimeoutsConfig(),
        extra_headers=MappingProxyType({"anthropic-beta": "test-beta"}),
        extra_body=MappingProxyType({"top_k": 5}),
        options=MappingProxyType(options),
    )


def _provider(**options: object) -> AnthropicProvider:
    return AnthropicProvider(_config(**options), Credential("dynamic::anthropic", {"anthropic": Secret(KEY)}))


def _translate(body: dict) -> dict:
    return to_messages_request(body, MODEL, DEFAULT_MAX_TOKENS)


def _sse(events: list[dict]) -> bytes:
    """Events framed as Anthropic sends them: a named event line, then its data line."""
    return b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), ujson.dumps(e).encode()) for e in events
    )


def _pieces(raw: bytes, size: int = 7) -> list[bytes]:
    """Split into small reads, so events arrive cut across reads as on a real socket."""
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def _one_read_per_event(events: list[dict]) -> list[bytes]:
    return [block + b"\n\n" for block in _sse(events).split(b"\n\n") if block]


def _chunks(events: list[dict], include_usage: bool = False) -> list[dict]:
    stream = FakeStream(_pieces(_sse(events)))
    return [ujson.loads(p) for p in stream_anthropic(stream, include_usage)]


# Fixtures: event sequences in the shapes of https://docs.anthropic.com/en/api/messages-streaming.
MESSAGE_START = {
    "type": "message_start",
    "message": {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": MODEL,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1},
    },
}
TEXT_STREAM = [
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 15},
    },
    {"type": "message_stop"},
]
TOOL_STREAM = [
    MESSAGE_START,
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking."}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_01xyz", "name": "get_weather", "input": {}},
    },
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": '{"city":'},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": ' "Paris"}'},
    },
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 89},
    },
    {"type": "message_stop"},
]
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


class TestRequestTranslation:
    def test_system_and_developer_messages_join_into_system(self):
        out = _translate(
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                    {"role": "user", "content": "Hi"},
                ]
            }
        )
        assert out["system"] == "Be brief.\n\nBe kind."
        assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
        assert out["model"] == MODEL

    def test_max_tokens_wins(self):
        out = _translate({"messages": [], "max_tokens": 10, "max_completion_tokens": 20})
        assert out["max_tokens"] == 10

    def test_max_completion_tokens_when_no_max_tokens(self):
        assert _translate({"messages": [], "max_completion_tokens": 20})["max_tokens"] == 20

    def test_default_max_tokens_when_neither(self):
        assert to_messages_request({"messages": []}, MODEL, 123)["max_tokens"] == 123

    def test_stop_string_becomes_a_list(self):
        assert _translate({"messages": [], "stop": "END"})["stop_sequences"] == ["END"]

    def test_stop_list_passes(self):
        assert _translate({"messages": [], "stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]

    def test_sampling_stream_and_user(self):
        out = _translate({"messages": [], "temperature": 0.5, "top_p": 0.9, "stream": True, "user": "u-1"})
        assert (out["temperature"], out["top_p"], out["stream"]) == (0.5, 0.9, True)
        assert out["metadata"] == {"user_id": "u-1"}

    def test_tools_and_named_tool_choice(self):
        params = {"type": "object", "properties": {"city": {"type": "string"}}}
        out = _translate(
            {
                "messages": [],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "get_weather", "description": "Weather", "parameters": params},
                    },
                    {"type": "function", "function": {"name": "noop"}},
                ],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": False,
            }
        )
        assert out["tools"] == [
            {"name": "get_weather", "description": "Weather", "input_schema": params},
            {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
        ]
        assert out["tool_choice"] == {
            "type": "tool",
            "name": "get_weather",
            "disable_parallel_tool_use": True,
        }

    @pytest.mark.parametrize("choice, expected", [("auto", "auto"), ("required", "any"), ("none", "none")])
    def test_string_tool_choices(self, choice, expected):
        tools = [{"type": "function", "function": {"name": "f"}}]
        assert _translate({"messages": [], "tools": tools, "tool_choice": choice})["tool_choice"] == {
            "type": expected
        }

    def test_parallel_tool_calls_false_without_tool_choice(self):
        tools = [{"type": "function", "function": {"name": "f"}}]
        out = _translate({"messages": [], "tools": tools, "parallel_tool_calls": False})
        assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}

    def test_tool_round_trip_messages(self):
        out = _translate(
            {
                "messages": [
                    {"role": "user", "content": "Weather in Paris and Rome?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "w", "arguments": '{"city": "Paris"}'},
                            },
                            {"id": "call.2", "type": "function", "function": {"name": "w", "arguments": ""}},
                        ],
                    },
                    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                    {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "21C"}]},
                    {"role": "user", "content": "Thanks"},
                ]
            }
        )
        assert out["messages"][1] == {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}},
                # Anthropic's id pattern has no dot; the tool result below gets the same id.
                {"type": "tool_use", "id": "call_2", "name": "w", "input": {}},
            ],
        }
        assert out["messages"][2] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "21C"}],
                },
                {"type": "text", "text": "Thanks"},
            ],
        }
        assert len(out["messages"]) == 3

    def test_tool_arguments_that_are_not_a_json_object_are_refused(self):
        call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}
        with pytest.raises(ProviderHTTPError) as info:
            _translate({"messages": [{"role": "assistant", "tool_calls": [call]}]})
        assert info.value.status == 400 and not info.value.retryable
        assert info.value.param == "messages[0].tool_calls[0].function.arguments"

    def test_image_data_url_becomes_base64_block(self):
        part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        out = _translate(
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, part]}]}
        )
        assert out["messages"][0]["content"][1] == {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        }

    def test_image_https_url_becomes_url_block(self):
        part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}
        out = _translate({"messages": [{"role": "user", "content": [part]}]})
        assert out["messages"][0]["content"] == [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
        ]

    def test_non_base64_data_url_is_refused(self):
        part = {"type": "image_url", "image_url": {"url": "data:image/png,rawbytes"}}
        with pytest.raises(ProviderHTTPError) as info:
            _translate({"messages": [{"role": "user", "content": [part]}]})
        assert info.value.param == "messages[0].content[0].image_url"

    def test_consecutive_same_role_messages_merge(self):
        out = _translate(
            {
                "messages": [
                    {"role": "user", "content": "one"},
                    {"role": "user", "content": "two"},
                    {"role": "assistant", "content": "three"},
                    {"role": "assistant", "content": "four"},
                ]
            }
        )
        assert out["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}],
            },
        ]

    def test_empty_text_is_dropped(self):
        out = _translate(
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}
        )
        assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]

    def test_unknown_role_is_refused(self):
        with pytest.raises(ProviderHTTPError) as info:
            _translate({"messages": [{"role": "narrator", "content": "x"}]})
        assert info.value.param == "messages[0].role"


class TestResponseTranslation:
    def test_text_answer(self):
        answer = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 3},
        }
        out = to_chat_completion(answer)
        assert out["object"] == "chat.completion"
        assert (out["id"], out["model"]) == ("msg_1", MODEL)
        assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hello world"}
        assert out["choices"][0]["finish_reason"] == "stop"
        assert out["usage"]["total_tokens"] == 13

    def test_tool_use_answer(self):
        answer = {
            "id": "msg_2",
            "model": MODEL,
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        out = to_chat_completion(answer)
        message = out["choices"][0]["message"]
        assert message["content"] is None
        assert message["tool_calls"] == [
            {"id": "toolu_1", "type": "function", "function": {"name": "w", "arguments": '{"city":"Paris"}'}}
        ]
        assert out["choices"][0]["finish_reason"] == "tool_calls"

    @pytest.mark.parametrize(
        "stop_reason, finish",
        [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
        ],
    )
    def test_finish_reasons(self, stop_reason, finish):
        answer = {"content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason, "usage": {}}
        assert to_chat_completion(answer)["choices"][0]["finish_reason"] == finish

    def test_usage_counts_cache_tokens_as_prompt(self):
        usage = {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 50,
            "output_tokens": 7,
        }
        out = to_chat_completion({"content": [], "stop_reason": "end_turn", "usage": usage})
        assert out["usage"] == {
            "prompt_tokens": 160,
            "completion_tokens": 7,
            "total_tokens": 167,
            "prompt_tokens_details": {"cached_tokens": 100},
        }

    def test_answer_without_content_is_a_bad_response(self):
        with pytest.raises(ProviderResponseError):
            to_chat_completion({"type": "message"})


class TestStreamTranslation:
    def test_text_stream(self):
        chunks = _chunks(TEXT_STREAM)
        assert [c["choices"][0]["delta"] for c in chunks] == [
            {"role": "assistant", "content": "Hello"},
            {"content": " there"},
            {},
        ]
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
        assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01abc" for c in chunks)
        assert all(c["model"] == MODEL for c in chunks)

    def test_usage_chunk_when_asked(self):
        last = _chunks(TEXT_STREAM, include_usage=True)[-1]
        assert last["choices"] == []
        assert last["usage"] == {
            "prompt_tokens": 25,
            "completion_tokens": 15,
            "total_tokens": 40,
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    def test_no_usage_chunk_unless_asked(self):
        assert all("usage" not in c for c in _chunks(TEXT_STREAM))

    def test_tool_use_stream(self):
        deltas = [c["choices"][0]["delta"] for c in _chunks(TOOL_STREAM)]
        assert deltas[0] == {"role": "assistant", "content": "Checking."}
        assert deltas[1] == {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01xyz",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
        # The empty partial_json sends nothing; the rest go to tool call 0, not content block 1.
        assert deltas[2:4] == [
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]},
        ]
        assert deltas[4] == {}
        assert len(deltas) == 5

    def test_tool_use_stream_finishes_with_tool_calls(self):
        assert _chunks(TOOL_STREAM)[-1]["choices"][0]["finish_reason"] == "tool_calls"

    def test_error_event_before_content_raises_retryable(self):
        stream = FakeStream(_pieces(_sse([MESSAGE_START, {"type": "ping"}, OVERLOADED])))
        with pytest.raises(ProviderHTTPError) as info:
            next(stream_anthropic(stream))
        assert (info.value.status, info.value.type, info.value.code) == (
            529,
            "server_error",
            "overloaded_error",
        )
        assert info.value.retryable
        assert str(info.value) == "Overloaded"
        assert stream.closed

    def test_error_event_mid_stream_raises(self):
        stream = FakeStream(_one_read_per_event(TEXT_STREAM[:4] + [OVERLOADED]))
        chunks = stream_anthropic(stream)
        assert ujson.loads(next(chunks))["choices"][0]["delta"]["content"] == "Hello"
        with pytest.raises(ProviderHTTPError):
            next(chunks)

    def test_truncated_stream_is_a_connection_error(self):
        stream = FakeStream(_pieces(_sse(TEXT_STREAM[:5])))
        chunks = stream_anthropic(stream)
        with pytest.raises(ProviderConnectionError):
            list(chunks)
        assert stream.closed

    def test_error_status_raises_the_mapped_error(self):
        body = b'{"type":"error","error":{"type":"rate_limit_error","message":"Slow down"}}'
        stream = FakeStream([body], status=429)
        with pytest.raises(ProviderHTTPError) as info:
            next(stream_anthropic(stream))
        assert (info.value.status, info.value.type, str(info.value)) == (429, "rate_limit_error", "Slow down")
        assert stream.closed

    def test_events_after_message_stop_are_ignored_and_the_body_is_read(self):
        stream = FakeStream([_sse(TEXT_STREAM), b'event: ping\ndata: {"type": "ping"}\n\n'])
        assert len(list(stream_anthropic(stream))) == 3
        assert stream.closed

    def test_stream_without_stop_reason_still_finishes(self):
        events = [e for e in TEXT_STREAM if e["type"] != "message_delta"]
        assert _chunks(events)[-1]["choices"][0]["finish_reason"] == "stop"

    def test_closing_early_closes_upstream(self):
        stream = FakeStream(_one_read_per_event(TEXT_STREAM))
        chunks = stream_anthropic(stream)
        next(chunks)
        chunks.close()
        assert stream.closed


class TestErrors:
    @pytest.mark.parametrize(
        "status, kind, mapped",
        [
            (400, "invalid_request_error", "invalid_request_error"),
            (401, "authentication_error", "authentication_error"),
            (403, "permission_error", "permission_error"),
            (404, "not_found_error", "invalid_request_error"),
            (429, "rate_limit_error", "rate_limit_error"),
            (500, "api_error", "server_error"),
            (529, "overloaded_error", "server_error"),
        ],
    )
    def test_error_types_map_to_openai(self, status, kind, mapped):
        raw = ujson.dumps({"type": "error", "error": {"type": kind, "message": "m"}}).encode()
        error = anthropic_error(status, raw)
        assert (error.status, error.type, str(error)) == (status, mapped, "m")

    @pytest.mark.parametrize(
        "status, retryable", [(400, False), (401, False), (429, True), (500, True), (529, True)]
    )
    def test_retryable(self, status, retryable):
        assert anthropic_error(status, b"").retryable is retryable

    def test_non_json_error_body_keeps_its_text(self):
        error = anthropic_error(502, b"<html>Bad Gateway</html>")
        assert (error.status, str(error)) == (502, "upstream answered HTTP 502 with a body that is not JSON")
        assert error.raw == b"<html>Bad Gateway</html>", "kept for debug logs only"


class TestProvider:
    def test_options_default_max_tokens_accepted(self):
        assert AnthropicProvider.check_options({"default_max_tokens": 1024}) == []

    @pytest.mark.parametrize("value", [0, -1, "1024", 1.5, True])
    def test_options_bad_default_max_tokens(self, value):
        assert [k for k, _ in AnthropicProvider.check_options({"default_max_tokens": value})] == [
            "default_max_tokens"
        ]

    def test_options_unknown_key(self):
        assert [k for k, _ in AnthropicProvider.check_options({"max_tokenz": 1})] == ["max_tokenz"]

    def test_chat_sends_headers_body_and_translates(self):
        answer = {
            "id": "msg_1",
            "model": MODEL,
            "content": [{"type": "text", "text": "Hi"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        client = FakeClient(200, ujson.dumps(answer).encode())
        request = ChatRequest({"model": "alias", "messages": [{"role": "user", "content": "Hi"}]}, "alias")
        result = _provider(default_max_tokens=64).chat(client, request, Attempt("alias", "claude"))
        assert result.body["choices"][0]["message"]["content"] == "Hi"
        url, body, headers = client.sent[0]
        assert url == "https://api.anthropic.com/v1/messages"
        assert headers["x-api-key"] == KEY
        assert headers["anthropic-version"] == API_VERSION
        assert headers["content-type"] == "application/json"
        assert headers["anthropic-beta"] == "test-beta"
        assert (body["model"], body["max_tokens"], body["top_k"]) == (MODEL, 64, 5)
        assert "stream" not in body

    def test_chat_error_answer_raises(self):
        client = FakeClient(
            529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
        )
        request = ChatRequest({"messages": [{"role": "user", "content": "Hi"}]}, "alias")
        with pytest.raises(ProviderHTTPError) as info:
            _provider().chat(client, request, Attempt("alias", "claude"))
        assert info.value.retryable

    def test_chat_stream_sends_stream_and_yields_chunks(self):
        client = FakeClient(stream=FakeStream(_pieces(_sse(TEXT_STREAM))))
        body = {
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        chunks = list(_provider().chat_stream(client, ChatRequest(body, "alias"), Attempt("alias", "claude")))
        assert client.sent[0][1]["stream"] is True
        assert ujson.loads(chunks[-1])["usage"]["completion_tokens"] == 15
