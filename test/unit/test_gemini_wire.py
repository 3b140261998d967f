"""The google_ai_studio_gemini provider: request, answer and SSE translation from fixture payloads, no
sockets."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import ujson
from fakes import FakeClient, FakeStream

from gateway.config.schema import ProviderConfig, TimeoutsConfig
from providers.base import (
    Attempt,
    ChatRequest,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderResponseError,
)
from providers.credentials import Credential, Secret
from providers.gemini import (
    GeminiProvider,
    gemini_error,
    stream_gemini,
    to_chat_completion,
    to_gemini_request,
)

MODEL = "gemini-test-1"
KEY = "AIza-unit-test"
BASE = "https://generativelanguage.googleapis.com/v1beta"
USER = {"role": "user", "content": "Hi"}
USAGE = {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
         "cachedContentTokenCount": 4, "totalTokenCount": 18}
#: ``USAGE`` as OpenAI counts it: thoughts are completion tokens, cached ones part of the prompt.
OPENAI_USAGE = {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 3}}
CALL = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}


def _provider(model_name: str = MODEL, location: str = "dynamic::gemini", **extra: object) -> GeminiProvider:
    config = ProviderConfig(
        name="gemini", type="google_ai_studio_gemini", model_name=model_name, api_base=None,
        api_key_location=location, timeouts=TimeoutsConfig(),
        extra_headers=MappingProxyType({"x-goog-user-project": "p1"}),
        extra_body=MappingProxyType(extra), options=MappingProxyType({}),
    )
    return GeminiProvider(config, Credential(location, {"gemini": Secret(KEY)}))


def _sse(events: list[dict | bytes]) -> bytes:
    """Events framed as Google sends them: one data line each, CRLF line ends."""
    data = [e if isinstance(e, bytes) else ujson.dumps(e).encode() for e in events]
    return b"".join(b"data: %s\r\n\r\n" % d for d in data)


def _pieces(raw: bytes, size: int = 7) -> list[bytes]:
    """Small reads, so events (and their CRLFs) arrive cut across reads as on a real socket."""
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def _chunks(events: list[dict | bytes], include_usage: bool = False) -> list[dict]:
    stream = stream_gemini(FakeStream(_pieces(_sse(events))), MODEL, include_usage)
    return [ujson.loads(p) for p in stream]


def _event(parts: list[dict] | None, finish: str | None = None, usage: dict | None = None,
           **candidate: object) -> dict:
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    if finish:
        candidate["finishReason"] = finish
    event = {"candidates": [candidate], "modelVersion": "gemini-test-1-002", "responseId": "r1"}
    if usage:
        event["usageMetadata"] = usage
    return event


def _call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _bad(body: dict) -> ProviderHTTPError:
    with pytest.raises(ProviderHTTPError) as info:
        to_gemini_request(body)
    assert info.value.status == 400 and not info.value.retryable
    return info.value


TEXT_STREAM = [
    _event([{"text": "thinking...", "thought": True}]),
    _event([{"text": "Hello"}], usage={"promptTokenCount": 10, "candidatesTokenCount": 1, "totalTokenCount": 11}),
    _event([{"text": " there"}], "STOP", USAGE),
]


class TestRequestTranslation:
    def test_roles_system_and_merged_turns(self):
        again = [{"type": "text", "text": "again"}, {"type": "text", "text": ""}]
        out = to_gemini_request({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
            USER, {"role": "user", "content": again},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "assistant", "content": "Hello"},
        ]})
        assert out == {
            "systemInstruction": {"parts": [{"text": "be brief\n\nbe kind"}]},
            "contents": [{"role": "user", "parts": [{"text": "Hi"}, {"text": "again"}]},
                         {"role": "model", "parts": [{"text": "Hello"}]}],
        }

    def test_no_generation_config_or_tools_unless_asked(self):
        assert to_gemini_request({"messages": [USER], "stream": True, "user": "u1"}) == {
            "contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}

    def test_sampling_options(self):
        body = {"messages": [USER], "temperature": 0, "top_p": 1, "n": 3, "seed": 0, "max_tokens": 9,
                "max_completion_tokens": 5, "stop": "x", "presence_penalty": -1, "frequency_penalty": 1}
        assert to_gemini_request(body)["generationConfig"] == {
            "temperature": 0, "topP": 1, "candidateCount": 3, "seed": 0, "maxOutputTokens": 9,
            "stopSequences": ["x"], "presencePenalty": -1, "frequencyPenalty": 1}

    def test_response_formats(self):
        def config(fmt):
            return to_gemini_request({"messages": [USER], "response_format": fmt}).get("generationConfig")

        schema = {"type": "object"}
        assert config({"type": "text"}) is None
        assert config({"type": "json_object"}) == {"responseMimeType": "application/json"}
        assert config({"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}) == {
            "responseMimeType": "application/json", "responseSchema": schema}
        assert _bad({"messages": [USER], "response_format": {"type": "grammar"}}).param == "response_format"

    def test_media_parts(self):
        content = [{"type": "image_url", "image_url": {"url": "data:image/webp;base64,AAAA"}},
                   {"type": "image_url", "image_url": "https://x.test/a.png?size=2"},
                   {"type": "image_url", "image_url": {"url": "https://x.test/image"}}]
        out = to_gemini_request({"messages": [{"role": "user", "content": content}]})
        assert out["contents"][0]["parts"] == [
            {"inlineData": {"mimeType": "image/webp", "data": "AAAA"}},
            {"fileData": {"mimeType": "image/png", "fileUri": "https://x.test/a.png?size=2"}},
            {"fileData": {"fileUri": "https://x.test/image"}}]

    @pytest.mark.parametrize(("content", "param"), [
        ([{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}], "messages[0].content[0].image_url"),
        ([{"type": "image_url", "image_url": {"url": "ftp://x.test/a.png"}}], "messages[0].content[0].image_url"),
        ([{"type": "input_video"}], "messages[0].content[0].type"),
        (42, "messages[0].content"),
    ], ids=["data-url-not-base64", "ftp-url", "unknown-part", "not-a-list"])
    def test_content_gemini_cannot_take_is_refused(self, content, param):
        assert _bad({"messages": [{"role": "user", "content": content}]}).param == param

    def test_unknown_role_is_refused(self):
        assert _bad({"messages": [{"role": "function", "content": "x"}]}).param == "messages[0].role"

    def test_tool_round_trip(self):
        signed = "call_b__thought__U0lH"
        calls = [_call("call_a", "get_weather", '{"city": "Paris"}'), _call(signed, "get_time", "")]
        out = to_gemini_request({"messages": [
            USER, {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 18}'},
            {"role": "tool", "tool_call_id": signed, "content": [{"type": "text", "text": "10:30"}]},
            {"role": "user", "content": "thanks"},
        ]})
        assert out["contents"][1:] == [
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": "U0lH"}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "10:30"}}},
                {"text": "thanks"}]},
        ]

    @pytest.mark.parametrize("content", ["[1, 2]", "{broken", "", None])
    def test_tool_content_that_is_no_json_object_goes_under_content(self, content):
        out = to_gemini_request({"messages": [USER, {"role": "assistant", "tool_calls": [_call("c", "f", "{}")]},
                                              {"role": "tool", "tool_call_id": "c", "content": content}]})
        response = {"name": "f", "response": {"content": content or ""}}
        assert out["contents"][-1]["parts"] == [{"functionResponse": response}]

    @pytest.mark.parametrize("arguments", ["{not json", "[1]"])
    def test_tool_arguments_must_be_a_json_object(self, arguments):
        error = _bad({"messages": [USER, {"role": "assistant", "tool_calls": [_call("c", "f", arguments)]}]})
        assert error.param == "messages[1].tool_calls[0].function.arguments"

    def test_tool_message_for_an_unknown_call_is_refused(self):
        error = _bad({"messages": [USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}]})
        assert error.param == "messages[1].tool_call_id"

    @pytest.mark.parametrize(("choice", "config"), [
        ("auto", {"mode": "AUTO"}), ("none", {"mode": "NONE"}), ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ])
    def test_tools_and_tool_choice(self, choice, config):
        f = {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {"x": {}}}}
        tools = [{"type": "function", "function": f}, {"type": "function", "function": {"name": "g"}}]
        out = to_gemini_request({"messages": [USER], "tools": tools, "tool_choice": choice})
        assert out["tools"] == [{"functionDeclarations": [f, {"name": "g"}]}]
        assert out["toolConfig"] == {"functionCallingConfig": config}

    def test_a_function_without_parameters_declares_none(self):
        tools = [{"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}]
        assert to_gemini_request({"messages": [USER], "tools": tools})["tools"] == [
            {"functionDeclarations": [{"name": "now"}]}]

    @pytest.mark.parametrize(("extra", "param"), [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "any"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function"}},
         "tool_choice"),
    ], ids=["not-a-function", "unknown-choice", "unnamed-choice"])
    def test_tools_gemini_cannot_take_are_refused(self, extra, param):
        assert _bad({"messages": [USER], **extra}).param == param


class TestAnswerTranslation:
    def test_text_answer_leaves_thoughts_out(self):
        parts = [{"text": "plan", "thought": True}, {"text": "Hello"}, {"text": " there"}]
        answer = {**_event(parts, "STOP", USAGE)}
        out = to_chat_completion(answer, MODEL)
        assert (out["id"], out["object"], out["model"]) == ("r1", "chat.completion", "gemini-test-1-002")
        assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there"},
                                   "logprobs": None, "finish_reason": "stop"}]
        assert out["usage"] == OPENAI_USAGE

    def test_function_calls_are_tool_calls_with_their_signature_in_the_id(self):
        parts = [{**CALL, "thoughtSignature": "U0lH"}, {"functionCall": {"name": "noop"}}]
        [choice] = to_chat_completion(_event(parts, "STOP"), MODEL)["choices"]
        first, second = choice["message"]["tool_calls"]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        assert first["id"].startswith("call_") and first["id"].endswith("__thought__U0lH")
        assert first["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
        assert second["id"].startswith("call_") and "__thought__" not in second["id"]
        assert second["function"] == {"name": "noop", "arguments": "{}"}
        # The id the client sends back carries the signature to Gemini again.
        out = to_gemini_request({"messages": [USER, {"role": "assistant", "tool_calls": [first]}]})
        assert out["contents"][1]["parts"][0]["thoughtSignature"] == "U0lH"

    def test_defaults_without_id_model_or_usage(self):
        out = to_chat_completion({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}, MODEL)
        assert out["id"].startswith("chatcmpl-") and out["model"] == MODEL
        assert out["usage"]["total_tokens"] == 0

    def test_candidates_are_choices(self):
        answer = {"candidates": [
            {"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
            {"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS", "index": 1}]}
        choices = to_chat_completion(answer, MODEL)["choices"]
        assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
            (0, "a", "stop"), (1, "b", "length")]

    @pytest.mark.parametrize(("reason", "finish"), [
        ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"), ("OTHER", "stop"), ("MALFORMED_FUNCTION_CALL", "stop"), (None, "stop"),
    ])
    def test_finish_reasons(self, reason, finish):
        candidate = {"finishReason": reason} if reason else {}
        assert to_chat_completion({"candidates": [candidate]}, MODEL)["choices"][0]["finish_reason"] == finish

    def test_blocked_prompt_is_an_empty_filtered_answer(self):
        out = to_chat_completion({"promptFeedback": {"blockReason": "SAFETY"},
                                  "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7}}, MODEL)
        message = {"role": "assistant", "content": ""}
        assert out["choices"] == [{"index": 0, "message": message, "logprobs": None,
                                   "finish_reason": "content_filter"}]
        assert out["usage"]["prompt_tokens"] == 7

    @pytest.mark.parametrize("answer", [{}, {"candidates": []}, {"promptFeedback": {}}])
    def test_answer_without_candidates_is_a_bad_response(self, answer):
        with pytest.raises(ProviderResponseError):
            to_chat_completion(answer, MODEL)

    @pytest.mark.parametrize("answer", [
        {"candidates": "none"}, {"candidates": [{"content": {"parts": [{"text": 5}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
    ], ids=["candidates-not-a-list", "text-not-a-string", "call-without-name"])
    def test_misshapen_answer_is_a_bad_response(self, answer):
        client = FakeClient(200, ujson.dumps(answer).encode())
        with pytest.raises(ProviderResponseError):
            _provider().chat(client, ChatRequest({"messages": [USER]}, "alias"), Attempt("alias", "gemini"))


class TestErrors:
    @pytest.mark.parametrize(("status", "name", "type_", "retryable"), [
        (400, "INVALID_ARGUMENT", "invalid_request_error", False),
        (400, "FAILED_PRECONDITION", "invalid_request_error", False),
        (403, "PERMISSION_DENIED", "permission_error", False),
        (404, "NOT_FOUND", "invalid_request_error", False),
        (429, "RESOURCE_EXHAUSTED", "rate_limit_error", True),
        (500, "INTERNAL", "server_error", True),
        (503, "UNAVAILABLE", "server_error", True),
        (504, "DEADLINE_EXCEEDED", "server_error", True),
        (401, None, "authentication_error", False),
    ])
    def test_google_statuses_map_to_openai(self, status, name, type_, retryable):
        error = {"code": status, "message": "why", **({"status": name} if name else {})}
        e = gemini_error(status, ujson.dumps({"error": error}).encode())
        assert (e.status, str(e), e.type, e.code, e.retryable) == (status, "why", type_, name, retryable)

    def test_an_error_in_a_json_array_is_read(self):
        raw = b'[{"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}]'
        e = gemini_error(429, raw)
        assert (str(e), e.type, e.rate_limited) == ("quota", "rate_limit_error", True)

    def test_invalid_key_is_401(self):
        info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
        body = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                          "details": [info]}}
        e = gemini_error(400, ujson.dumps(body).encode())
        assert (e.status, e.type, e.code, str(e)) == (
            401, "authentication_error", "INVALID_ARGUMENT", "API key not valid.")

    def test_non_json_error_body_is_kept_for_the_log_only(self):
        e = gemini_error(502, b"<html>bad gateway</html>")
        assert str(e) == "upstream answered HTTP 502 with a body that is not JSON"
        assert e.raw == b"<html>bad gateway</html>" and e.retryable


class TestStream:
    def test_text_stream(self):
        chunks = _chunks(TEXT_STREAM)
        assert [c["choices"][0]["delta"] for c in chunks] == [
            {"role": "assistant", "content": "Hello"}, {"content": " there"}, {}]
        assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
        assert {(c["id"], c["model"], c["object"]) for c in chunks} == {
            ("r1", "gemini-test-1-002", "chat.completion.chunk")}

    def test_usage_chunk_when_asked_from_the_last_usage(self):
        last = _chunks(TEXT_STREAM, include_usage=True)[-1]
        assert (last["choices"], last["usage"]) == ([], OPENAI_USAGE)

    def test_no_usage_chunk_unless_asked(self):
        assert all(c["choices"] for c in _chunks(TEXT_STREAM))

    def test_function_calls_stream_whole_with_their_index(self):
        calls = [CALL, {"functionCall": {"name": "get_time", "args": {}}}]
        chunks = _chunks([_event([{"text": "Checking."}]), _event(calls, "STOP")])
        calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls", ())]
        assert [(c["index"], c["type"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
            (0, "function", "get_weather", '{"city":"Paris"}'), (1, "function", "get_time", "{}")]
        assert all(c["id"].startswith("call_") for c in calls)
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    def test_candidates_stream_as_choices(self):
        event = {"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "STOP"},
                                {"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "index": 1}]}
        chunks = _chunks([event])
        assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks] == [
            (0, {"role": "assistant", "content": "a"}), (0, {}),
            (1, {"role": "assistant", "content": "b"}), (1, {})]

    def test_blocked_prompt_finishes_with_content_filter(self):
        event = {"promptFeedback": {"blockReason": "OTHER"}, "usageMetadata": {"promptTokenCount": 3}}
        chunks = _chunks([event], include_usage=True)
        assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                         "finish_reason": "content_filter"}]
        assert chunks[1]["usage"]["prompt_tokens"] == 3

    def test_error_event_before_content_raises_retryable(self):
        error = {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
        with pytest.raises(ProviderHTTPError) as info:
            next(stream_gemini(FakeStream(_pieces(_sse([error]))), MODEL))
        assert (info.value.status, info.value.retryable, info.value.code) == (503, True, "UNAVAILABLE")

    def test_error_event_mid_stream_raises(self):
        stream = stream_gemini(FakeStream([_sse([TEXT_STREAM[1], {"error": {"message": "?"}}])]), MODEL)
        assert ujson.loads(next(stream))["choices"][0]["delta"]["content"] == "Hello"
        with pytest.raises(ProviderHTTPError) as info:
            next(stream)
        assert info.value.status == 500

    def test_end_without_finish_reason_is_a_connection_error(self):
        with pytest.raises(ProviderConnectionError):
            _chunks(TEXT_STREAM[:2])

    @pytest.mark.parametrize("event", [b"{not json", b"[1]", b'{"candidates": "none"}'])
    def test_misshapen_event_is_a_bad_response(self, event):
        with pytest.raises(ProviderResponseError):
            _chunks([event])

    def test_error_status_raises_the_mapped_error_and_closes(self):
        body = b'{"error": {"code": 404, "message": "no such model", "status": "NOT_FOUND"}}'
        upstream = FakeStream([body], 404)
        with pytest.raises(ProviderHTTPError) as info:
            list(stream_gemini(upstream, MODEL))
        assert (info.value.status, str(info.value)) == (404, "no such model")
        assert upstream.closed

    def test_closing_early_closes_upstream(self):
        upstream = FakeStream(_pieces(_sse(TEXT_STREAM)))
        stream = stream_gemini(upstream, MODEL)
        next(stream)
        stream.close()
        assert upstream.closed


class TestProvider:
    def test_type_defaults(self):
        assert GeminiProvider.type == "google_ai_studio_gemini"
        assert GeminiProvider.default_api_key_location == "env::GOOGLE_AI_STUDIO_API_KEY"
        assert GeminiProvider.capabilities == frozenset({"chat"})
        assert not GeminiProvider.requires_api_base

    def test_chat_sends_the_key_in_a_header_and_merges_extra_body(self):
        client = FakeClient(200, ujson.dumps(_event([{"text": "Hi"}], "STOP")).encode())
        provider = _provider(generationConfig={"thinkingConfig": {"thinkingBudget": 0}}, safetySettings=[])
        body = {"model": "alias", "messages": [USER], "temperature": 0.2, "stream": False}
        result = provider.chat(client, ChatRequest(body, "alias"), Attempt("alias", "gemini"))
        assert result.body["choices"][0]["message"]["content"] == "Hi"
        [(url, sent, headers)] = client.sent
        assert url == f"{BASE}/models/{MODEL}:generateContent"
        assert (headers["x-goog-api-key"], headers["content-type"], headers["x-goog-user-project"]) == (
            KEY, "application/json", "p1")
        assert sent == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}], "safetySettings": [],
                        "generationConfig": {"temperature": 0.2, "thinkingConfig": {"thinkingBudget": 0}}}

    def test_stream_url_asks_for_sse_and_a_resource_name_is_kept(self):
        client = FakeClient(stream=FakeStream([_sse(TEXT_STREAM)]))
        request = ChatRequest({"messages": [USER], "stream": True}, "a")
        chunks = list(_provider("tunedModels/my-model").chat_stream(client, request, Attempt("a", "g")))
        assert client.sent[0][0] == f"{BASE}/tunedModels/my-model:streamGenerateContent?alt=sse"
        assert ujson.loads(chunks[-1])["usage"]["total_tokens"] == 18  # usage is always asked for

    def test_a_model_name_that_is_no_resource_name_is_quoted_whole(self):
        client = FakeClient(200, b'{"candidates": [{"finishReason": "STOP"}]}')
        _provider("../../upload/x").chat(client, ChatRequest({"messages": [USER]}, "a"), Attempt("a", "g"))
        assert client.sent[0][0] == f"{BASE}/models/..%2F..%2Fupload%2Fx:generateContent"

    def test_no_key_header_without_a_key(self):
        client = FakeClient(200, b'{"candidates": [{"finishReason": "STOP"}]}')
        _provider(location="none").chat(client, ChatRequest({"messages": [USER]}, "a"), Attempt("a", "g"))
        assert "x-goog-api-key" not in client.sent[0][2]

    def test_error_answer_raises(self):
        client = FakeClient(503, b'{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}')
        with pytest.raises(ProviderHTTPError) as info:
            _provider().chat(client, ChatRequest({"messages": [USER]}, "a"), Attempt("a", "g"))
        assert info.value.retryable

    def test_request_of_an_odd_shape_is_the_clients_error(self):
        tool = {"role": "tool", "tool_call_id": ["x"], "content": "y"}
        with pytest.raises(ProviderHTTPError) as info:
            _provider().chat(FakeClient(), ChatRequest({"messages": [USER, tool]}, "a"), Attempt("a", "g"))
        assert (info.value.status, str(info.value)) == (
            400, "the request cannot be expressed for Gemini (TypeError)")
