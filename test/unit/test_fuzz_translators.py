"""Fuzz: random upstream answers and event streams against every translator, provider side and client side.

An upstream's bytes may be anything. Each translation must give its result or a ``ProviderError`` (the
attempt failed; routing decides what next), and a relayed stream must end with its end marker or an
error event, never with an exception of another kind.
"""

from __future__ import annotations

import json
import os
from types import MappingProxyType

import pytest
from fakes import FakeClient, FakeStream
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import json_values

from gateway.anthropic_messages import ChunksToEvents, chat_to_message, error_event, messages_to_chat
from gateway.config.schema import ProviderConfig, TimeoutsConfig
from gateway.errors import GatewayError
from gateway.relay import EventStream, RawStream, SSEStream
from providers.anthropic import AnthropicProvider
from providers.base import Attempt, ChatRequest, ProviderError
from providers.credentials import Credential
from providers.openai import OpenAIProvider, openai_error
from providers.sse import SSEDecoder

EXAMPLES = 400 * (10 if os.environ.get("BUDGATEWAY_FUZZ") == "explore" else 1)

_json_bytes = json_values.map(lambda v: json.dumps(v).encode())
#: Event payloads: JSON of any shape, near-chunks with fields of the wrong types, or raw bytes.
_chunk_like = st.fixed_dictionaries(
    {}, optional={"id": json_values, "model": json_values, "choices": json_values | st.lists(
        st.fixed_dictionaries({}, optional={"index": json_values, "delta": json_values,
                                            "finish_reason": json_values, "message": json_values}), max_size=2),
        "usage": json_values, "type": st.sampled_from(["message_start", "content_block_start", "content_block_delta",
                                                        "message_delta", "message_stop", "error", "ping"]),
        "message": json_values, "delta": json_values, "index": json_values, "content_block": json_values,
        "error": json_values},
).map(lambda v: json.dumps(v).encode())
payloads = st.one_of(_chunk_like, _json_bytes, st.binary(max_size=60), st.just(b"[DONE]"))


def _framed(events: list[bytes], names: list[str | None]) -> bytes:
    out = b""
    for data, name in zip(events, names, strict=False):
        out += (b"event: " + name.encode() + b"\n" if name else b"") + b"data: " + data + b"\n\n"
    return out


_event_names = st.lists(st.none() | st.sampled_from(["message_start", "content_block_delta", "message_stop",
                                                      "error", "ping"]), min_size=8, max_size=8)
#: A whole event stream: framed events (maybe cut anywhere), or bytes of no form at all.
streams = st.one_of(
    st.tuples(st.lists(payloads, max_size=8), _event_names, st.integers(1, 40)).map(
        lambda t: _split(_framed(t[0], t[1]), t[2])),
    st.lists(st.binary(max_size=80), max_size=5),
)


def _split(raw: bytes, size: int) -> list[bytes]:
    return [raw[i:i + size] for i in range(0, len(raw), size)]


def _config(type_: str, **options) -> ProviderConfig:
    return ProviderConfig(name="p", type=type_, model_name="up", api_base="http://up.invalid/v1",
                          api_key_location="none", timeouts=TimeoutsConfig(), extra_headers=MappingProxyType({}),
                          extra_body=MappingProxyType({}), options=MappingProxyType(options))


PROVIDERS = {
    "openai": OpenAIProvider(_config("openai"), Credential("none", {})),
    "anthropic": AnthropicProvider(_config("anthropic"), Credential("none", {})),
}
REQUEST = ChatRequest({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}, "m")


def _drain(chunks) -> list[bytes]:
    try:
        return list(chunks)
    except ProviderError:
        return []


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
@settings(max_examples=EXAMPLES)
@given(status=st.sampled_from([200, 200, 200, 400, 429, 500, 529]), body=st.one_of(_chunk_like, _json_bytes,
                                                                                    st.binary(max_size=80)))
