"""Anthropic Messages at the edge: requests to OpenAI chat, answers and chunks back to messages and events."""

from __future__ import annotations

import pytest
import ujson

from gateway.anthropic_messages import (
    ChunksToEvents,
    chat_to_message,
    error_event,
    error_json,
    error_type,
    messages_to_chat,
)
from gateway.errors import InvalidRequestError
from providers.sse import SSEDecoder

MODEL = "my-model"


def _request(**fields: object) -> dict:
    return {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}], **fields}


def _events(raw: bytes) -> list[tuple[str, dict]]:
    """Decode framed events, checking each event's name matches its data's type, as Anthropic's do."""
    out = []
    for name, data in SSEDecoder().feed(raw):
        event = ujson.loads(data)
        assert name is not None and name.decode() == event["type"]
        out.append((event["type"], event))
    return out


def _chunk(delta: dict | None = None, finish: str | None = None, **fields: object) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "model": "up",
        "choices": choices,
        **fields,
    }


class TestMessagesToChat:
    def test_minimal_request(self):
        assert messages_to_chat(_request()) == {
            "model": MODEL,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hi"}],
        }

    def test_system_string_and_blocks(self):
        assert messages_to_chat(_request(system="Be brief."))["messages"][0] == {
            "role": "system",
            "content": "Be brief.",
        }
        blocks = [
            {"type": "text", "text": "A"},
            {"type": "text", "text": "B", "cache_control": {"type": "ephemeral"}},
        ]
        assert messages_to_chat(_request(system=blocks))["messages"][0] == {
            "role": "system",
            "content": "A\n\nB",
        }

    def test_sampling_stop_stream_and_user(self):
        out = messages_to_chat(
            _request(
                temperature=0.2,
                top_p=0.8,
                top_k=5,
                stop_sequences=["END"],
                stream=True,
                metadata={"user_id": "u1"},
            )
        )
        assert (out["temperature"], out["top_p"], out["stop"], out["user"]) == (0.2, 0.8, ["END"], "u1")
        assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
        assert "top_k" not in out

    def test_text_and_image_blocks_become_parts(self):
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        ]
        out = messages_to_chat(_request(messages=[{"role": "user", "content": content}]))
        assert out["messages"] == [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                ],
            }
        ]

    def test_tool_use_and_tool_result_round_trip(self):
        messages = [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "18C"}],
                    },
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ]
        out = messages_to_chat(_request(messages=messages))["messages"]
        assert out[1] == {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                }
            ],
        }
        assert out[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
        assert out[3] == {"role": "user", "content": "And tomorrow?"}
        assert len(out) == 4

    def test_assistant_with_only_tool_use_has_null_content(self):
        content = [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]
        out = messages_to_chat(_request(messages=[{"role": "assistant", "content": content}]))
        assert out["messages"][0]["content"] is None

    def test_image_in_tool_result_follows_as_user_part(self):
        image = {"type": "image", "source": {"type": "url", "url": "https://example.com/chart.png"}}
        result = {
            "type": "tool_result",
            "tool_use_id": "t",
            "content": [{"type": "text", "text": "chart:"}, image],
        }
        out = messages_to_chat(_request(messages=[{"role": "user", "content": [result]}]))["messages"]
        assert out == [
            {"role": "tool", "tool_call_id": "t", "content": "chart:"},
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "https://example.com/chart.png"}}],
            },
        ]

    def test_thinking_blocks_are_dropped(self):
        content = [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Yes"}]
        out = messages_to_chat(_request(messages=[{"role": "assistant", "content": content}]))
        assert out["messages"] == [{"role": "assistant", "content": "Yes"}]

    def test_tools_and_tool_choice(self):
        schema = {"type": "object", "properties": {"city": {"type": "string"}}}
        tools = [{"name": "w", "description": "Weather", "input_schema": schema}]
        out = messages_to_chat(
            _request(
                tools=tools, tool_choice={"type": "tool", "name": "w", "disable_parallel_tool_use": True}
            )
        )
        assert out["tools"] == [
            {"type": "function", "function": {"name": "w", "description": "Weather", "parameters": schema}}
        ]
        assert out["tool_choice"] == {"type": "function", "function": {"name": "w"}}
        assert out["parallel_tool_calls"] is False

    @pytest.mark.parametrize("kind, expected", [("auto", "auto"), ("any", "required"), ("none", "none")])
    def test_tool_choice_kinds(self, kind, expected):
        tools = [{"name": "w", "input_schema": {"type": "object"}}]
        assert messages_to_chat(_request(tools=tools, tool_choice={"type": kind}))["tool_choice"] == expected

    def test_missing_max_tokens(self):
        body = _request()
        del body["max_tokens"]
        with pytest.raises(InvalidRequestError) as info:
            messages_to_chat(body)
        assert info.value.param == "max_tokens"

    @pytest.mark.parametrize("value", [0, "100", True])
    def test_bad_max_tokens(self, value):
        with pytest.raises(InvalidRequestError) as info:
            messages_to_chat(_request(max_tokens=value))
        assert info.value.param == "max_tokens"

    def test_messages_not_a_list(self):
        with pytest.raises(InvalidRequestError) as info:
            messages_to_chat(_request(messages={"role": "user"}))
        assert info.value.param == "messages"

    def test_bad_role(self):
        with pytest.raises(InvalidRequestError) as info:
            messages_to_chat(_request(messages=[{"role": "system", "content": "x"}]))
        assert info.value.param == "messages[0].role"

    def test_unsupported_block(self):
        content = [{"type": "document", "source": {"type": "text", "data": "x"}}]
        with pytest.raises(InvalidRequestError) as info:
            messages_to_chat(_request(messages=[{"role": "user", "content": content}]))
        assert info.value.param == "messages[0].content[0].type"

    def test_server_tools_are_refused(self):
        with pytest.raises(InvalidRequestError) as info:
            messages_to_chat(_request(tools=[{"type": "web_search_20250305", "name": "web_search"}]))
        assert info.value.param == "tools[0]"


class TestChatToMessage:
    def test_text_answer(self):
        completion = {
            "id": "chatcmpl-123",
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
        }
        assert chat_to_message(completion, MODEL) == {
            "id": "msg_123",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "Hello"}],
            "model": MODEL,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "output_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def test_tool_calls_become_tool_use(self):
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "w", "arguments": '{"city": "Paris"}'},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        completion = {"id": "x", "choices": [{"message": message, "finish_reason": "tool_calls"}]}
        out = chat_to_message(completion, MODEL)
        assert out["content"] == [
            {"type": "tool_use", "id": "call_1", "name": "w", "input": {"city": "Paris"}}
        ]
        assert out["stop_reason"] == "tool_use"

    @pytest.mark.parametrize(
        "finish, stop_reason",
        [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ],
    )
    def test_stop_reasons(self, finish, stop_reason):
        completion = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
        assert chat_to_message(completion, MODEL)["stop_reason"] == stop_reason

    def test_cached_tokens_leave_input_tokens(self):
        usage = {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 80}}
        out = chat_to_message({"choices": [{"message": {"content": "x"}}], "usage": usage}, MODEL)
        assert (out["usage"]["input_tokens"], out["usage"]["cache_read_input_tokens"]) == (20, 80)


