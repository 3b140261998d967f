"""The JSON endpoints beyond chat, through the official SDK: completions, embeddings, moderations, speech,
image generation, the Responses API, and the model list with its capabilities."""

from __future__ import annotations

import base64
import http.client
import json
import struct

import openai
import pytest
from configs import dummy_provider, model_toml, openai_provider
from conftest import CLIENT_TIMEOUT_S
from media import png_bytes
from upstream import (
    CONTENT,
    EMBEDDING_DIMENSIONS,
    FLAGGED_WORD,
    USAGE,
    embedding_vector,
    responses_events,
    speech_bytes,
)

#: How long a test waits for the first piece of a gated answer: the upstream holds back the rest until
#: the test releases it, so only a gateway that relays pieces as they arrive delivers one in time.
GATED_READ_TIMEOUT_S = 5.0

JSON_CAPABILITIES = ["completions", "embedding", "moderation", "text_to_speech", "image_generation",
                     "responses"]
ALL_CAPABILITIES = ["chat", *JSON_CAPABILITIES, "audio_transcription", "audio_translation", "image_edit",
                    "image_variation"]


def _models(api_base: str) -> str:
    return "".join([
        model_toml("omni", {"primary": openai_provider("ok", api_base)}, endpoints=ALL_CAPABILITIES),
        model_toml("gated", {"p": openai_provider("gated", api_base)}, endpoints=ALL_CAPABILITIES),
        model_toml("refusing", {"p": openai_provider("status-400", api_base)}, endpoints=ALL_CAPABILITIES),
        model_toml("broken", {"p": openai_provider("status-500", api_base)}, endpoints=JSON_CAPABILITIES),
        model_toml("chat-only", {"p": openai_provider("ok", api_base)}),
        model_toml("flaky", {"failing": openai_provider("status-503", api_base),
                             "backup": openai_provider("ok", api_base)}, endpoints=JSON_CAPABILITIES),
        model_toml("dummy", {"d": dummy_provider("hello")}, endpoints=["chat", "completions", "embedding"]),
    ])


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, upstream_client):
    return module_gateway_factory(_models(upstream.url), settings={"upstream_client": upstream_client})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


# Each JSON endpoint called as its users call it, for tests that hold for all of them.
CALLS = {
    "completions": lambda c, model: c.completions.create(model=model, prompt="Say hi"),
    "embedding": lambda c, model: c.embeddings.create(model=model, input="hello", encoding_format="float"),
    "moderation": lambda c, model: c.moderations.create(model=model, input="hello"),
    "text_to_speech": lambda c, model: c.audio.speech.create(model=model, input="hello", voice="alloy"),
    "image_generation": lambda c, model: c.images.generate(model=model, prompt="a red square"),
    "responses": lambda c, model: c.responses.create(model=model, input="hello"),
}
RAW_CALLS = {
    "completions": lambda c, model: c.completions.with_raw_response.create(model=model, prompt="Say hi"),
    "embedding": lambda c, model: c.embeddings.with_raw_response.create(model=model, input="hello"),
    "moderation": lambda c, model: c.moderations.with_raw_response.create(model=model, input="hello"),
    "text_to_speech": lambda c, model: c.audio.speech.with_raw_response.create(model=model, input="hello",
                                                                               voice="alloy"),
    "image_generation": lambda c, model: c.images.with_raw_response.generate(model=model, prompt="a square"),
    "responses": lambda c, model: c.responses.with_raw_response.create(model=model, input="hello"),
}
UPSTREAM_PATHS = {
    "completions": "/v1/completions",
    "embedding": "/v1/embeddings",
    "moderation": "/v1/moderations",
    "text_to_speech": "/v1/audio/speech",
    "image_generation": "/v1/images/generations",
    "responses": "/v1/responses",
}


class TestCompletions:
    def test_returns_the_upstream_text(self, client):
        resp = client.completions.create(model="omni", prompt="Say hi", max_tokens=5)
        assert resp.object == "text_completion"
        assert [c.text for c in resp.choices] == [CONTENT]
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage.total_tokens == USAGE["total_tokens"]
        assert resp.model == "omni"

    def test_upstream_receives_the_prompt_and_the_providers_model_name(self, client, upstream):
        client.completions.create(model="omni", prompt=["Say hi", "Say bye"], max_tokens=5, temperature=0.5)
        [rec] = upstream.requests
        assert rec.path == "/v1/completions"
        assert rec.body == {"model": "ok", "prompt": ["Say hi", "Say bye"], "max_tokens": 5,
                            "temperature": 0.5}

    def test_stream_arrives_word_by_word_and_ends_with_stop(self, client):
        chunks = list(client.completions.create(model="omni", prompt="Say hi", stream=True))
        texts = [c.choices[0].text for c in chunks if c.choices]
        assert "".join(texts) == CONTENT
        assert len([t for t in texts if t]) == len(CONTENT.split())
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert {c.model for c in chunks} == {"omni"}

    def test_stream_ends_with_a_usage_chunk_when_asked(self, client):
        chunks = list(client.completions.create(model="omni", prompt="Say hi", stream=True,
                                                stream_options={"include_usage": True}))
        assert chunks[-1].choices == []
        assert chunks[-1].usage.total_tokens == USAGE["total_tokens"]


