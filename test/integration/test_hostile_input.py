"""Nothing a client or an upstream sends can crash the gateway, hang it or make it leak an internal detail.

Upstream faults come from ``RawUpstream`` (bytes scripted per model) and the scripted OpenAI upstream;
each test checks what the client gets (an error of its API's shape, never a 500) and what it must not get.
"""

from __future__ import annotations

import json
import re
import socket
import time

import anthropic
import pytest
from configs import model_toml, openai_provider
from rawhttp import talk
from upstream import refused_base_url
from upstream_raw import chunk, completion_json, response, sse

MESSAGES = [{"role": "user", "content": "hi"}]
CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The caps a module gateway runs with, small so tests can cross them cheaply.
EVENT_CAP, BODY_CAP = 64 * 1024, 256 * 1024
# Long enough for a fallback call to have happened, had the gateway made it.
NO_FALLBACK_WAIT_S = 2.0
SLOW_FAILURE_S = 1.0
#: A transcript larger than the whole-answer cap: relayed as it comes, since it needs no rewriting.
BIG_TEXT = b"word " * (BODY_CAP // 4)


def _raw(raw_upstream, model: str, **options) -> dict:
    return openai_provider(model, raw_upstream.url, **options)


def _models(upstream, raw_upstream) -> str:
    ok = openai_provider("ok", upstream.url)
    text = "".join([
        model_toml("ok", {"p": ok}),
        model_toml("refused", {"p": openai_provider("ok", refused_base_url())}),
        model_toml("telling-5xx", {"p": _raw(raw_upstream, "telling-5xx")}),
        model_toml("garbage", {"p": _raw(raw_upstream, "garbage")}),
        model_toml("nan-answer", {"p": _raw(raw_upstream, "nan-answer"), "backup": ok}),
        model_toml("surrogate-answer", {"p": _raw(raw_upstream, "surrogate-answer")}),
        model_toml("surrogate-stream", {"p": _raw(raw_upstream, "surrogate-stream")}),
        model_toml("huge-event", {"p": _raw(raw_upstream, "huge-event"), "backup": ok}),
        model_toml("huge-event-later", {"p": _raw(raw_upstream, "huge-event-later")}),
        model_toml("big-answer", {"p": _raw(raw_upstream, "big-answer"), "backup": ok}),
        model_toml("big-chunked-answer", {"p": _raw(raw_upstream, "big-chunked-answer")}),
        model_toml("length-lie", {"p": _raw(raw_upstream, "length-lie")}),
        model_toml("ill-typed-stream", {"p": _raw(raw_upstream, "ill-typed-stream")}),
        model_toml("ill-typed-answer", {"p": _raw(raw_upstream, "ill-typed-answer")}),
        model_toml("slow-failure", {"p": _raw(raw_upstream, "slow-failure"), "backup": ok}),
        model_toml("big-text", {"p": _raw(raw_upstream, "big-text")}, endpoints=["audio_transcription"]),
        model_toml("truncated-chunked", {"p": _raw(raw_upstream, "truncated-chunked")}),
        model_toml("switching", {"p": _raw(raw_upstream, "switching")}),
        model_toml("trailing-bytes", {"p": _raw(raw_upstream, "trailing-bytes")}),
        model_toml("huge-head", {"p": _raw(raw_upstream, "huge-head")}),
        model_toml("empty-text", {"p": _raw(raw_upstream, "empty-text")}, endpoints=["audio_transcription"]),
    ])
    return text


def _script(raw_upstream) -> None:
    raw_upstream.on("telling-5xx", response(500, b"db-7.internal.corp:5432 exploded; token sk-live-123"))
    raw_upstream.on("garbage", b"SSH-2.0-OpenSSH_9.2 not http at all\r\n")
    raw_upstream.on("nan-answer", response(200, completion_json(usage={"prompt_tokens": float("nan")})
                                           .replace(b"NaN", b"NaN")))
    raw_upstream.on("surrogate-answer", response(200, completion_json(
        choices=[{"index": 0, "message": {"role": "assistant", "content": "\ud83d"}, "finish_reason": "stop"}])))
    first = json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "raw",
                        "choices": [{"index": 0, "delta": {"content": "\ud800"}, "finish_reason": None}]}).encode()
    raw_upstream.on("surrogate-stream", sse(first))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw_upstream.on("huge-event", [head] + [chunk(b"data: " + b"x" * 16384)] * 8 + [b"0\r\n\r\n"])
    ok_chunk = json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "raw",
                           "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]})
    raw_upstream.on("huge-event-later", [head, chunk(b"data: " + ok_chunk.encode() + b"\n\n")]
                    + [chunk(b"data: " + b"x" * 16384)] * 8 + [b"0\r\n\r\n"])
    big = completion_json(choices=[{"index": 0, "message": {"role": "assistant", "content": "y" * (BODY_CAP + 1)},
                                    "finish_reason": "stop"}])
    raw_upstream.on("big-answer", response(200, big))
    raw_upstream.on("big-chunked-answer", [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n"]
                    + [chunk(big[i:i + 65536]) for i in range(0, len(big), 65536)] + [b"0\r\n\r\n"])
    raw_upstream.on("length-lie", response(200, b'{"id": "x"', length=1024 ** 3))
    ill = [json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "raw",
                       "choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": None}]}).encode(),
           json.dumps({"id": "c", "choices": [{"index": 0, "delta": "a string"}], "usage": "a string"}).encode()]
    raw_upstream.on("ill-typed-stream", sse(*ill))
    raw_upstream.on("ill-typed-answer", response(200, completion_json(choices="not a list", usage="nope")))

    def slow_failure(handler) -> None:
        handler.wait(SLOW_FAILURE_S)
        handler.connection.sendall(response(500, b"late failure"))

    raw_upstream.on("slow-failure", slow_failure)
    raw_upstream.on("big-text", response(200, BIG_TEXT, "text/plain; charset=utf-8"))
    body = completion_json()
    raw_upstream.on("truncated-chunked", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + chunk(body[:20]))
    raw_upstream.on("switching", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\nxx")
    raw_upstream.on("trailing-bytes", response(200, body) + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
    raw_upstream.on("huge-head", [b"HTTP/1.1 200 OK\r\nX-Pad: "] + [b"p" * 16384] * 8)
    raw_upstream.on("empty-text", response(200, b"", "text/plain; charset=utf-8"))


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, raw_upstream):
    _script(raw_upstream)
    settings = {"max_sse_event_bytes": EVENT_CAP, "max_upstream_body_bytes": BODY_CAP}
    return module_gateway_factory(_models(upstream, raw_upstream), settings=settings)


@pytest.fixture
def client(gw):
    return gw.openai()


def _error(gw, model: str, **body) -> dict:
    resp = gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES, **body})
    assert resp.status in (400, 404, 429, 499, 502, 504), resp
    return resp.json()["error"]


