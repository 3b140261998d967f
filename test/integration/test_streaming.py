"""Streamed chat completions: event order and timing, usage, headers, mid-stream failures, disconnects."""

from __future__ import annotations

import json
import time

import openai
import pytest
from configs import model_toml, openai_provider
from upstream import CONTENT, USAGE

MESSAGES = [{"role": "user", "content": "hi"}]
# stream-delay-300-4 spaces its 4 content events 300 ms apart: ~1.2 s from first to last event. A gateway that
# buffered the stream would deliver them together; one that forwards them keeps most of the spread.
SPACED_MODEL, SPACED_EVENTS = "stream-delay-300-4", 4
MIN_FORWARDED_SPREAD_S = 0.6
# A 10 s stream (50 events, 200 ms apart) that the client abandons after a few events.
LONG_MODEL = "stream-delay-200-50"
# Bound from the client closing its connection to the upstream seeing its own connection closed.
UPSTREAM_CLOSE_BOUND_S = 2.0
UPSTREAM_CLOSE_WAIT_S = 8.0
# Upstream model names that fail after their first events: a reset, a clean end without [DONE], and a
# stream (10 events, 300 ms apart) that outlasts the provider's streaming total_ms.
MID_STREAM_FAILURES = {"reset": "reset-mid-stream-3", "close": "close-mid-stream-3",
                       "total-timeout": "stream-delay-300-10"}
STREAM_TOTAL_MS = {"total-timeout": 1000}


def _provider(model_name: str, api_base: str, total_ms: int = 20000) -> dict[str, object]:
    timeouts = {"non_streaming": {"total_ms": 5000}, "streaming": {"ttft_ms": 5000, "total_ms": total_ms}}
    return openai_provider(model_name, api_base, timeouts=timeouts)


def _models(api_base: str) -> str:
    text = ""
    for model, model_name in (("gpt", "ok"), ("spaced", SPACED_MODEL), ("long", LONG_MODEL)):
        text += model_toml(model, {"primary": _provider(model_name, api_base)})
    for kind, model_name in MID_STREAM_FAILURES.items():
        primary = _provider(model_name, api_base, STREAM_TOTAL_MS.get(kind, 20000))
        text += model_toml(f"mid-{kind}", {"primary": primary, "backup": _provider("ok", api_base)})
    return text


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, upstream_client):
    return module_gateway_factory(_models(upstream.url), settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


def _stream(client, model: str = "gpt", **kwargs):
    return client.chat.completions.create(model=model, messages=MESSAGES, stream=True, **kwargs)


class TestStreamedCompletion:
    def test_chunks_arrive_in_order_and_join_to_the_answer(self, client):
        chunks = list(_stream(client))
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == CONTENT
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)

    def test_every_chunk_carries_the_requested_model(self, client):
        assert {c.model for c in _stream(client)} == {"gpt"}

    def test_usage_chunk_comes_last_when_include_usage_is_asked(self, client):
        chunks = list(_stream(client, stream_options={"include_usage": True}))
        assert chunks[-1].choices == []
        usage = chunks[-1].usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
            USAGE["prompt_tokens"], USAGE["completion_tokens"], USAGE["total_tokens"])

    def test_no_usage_chunk_unless_asked(self, client):
        chunks = list(_stream(client))
        assert all(c.choices and c.usage is None for c in chunks)

    def test_stream_fields_reach_upstream_unchanged(self, client, upstream):
        list(_stream(client, stream_options={"include_usage": True}))
        [rec] = upstream.requests
        assert rec.body == {"model": "ok", "messages": MESSAGES, "stream": True,
                            "stream_options": {"include_usage": True}}

    def test_events_are_forwarded_as_they_arrive(self, client):
        arrivals = []
        for chunk in _stream(client, "spaced"):
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
        assert len(arrivals) == SPACED_EVENTS
        assert arrivals[-1] - arrivals[0] >= MIN_FORWARDED_SPREAD_S

    def test_raw_stream_ends_with_done(self, gw):
        body = {"model": "gpt", "messages": MESSAGES, "stream": True}
        resp = gw.request("POST", "/v1/chat/completions", body)
        assert resp.status == 200
        events = resp.sse_data()
        assert events[-1] == "[DONE]"
        assert events.count("[DONE]") == 1
        assert resp.body.endswith(b"\n\n")


class TestStreamHeaders:
    def test_content_type_is_event_stream(self, client):
        raw = client.chat.completions.with_raw_response.create(model="gpt", messages=MESSAGES, stream=True)
        list(raw.parse())
        assert raw.headers["content-type"].startswith("text/event-stream")

    def test_inference_headers_are_sent_on_streams(self, client):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt", messages=MESSAGES, stream=True, extra_headers={"x-request-id": "stream-req-7"})
        list(raw.parse())
        assert raw.headers["x-request-id"] == "stream-req-7"
        assert raw.headers["x-budgateway-provider"] == "gpt/primary"
        assert raw.headers["x-budgateway-attempts"] == "1"


class TestMidStreamFailure:
    @pytest.mark.parametrize("kind", MID_STREAM_FAILURES)
    def test_sdk_raises_api_error_after_the_partial_stream(self, client, kind):
        received = []
        with pytest.raises(openai.APIError) as exc_info:
            for chunk in _stream(client, f"mid-{kind}"):
                received.append(chunk)
        # The SDK raises a plain APIError for an in-band error event; a dropped connection would be an
        # APIConnectionError instead, and an HTTP error status an APIStatusError.
        assert type(exc_info.value) is openai.APIError, repr(exc_info.value)
        assert exc_info.value.body["type"] == "server_error"
        assert received, "the events sent before the failure should have reached the client"

    @pytest.mark.parametrize("kind", MID_STREAM_FAILURES)
    def test_raw_stream_ends_with_an_error_event_and_no_done(self, gw, kind):
        resp = gw.request("POST", "/v1/chat/completions",
                          {"model": f"mid-{kind}", "messages": MESSAGES, "stream": True})
        assert resp.status == 200
        events = resp.sse_data()
        assert "[DONE]" not in events
        error = json.loads(events[-1])["error"]
        assert error["type"] == "server_error"
        assert isinstance(error["message"], str) and error["message"]
        assert all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])

    @pytest.mark.parametrize("kind", MID_STREAM_FAILURES)
    def test_no_fallback_after_the_first_event(self, client, upstream, kind):
        with pytest.raises(openai.APIError):
            list(_stream(client, f"mid-{kind}"))
        assert [r.model for r in upstream.requests] == [MID_STREAM_FAILURES[kind]]


class TestClientDisconnect:
    def test_client_disconnect_mid_stream_closes_the_upstream_connection_promptly(self, client, upstream):
        stream = _stream(client, "long")
        for _ in range(3):
            next(stream)
        closed_at = time.monotonic()
        stream.close()
        assert upstream.wait_for(lambda: upstream.requests_for(LONG_MODEL)[0].aborted_at is not None,
                                 UPSTREAM_CLOSE_WAIT_S), "the gateway kept the upstream stream open"
        [rec] = upstream.requests_for(LONG_MODEL)
        assert rec.aborted_at - closed_at < UPSTREAM_CLOSE_BOUND_S