class TestEmbeddings:
    def test_float_vector_for_one_string(self, client, upstream):
        resp = client.embeddings.create(model="omni", input="hello", encoding_format="float")
        assert [d.embedding for d in resp.data] == [embedding_vector(0)]
        assert resp.model == "omni"
        [rec] = upstream.requests
        assert rec.body == {"model": "ok", "input": "hello", "encoding_format": "float"}

    def test_sdk_default_asks_for_base64_and_decodes_it_to_the_same_vector(self, client, upstream):
        resp = client.embeddings.create(model="omni", input=["one", "two"])
        assert [d.embedding for d in resp.data] == [embedding_vector(0), embedding_vector(1)]
        [rec] = upstream.requests
        assert rec.body["encoding_format"] == "base64"

    def test_explicit_base64_arrives_as_packed_little_endian_float32(self, client):
        resp = client.embeddings.create(model="omni", input="hello", encoding_format="base64")
        encoded = resp.data[0].embedding
        assert isinstance(encoded, str)
        unpacked = struct.unpack(f"<{EMBEDDING_DIMENSIONS}f", base64.b64decode(encoded))
        assert list(unpacked) == embedding_vector(0)

    def test_list_of_strings_gives_one_vector_each_in_order(self, client):
        resp = client.embeddings.create(model="omni", input=["a", "b", "c"], encoding_format="float")
        assert [d.index for d in resp.data] == [0, 1, 2]
        assert [d.embedding for d in resp.data] == [embedding_vector(i) for i in range(3)]

    @pytest.mark.parametrize(("tokens", "count"), [([101, 2023, 102], 1), ([[101, 102], [2023]], 2)],
                             ids=["token-list", "list-of-token-lists"])
    def test_token_inputs_pass_through_unchanged(self, client, upstream, tokens, count):
        resp = client.embeddings.create(model="omni", input=tokens, encoding_format="float")
        assert len(resp.data) == count
        [rec] = upstream.requests
        assert rec.body["input"] == tokens

    def test_dimensions_pass_through(self, client, upstream):
        resp = client.embeddings.create(model="omni", input="hello", dimensions=2, encoding_format="float")
        assert resp.data[0].embedding == embedding_vector(0, 2)
        assert upstream.requests[0].body["dimensions"] == 2


class TestModerations:
    def test_flags_only_the_input_the_upstream_flags(self, client):
        resp = client.moderations.create(model="omni", input=["a kind word", f"a {FLAGGED_WORD} word"])
        assert [r.flagged for r in resp.results] == [False, True]
        assert resp.results[1].categories.violence is True
        assert resp.results[1].category_scores.violence > 0.5
        assert resp.model == "omni"

    def test_upstream_receives_the_input(self, client, upstream):
        client.moderations.create(model="omni", input="hello there")
        [rec] = upstream.requests
        assert (rec.path, rec.body) == ("/v1/moderations", {"model": "ok", "input": "hello there"})


class TestSpeech:
    @pytest.mark.parametrize(("fmt", "content_type"), [(None, "audio/mpeg"), ("wav", "audio/wav")])
    def test_audio_bytes_and_content_type_arrive_intact(self, client, fmt, content_type):
        extra = {} if fmt is None else {"response_format": fmt}
        with client.audio.speech.with_streaming_response.create(
                model="omni", input="Read this aloud", voice="alloy", **extra) as resp:
            assert resp.headers["content-type"] == content_type
            audio = b"".join(resp.iter_bytes())
        assert audio == speech_bytes("Read this aloud", fmt or "mp3")

    def test_upstream_receives_input_voice_and_format(self, client, upstream):
        client.audio.speech.create(model="omni", input="Read this", voice="nova", response_format="wav",
                                   speed=1.5)
        [rec] = upstream.requests
        assert rec.body == {"model": "ok", "input": "Read this", "voice": "nova", "response_format": "wav",
                            "speed": 1.5}

    def test_audio_is_relayed_as_it_arrives(self, client, upstream):
        with client.audio.speech.with_streaming_response.create(
                model="gated", input="Read this aloud", voice="alloy", timeout=GATED_READ_TIMEOUT_S) as resp:
            pieces = resp.iter_bytes()
            first = next(pieces)  # the upstream holds back the rest until release()
            upstream.release()
            audio = first + b"".join(pieces)
        assert audio == speech_bytes("Read this aloud")