class TestNoInternalDetail:
    def test_a_refused_connection_names_no_address(self, gw):
        error = _error(gw, "refused")
        assert error["message"] == "All providers failed for model refused: refused/p: connection error"
        assert "127.0.0.1" not in json.dumps(error) and "http" not in error["message"]

    def test_an_upstream_5xx_text_is_not_copied(self, gw):
        error = _error(gw, "telling-5xx")
        assert error["message"].endswith("telling-5xx/p: HTTP 500 from provider")
        assert "internal" not in error["message"] and "sk-live" not in error["message"]

    def test_an_upstream_5xx_text_is_not_logged_either(self, gw):
        _error(gw, "telling-5xx")
        time.sleep(0.2)
        assert "sk-live" not in gw.log() and "internal.corp" not in gw.log()

    def test_an_upstream_that_speaks_no_http_is_a_connection_error(self, gw):
        assert _error(gw, "garbage")["message"].endswith("garbage/p: connection error")

    def test_the_log_has_the_detail_and_the_request_id(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "refused", "messages": MESSAGES},
                          headers={"X-Request-Id": "detail-please"})
        assert resp.status == 502
        time.sleep(0.2)
        line = next(line for line in gw.log().splitlines() if "detail-please" in line)
        assert "refused/p" in line and "connection" in line

    def test_a_stream_failing_midway_names_no_address(self, gw, upstream):
        text = gw.request("POST", "/v1/chat/completions",
                          {"model": "ok", "messages": MESSAGES, "stream": True}).body.decode()
        assert "[DONE]" in text and "127.0.0.1" not in text