def test_any_whole_answer_is_a_result_or_a_provider_error(kind, status, body):
    provider = PROVIDERS[kind]
    request = ChatRequest({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "m")
    try:
        result = provider.chat(FakeClient(status, body), request, Attempt("m", "p"))
    except ProviderError:
        return
    json.dumps(result.body)


@pytest.mark.parametrize("kind", sorted(PROVIDERS))
@settings(max_examples=EXAMPLES)
@given(pieces=streams, status=st.sampled_from([200, 200, 200, 500]))
def test_any_event_stream_yields_chunks_or_a_provider_error(kind, pieces, status):
    stream = FakeStream(pieces, status)
    try:
        chunks = PROVIDERS[kind].chat_stream(FakeClient(stream=stream), REQUEST, Attempt("m", "p"))
        for chunk in chunks:
            assert isinstance(chunk, bytes)
    except ProviderError:
        pass
    assert stream.closed, "the upstream must be settled whatever it sent"


@settings(max_examples=EXAMPLES)
@given(status=st.integers(400, 599), body=st.binary(max_size=100) | _json_bytes)
def test_any_error_answer_maps_to_a_provider_http_error(status, body):
    error = openai_error(status, body)
    assert error.status == status and isinstance(str(error), str)


@settings(max_examples=EXAMPLES)
@given(pieces=st.lists(st.binary(max_size=100), max_size=8), limit=st.integers(1, 200))
def test_the_sse_decoder_yields_events_or_a_provider_error(pieces, limit):
    decoder = SSEDecoder(limit)
    try:
        for piece in pieces:
            for _name, data in decoder.feed(piece):
                assert isinstance(data, bytes) and len(data) <= limit
    except ProviderError:
        pass


@settings(max_examples=EXAMPLES)
@given(body=st.fixed_dictionaries({"messages": json_values | st.lists(json_values, max_size=3)},
                                  optional={"tools": json_values, "tool_choice": json_values, "stop": json_values,
                                            "max_tokens": json_values, "user": json_values}))
def test_any_chat_request_becomes_a_messages_request_or_a_400(body):
    client = FakeClient(200, json.dumps({"content": [{"type": "text", "text": "hi"}]}).encode())
    try:
        PROVIDERS["anthropic"].chat(client, ChatRequest(body, "m"), Attempt("m", "p"))
    except ProviderError as e:
        assert e.status == 400
        return
    json.dumps(client.sent[-1][1])


@settings(max_examples=EXAMPLES)
@given(body=json_values | st.fixed_dictionaries(
    {"messages": json_values | st.lists(json_values, max_size=3), "max_tokens": json_values},
    optional={"system": json_values, "tools": json_values, "tool_choice": json_values, "stop_sequences": json_values,
              "metadata": json_values, "stream": json_values}))
def test_any_messages_request_becomes_a_chat_request_or_a_client_error(body):
    try:
        json.dumps(messages_to_chat(body))
    except GatewayError as e:
        assert 400 <= e.status < 500


@settings(max_examples=EXAMPLES)
@given(completion=json_values | _chunk_like.map(json.loads))
def test_any_chat_answer_becomes_a_message_or_a_502(completion):
    if not isinstance(completion, dict):
        return  # json_object() only hands objects on
    try:
        json.dumps(chat_to_message(completion, "alias"))
    except GatewayError as e:
        assert e.status == 502


def _relayed(body) -> bytes:
    out = b"".join(body)
    body.close()
    return out


@settings(max_examples=EXAMPLES)
@given(first=payloads, rest=st.lists(payloads, max_size=6))
def test_a_relayed_openai_stream_ends_with_done_or_an_error_event(first, rest):
    out = _relayed(SSEStream(first, (p for p in rest), "alias", None, None, "m/p"))
    assert out.endswith(b"data: [DONE]\n\n")


@settings(max_examples=EXAMPLES)
@given(first=payloads, rest=st.lists(payloads, max_size=6))
def test_a_relayed_messages_stream_ends_with_message_stop_or_an_error_event(first, rest):
    out = _relayed(EventStream(first, (p for p in rest), ChunksToEvents("alias"), error_event, None, None, "m/p"))
    tail = out.rsplit(b"event: ", 1)[-1]
    assert tail.startswith(b"message_stop") or tail.startswith(b"error"), out[-200:]


@settings(max_examples=EXAMPLES // 2)
@given(first=st.binary(max_size=50), rest=st.lists(st.binary(max_size=50), max_size=4), sse=st.booleans())
def test_a_relayed_raw_stream_passes_its_bytes(first, rest, sse):
    content_type = "text/event-stream" if sse else "audio/mpeg"
    out = _relayed(RawStream(first, (p for p in rest), content_type, None, None, "m/p"))
    assert out == first + b"".join(rest)