class TestImageGeneration:
    def test_urls_come_back_one_per_image(self, client, upstream):
        resp = client.images.generate(model="omni", prompt="a red square", n=2, size="256x256")
        assert [d.url for d in resp.data] == ["https://images.upstream.test/0.png",
                                              "https://images.upstream.test/1.png"]
        [rec] = upstream.requests
        assert rec.body == {"model": "ok", "prompt": "a red square", "n": 2, "size": "256x256"}

    def test_b64_json_decodes_to_the_upstream_png(self, client):
        resp = client.images.generate(model="omni", prompt="a red square", response_format="b64_json")
        assert base64.b64decode(resp.data[0].b64_json) == png_bytes()
        assert resp.data[0].revised_prompt == "a red square"


class TestResponses:
    def test_plain_response_holds_the_output_text(self, client):
        resp = client.responses.create(model="omni", input="hello")
        assert resp.status == "completed"
        assert resp.output_text == CONTENT
        assert resp.model == "omni"
        assert resp.usage.total_tokens == 10

    def test_upstream_receives_the_request(self, client, upstream):
        client.responses.create(model="omni", input=[{"role": "user", "content": "hello"}],
                                instructions="be brief")
        [rec] = upstream.requests
        assert rec.path == "/v1/responses"
        assert rec.body == {"model": "ok", "input": [{"role": "user", "content": "hello"}],
                            "instructions": "be brief"}

    def test_streamed_events_arrive_in_order(self, client):
        events = list(client.responses.create(model="omni", input="hello", stream=True))
        assert [e.type for e in events] == [name for name, _ in responses_events("ok")]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == CONTENT
        assert events[-1].response.output_text == CONTENT

    def test_streamed_events_are_relayed_as_they_arrive(self, client, upstream):
        stream = client.responses.create(model="gated", input="hello", stream=True,
                                         timeout=GATED_READ_TIMEOUT_S)
        seen = []
        for event in stream:  # the upstream holds back everything after the first delta until release()
            seen.append(event.type)
            if event.type == "response.output_text.delta":
                break
        upstream.release()
        seen += [e.type for e in stream]
        assert seen == [name for name, _ in responses_events("gated")]


class TestRequestFraming:
    def test_json_body_sent_with_chunked_transfer_coding_is_served(self, gw):
        body = json.dumps({"model": "omni", "input": "hello", "encoding_format": "float"}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=CLIENT_TIMEOUT_S)
        try:
            # No Content-Length: the body goes in chunks (RFC 9112, section 7.1).
            pieces = (body[i:i + 8] for i in range(0, len(body), 8))
            conn.request("POST", "/v1/embeddings", pieces, {"Content-Type": "application/json"},
                         encode_chunked=True)
            resp = conn.getresponse()
            status, answer = resp.status, resp.read()
        finally:
            conn.close()
        assert status == 200, answer
        assert json.loads(answer)["data"][0]["embedding"] == embedding_vector(0)


class TestRawEventStreams:
    def test_responses_stream_keeps_the_event_names_of_each_event(self, gw):
        resp = gw.request("POST", "/v1/responses", {"model": "omni", "input": "hello", "stream": True})
        assert resp.status == 200, resp
        assert resp.headers["content-type"].startswith("text/event-stream")
        blocks = [b for b in resp.body.decode().split("\n\n") if b.strip()]
        pairs = []
        for block in blocks:
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            pairs.append((lines["event"], json.loads(lines["data"])["type"]))
        assert pairs == [(name, name) for name, _ in responses_events("ok")]

    def test_completions_stream_ends_with_done(self, gw):
        resp = gw.request("POST", "/v1/completions", {"model": "omni", "prompt": "hi", "stream": True})
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.sse_data()[-1] == "[DONE]"


class TestInferenceHeaders:
    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_answer_names_the_provider_and_the_attempts(self, client, capability):
        raw = RAW_CALLS[capability](client, "omni")
        assert raw.headers["x-budgateway-provider"] == "omni/primary"
        assert raw.headers["x-budgateway-attempts"] == "1"
        assert raw.headers["x-request-id"]

    def test_streamed_speech_names_the_provider(self, client):
        speech = client.audio.speech.with_streaming_response
        with speech.create(model="omni", input="hi", voice="alloy") as resp:
            assert resp.headers["x-budgateway-provider"] == "omni/primary"
            assert resp.headers["x-budgateway-attempts"] == "1"
            assert resp.headers["x-request-id"]

    def test_streamed_response_names_the_provider(self, client):
        with client.responses.with_streaming_response.create(model="omni", input="hi", stream=True) as resp:
            assert resp.headers["x-budgateway-provider"] == "omni/primary"
            assert resp.headers["x-budgateway-attempts"] == "1"
            assert resp.headers["x-request-id"]

    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_openai_prefixed_route_serves_the_endpoint(self, gw, capability):
        CALLS[capability](gw.openai(prefix="/openai/v1"), "omni")

    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_upstream_path_is_api_base_plus_the_openai_path(self, client, upstream, capability):
        CALLS[capability](client, "omni")
        assert [(r.path, r.model) for r in upstream.requests] == [(UPSTREAM_PATHS[capability], "ok")]