class TestSurrogates:
    def test_a_lone_surrogate_in_a_request_is_passed_on_escaped(self, gw, upstream):
        body = b'{"model": "ok", "messages": [{"role": "user", "content": "split \\ud83d emoji"}]}'
        resp = gw.request("POST", "/v1/chat/completions", body)
        assert resp.status == 200, resp
        sent = upstream.requests[-1].body
        assert sent["messages"][0]["content"] == "split \ud83d emoji"

    @pytest.mark.parametrize(("path", "body"), [
        ("/v1/completions", {"model": "ok", "prompt": "\ud800"}),
        ("/v1/embeddings", {"model": "ok", "input": "\ud800"}),
        ("/v1/messages", {"model": "ok", "max_tokens": 5, "messages": [{"role": "user", "content": "\ud800"}]}),
        ("/v1/chat/completions", {"model": "\ud800", "messages": MESSAGES}),
        ("/v1/chat/completions", {"model": "ok", "messages": MESSAGES, "user": "\udfff", "stream": True}),
    ], ids=["completions", "embeddings", "messages", "model-name", "stream"])
    def test_no_route_fails_on_a_lone_surrogate(self, gw, path, body):
        resp = gw.request("POST", path, json.dumps(body).encode())
        assert resp.status < 500 or resp.status == 502, resp
        resp.json() if not resp.headers.get("content-type", "").startswith("text/event-stream") else None

    def test_a_lone_surrogate_in_an_answer_is_escaped(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "surrogate-answer", "messages": MESSAGES})
        assert resp.status == 200
        assert b"\\ud83d" in resp.body and resp.json()["choices"][0]["message"]["content"] == "\ud83d"

    def test_a_lone_surrogate_in_a_stream_is_escaped(self, gw):
        resp = gw.request("POST", "/v1/chat/completions",
                          {"model": "surrogate-stream", "messages": MESSAGES, "stream": True})
        assert resp.status == 200
        first = json.loads(resp.sse_data()[0])
        assert first["choices"][0]["delta"]["content"] == "\ud800"


class TestNumbers:
    @pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"])
    def test_a_number_json_cannot_carry_is_400(self, gw, upstream, raw):
        body = b'{"model": "ok", "temperature": %s, "messages": [{"role": "user", "content": "hi"}]}' % raw
        resp = gw.request("POST", "/v1/chat/completions", body)
        assert resp.status == 400, resp
        assert resp.json()["error"]["code"] == "invalid_number"
        assert upstream.requests == []

    def test_big_integers_are_passed_on(self, gw, upstream):
        body = b'{"model": "ok", "seed": 123456789012345678901234567890, "messages": [{"role": "user", "content": "hi"}]}'
        assert gw.request("POST", "/v1/chat/completions", body).status == 200
        assert upstream.requests[-1].body["seed"] == 123456789012345678901234567890

    def test_an_answer_with_nan_is_502_never_invalid_json(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "nan-answer", "messages": MESSAGES})
        assert resp.status == 502
        strict = json.loads(resp.body, parse_constant=lambda c: pytest.fail(f"{c} in the answer"))
        assert strict["error"]["code"] == "invalid_provider_response"


class TestEventCap:
    def test_an_event_over_the_cap_fails_the_attempt_before_the_first_byte(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "huge-event", "messages": MESSAGES, "stream": True})
        assert resp.status == 200
        assert resp.headers["x-budgateway-provider"] == "huge-event/backup"

    def test_an_event_over_the_cap_after_the_first_ends_with_an_error_event(self, gw):
        resp = gw.request("POST", "/v1/chat/completions",
                          {"model": "huge-event-later", "messages": MESSAGES, "stream": True})
        events = resp.sse_data()
        assert json.loads(events[0])["choices"][0]["delta"]["content"] == "partial"
        assert json.loads(events[-1])["error"]["code"] == "stream_failed"
        assert "[DONE]" not in events