class TestChunksToEvents:
    def test_text_stream(self):
        t = ChunksToEvents(MODEL)
        raw = t.feed(_chunk({"role": "assistant", "content": ""}))
        raw += t.feed(_chunk({"content": "Hel"}))
        raw += t.feed(_chunk({"content": "lo"}))
        raw += t.feed(_chunk({}, "stop"))
        raw += t.feed(_chunk(usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}))
        raw += t.finish()
        events = _events(raw)
        assert [name for name, _ in events] == [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
        start = events[0][1]["message"]
        assert (start["id"], start["model"], start["role"], start["content"]) == (
            "msg_abc",
            MODEL,
            "assistant",
            [],
        )
        assert events[1][1] == {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        assert [e["delta"] for _, e in events[2:4]] == [
            {"type": "text_delta", "text": "Hel"},
            {"type": "text_delta", "text": "lo"},
        ]
        delta = events[5][1]
        assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
        assert (delta["usage"]["input_tokens"], delta["usage"]["output_tokens"]) == (9, 2)

    def test_tool_call_stream(self):
        t = ChunksToEvents(MODEL)
        first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "w", "arguments": ""}}
        raw = t.feed(_chunk({"role": "assistant", "content": "Let me check."}))
        raw += t.feed(_chunk({"tool_calls": [first]}))
        raw += t.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))
        raw += t.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}))
        second = {
            "index": 1,
            "id": "call_2",
            "type": "function",
            "function": {"name": "t", "arguments": "{}"},
        }
        raw += t.feed(_chunk({"tool_calls": [second]}))
        raw += t.feed(_chunk({}, "tool_calls"))
        raw += t.finish()
        events = _events(raw)
        starts = [e for name, e in events if name == "content_block_start"]
        assert [(e["index"], e["content_block"]["type"]) for e in starts] == [
            (0, "text"),
            (1, "tool_use"),
            (2, "tool_use"),
        ]
        assert starts[1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "w", "input": {}}
        json_deltas = [
            (e["index"], e["delta"]["partial_json"])
            for name, e in events
            if name == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
        ]
        assert json_deltas == [(1, '{"city":'), (1, '"Paris"}'), (2, "{}")]
        stops = [e["index"] for name, e in events if name == "content_block_stop"]
        assert stops == [0, 1, 2]
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
        assert events[-1][0] == "message_stop"

    def test_blocks_open_and_close_in_order(self):
        t = ChunksToEvents(MODEL)
        raw = t.feed(_chunk({"content": "a"})) + t.feed(
            _chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]})
        )
        raw += t.finish()
        names = [(name, e.get("index")) for name, e in _events(raw) if name.startswith("content_block")]
        assert names == [
            ("content_block_start", 0),
            ("content_block_delta", 0),
            ("content_block_stop", 0),
            ("content_block_start", 1),
            ("content_block_stop", 1),
        ]

    def test_length_finish_maps_to_max_tokens(self):
        t = ChunksToEvents(MODEL)
        raw = t.feed(_chunk({"content": "x"}, "length")) + t.finish()
        assert _events(raw)[-2][1]["delta"]["stop_reason"] == "max_tokens"

    def test_finish_without_chunks_is_a_whole_empty_message(self):
        names = [name for name, _ in _events(ChunksToEvents(MODEL).finish())]
        assert names == ["message_start", "message_delta", "message_stop"]

    def test_finish_twice_sends_nothing_more(self):
        t = ChunksToEvents(MODEL)
        t.finish()
        assert t.finish() == b""

    def test_empty_role_chunk_only_starts_the_message(self):
        assert [name for name, _ in _events(ChunksToEvents(MODEL).feed(_chunk({"role": "assistant"})))] == [
            "message_start"
        ]


class TestErrors:
    @pytest.mark.parametrize(
        "status, kind",
        [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (529, "overloaded_error"),
        ],
    )
    def test_error_type_by_status(self, status, kind):
        assert error_type(status) == kind

    def test_error_json(self):
        assert ujson.loads(error_json("Nope", 401)) == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "Nope"},
        }

    def test_error_json_explicit_type(self):
        assert ujson.loads(error_json("Busy", 503, "overloaded_error"))["error"]["type"] == "overloaded_error"

    def test_error_event(self):
        [(name, event)] = _events(error_event("Upstream failed", 502))
        assert name == "error"
        assert event == {"type": "error", "error": {"type": "api_error", "message": "Upstream failed"}}