class TestFallback:
    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_a_failing_provider_falls_back_to_the_next(self, client, upstream, capability):
        raw = RAW_CALLS[capability](client, "flaky")
        assert raw.headers["x-budgateway-provider"] == "flaky/backup"
        assert raw.headers["x-budgateway-attempts"] == "2"
        assert [r.model for r in upstream.requests] == ["status-503", "ok"]
        assert upstream.requests[0].body == {**upstream.requests[1].body, "model": "status-503"}


class TestErrors:
    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_model_without_the_capability_is_400_unsupported_capability(self, client, upstream, capability):
        with pytest.raises(openai.BadRequestError) as exc_info:
            CALLS[capability](client, "chat-only")
        assert exc_info.value.code == "unsupported_capability"
        assert exc_info.value.type == "invalid_request_error"
        assert exc_info.value.body["message"] == f"Model chat-only does not support {capability}"
        assert upstream.requests == []

    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_unknown_model_is_404_model_not_found(self, client, capability):
        with pytest.raises(openai.NotFoundError) as exc_info:
            CALLS[capability](client, "no-such-model")
        assert exc_info.value.code == "model_not_found"

    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_provider_4xx_comes_back_with_its_message(self, client, capability):
        with pytest.raises(openai.BadRequestError) as exc_info:
            CALLS[capability](client, "refusing")
        assert exc_info.value.body["message"] == "upstream error 400"
        assert exc_info.value.type == "invalid_request_error"

    @pytest.mark.parametrize("capability", JSON_CAPABILITIES)
    def test_provider_5xx_fails_the_chain_without_its_text(self, client, capability):
        with pytest.raises(openai.APIStatusError) as exc_info:
            CALLS[capability](client, "broken")
        assert exc_info.value.status_code == 502
        assert exc_info.value.code == "all_providers_failed"
        assert "HTTP 500 from provider" in exc_info.value.message
        assert "upstream error" not in exc_info.value.message

    @pytest.mark.parametrize(("path", "body", "param"), [
        ("/v1/embeddings", {"model": "omni"}, "input"),
        ("/v1/moderations", {"model": "omni"}, "input"),
        ("/v1/images/generations", {"model": "omni"}, "prompt"),
        ("/v1/audio/speech", {"model": "omni", "input": "hi"}, "voice"),
        ("/v1/completions", {"model": "omni"}, "prompt"),
    ])
    def test_missing_required_field_is_400_naming_it(self, gw, path, body, param):
        resp = gw.request("POST", path, body)
        assert resp.status == 400, resp
        error = resp.json()["error"]
        assert (error["code"], error["param"]) == ("missing_required_parameter", param)


class TestDummyEndpoints:
    def test_completions_plain_and_streamed_agree(self, client):
        text = client.completions.create(model="dummy", prompt="hi").choices[0].text
        chunks = client.completions.create(model="dummy", prompt="hi", stream=True)
        assert text
        assert "".join(c.choices[0].text for c in chunks if c.choices) == text

    def test_embeddings_float_and_base64_agree(self, client):
        floats = client.embeddings.create(model="dummy", input=["a", "b"], encoding_format="float")
        decoded = client.embeddings.create(model="dummy", input=["a", "b"])
        assert len(floats.data) == 2
        assert all(d.embedding and all(isinstance(x, float) for x in d.embedding) for d in floats.data)
        for got, expected in zip(decoded.data, floats.data, strict=True):
            assert got.embedding == pytest.approx(expected.embedding, rel=1e-6)  # float32 precision


class TestModelList:
    def test_each_model_lists_its_capabilities(self, client):
        listed = {m.id: m.model_extra["capabilities"] for m in client.models.list()}
        assert listed["omni"] == sorted(ALL_CAPABILITIES)
        assert listed["broken"] == sorted(JSON_CAPABILITIES)
        assert listed["chat-only"] == ["chat"]

    def test_one_model_shows_its_capabilities(self, gw):
        resp = gw.request("GET", "/v1/models/omni")
        assert resp.status == 200, resp
        assert resp.json()["capabilities"] == sorted(ALL_CAPABILITIES)