class TestBodyCap:
    def test_an_answer_over_the_cap_fails_the_attempt(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "big-answer", "messages": MESSAGES})
        assert resp.status == 200
        assert resp.headers["x-budgateway-provider"] == "big-answer/backup"

    def test_a_chunked_answer_over_the_cap_fails(self, gw):
        error = _error(gw, "big-chunked-answer")
        assert error["message"].endswith("big-chunked-answer/p: invalid response from provider")

    def test_a_length_of_a_gigabyte_fails_at_once(self, gw):
        started = time.monotonic()
        error = _error(gw, "length-lie")
        assert error["message"].endswith("length-lie/p: invalid response from provider")
        assert time.monotonic() - started < 5.0


    def test_an_answer_that_needs_no_rewriting_is_relayed_whatever_its_size(self, client):
        text = client.audio.transcriptions.create(model="big-text", file=("a.wav", b"RIFF0000WAVE"),
                                                  response_format="text")
        assert text.encode() == BIG_TEXT

    def test_an_empty_answer_is_an_empty_body(self, gw):
        resp = gw.request("POST", "/v1/audio/transcriptions",
                          b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nempty-text\r\n'
                          b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF\r\n--b--\r\n',
                          headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert (resp.status, resp.body) == (200, b"")


class TestUpstreamFraming:
    def test_a_chunked_answer_cut_by_a_close_is_a_failure_not_a_short_body(self, gw):
        assert _error(gw, "truncated-chunked")["message"].endswith("truncated-chunked/p: connection error")

    def test_a_101_from_the_upstream_is_a_failed_attempt(self, gw):
        assert _error(gw, "switching")["message"].endswith("switching/p: connection error")

    def test_bytes_after_the_answer_are_not_part_of_it(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "trailing-bytes", "messages": MESSAGES})
        assert resp.status == 200
        assert resp.json()["choices"][0]["message"]["content"] == "hi"

    def test_an_endless_answer_head_is_a_failed_attempt(self, gw):
        assert _error(gw, "huge-head")["message"].endswith("huge-head/p: connection error")


class TestIllTypedAnswers:
    def test_a_messages_stream_with_ill_typed_chunks_ends_with_an_error_event(self, gw):
        client = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0)
        events = []
        with pytest.raises(anthropic.APIStatusError) as exc_info:
            with client.messages.stream(model="ill-typed-stream", max_tokens=10, messages=MESSAGES) as stream:
                for event in stream:
                    events.append(event)
        assert exc_info.value.body["type"] == "error"
        assert any(e.type == "content_block_delta" for e in events)

    def test_an_ill_typed_messages_answer_is_no_500(self, gw):
        resp = gw.request("POST", "/v1/messages", {"model": "ill-typed-answer", "max_tokens": 5, "messages": MESSAGES})
        assert resp.status in (200, 502), resp
        assert resp.json()["type"] in ("message", "error")

    def test_an_ill_typed_chat_answer_reaches_the_client_as_it_came(self, gw):
        # chat completions relay the provider's object; only the model name is ours to change.
        resp = gw.request("POST", "/v1/chat/completions", {"model": "ill-typed-answer", "messages": MESSAGES})
        assert resp.status == 200 and resp.json()["choices"] == "not a list"


class TestClientGone:
    def test_no_fallback_call_for_a_client_that_left(self, gw, upstream, raw_upstream):
        body = json.dumps({"model": "slow-failure", "messages": MESSAGES}).encode()
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.sendall(CHAT + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert raw_upstream.wait_for(lambda: raw_upstream.requests_for("slow-failure"), 5.0)
        sock.close()
        time.sleep(SLOW_FAILURE_S + NO_FALLBACK_WAIT_S)
        assert upstream.requests == [], "the backup provider was called for a client that had left"

    def test_the_chain_goes_on_for_a_client_that_stays(self, gw, upstream):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "slow-failure", "messages": MESSAGES})
        assert resp.status == 200 and resp.headers["x-budgateway-provider"] == "slow-failure/backup"


class TestRequestId:
    def test_a_plain_id_is_echoed(self, gw):
        assert gw.request("GET", "/health", headers={"X-Request-Id": "abc.DEF_1:2-3"}).headers["x-request-id"] \
            == "abc.DEF_1:2-3"

    @pytest.mark.parametrize("value", ["has space", "x" * 129, "semi;colon", "quote\"", "é"])
    def test_anything_else_gets_a_new_id(self, gw, value):
        c = talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Request-Id: "
                 + value.encode("utf-8") + b"\r\n\r\n")
        answer = c.answers[0]
        assert answer.status == 200
        assert UUID.fullmatch(answer.headers["x-request-id"])

    def test_a_bare_cr_is_400_not_500(self, gw):
        c = talk(gw.port, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Request-Id: a\rb\r\n\r\n")
        assert [a.status for a in c.answers] == [400]


def test_the_debug_access_log_prints_no_query_string(gateway_factory):
    gw = gateway_factory(model_toml("ok", {"p": openai_provider("ok", refused_base_url())}), settings={"debug": True})
    assert gw.request("GET", "/health?api_key=SECRET-IN-QUERY").status == 200
    time.sleep(0.3)
    log = gw.log()
    assert "GET /health" in log
    assert "SECRET-IN-QUERY" not in log
