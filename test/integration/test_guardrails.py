"""Guardrail profiles through a running gateway: the local detectors on what clients send, on whole
answers and on streams (text held back in windows), on ``/v1/messages``, and the config checks at start.

Input tests use the scripted OpenAI upstream (it records what it received); output tests use
``RawUpstream``, scripted per model name with the answer or the chunks each test needs.
"""

from __future__ import annotations

import json

import anthropic
import openai
import pytest
from configs import dummy_provider, guarded_model, local_profile, openai_provider
from conftest import CLIENT_TIMEOUT_S
from upstream import CONTENT
from upstream_raw import response, sse

#: Small windows (plus the 64-char overlap) so a short answer spans several of them.
WINDOW_CHARS = 20
OVERLAP_CHARS = 64
MAX_TOKENS = 100

EMAIL, TICKET, DENIED = "jane.doe@example.com", "TKT-123456", "project-x"
#: A Luhn-valid test card, and the pieces a stream splits it into.
CARD = "4111 1111 1111 1111"
CARD_PIECES = ("4111 11", "11 1111 ", "1111")
CARD_GROUPS = ("4111", "1111")
#: Sixteen digits whose Luhn sum is wrong: no card (and no phone, SSN or address either).
NOT_A_CARD = "4111111111111112"
ALL_PII = ["email", "phone", "credit_card", "ssn", "ip", "secret"]
BLOCKED_INPUT = {"error": {"message": "Input content violates content policy", "type": "invalid_request_error",
                           "param": None, "code": "content_filter"}}

#: The text before and after the card in a streamed answer, and how the stream cuts the prefix.
STREAM_PREFIX = "Here is the number from the form you sent over this morning, read back in full as you asked: "
STREAM_SUFFIX = (" and that", " is all I", " can say.")
PREFIX_PIECE_CHARS = 10
#: Where the card starts in the streamed text: every other offset over two windows, so some scan of
#: the held text sees only part of the card whatever the window's phase.
CARD_OFFSETS = list(range(56, 96, 2))
CLEAN_PIECES = tuple(f"piece {i} of a plain answer, " for i in range(8))

PROFILES = "".join([
    local_profile("block-in", ["input"], "block", pii=ALL_PII),
    local_profile("redact-in", ["input"], "redact", pii=ALL_PII, patterns={"ticket": "TKT-[0-9]{6}"},
                  deny_words=[DENIED]),
    local_profile("redact-out", ["output"], "redact", pii=ALL_PII),
    local_profile("block-out", ["output"], "block", pii=ALL_PII),
    local_profile("redact-both", None, "redact", pii=ALL_PII),
])

# Raw upstream model names.
EMAIL_ANSWER, EMAIL_TEXT_ANSWER, NOT_A_CARD_ANSWER = "email-answer", "email-text-answer", "not-a-card-answer"
CARD_STREAM, CARD_TEXT_STREAM, CLEAN_STREAM = "card-stream", "card-text-stream", "clean-stream"


def _models(upstream, raw_upstream) -> str:
    endpoints = ["chat", "completions", "embedding"]
    raw = raw_upstream.url
    return PROFILES + "".join([
        guarded_model("in-block", openai_provider("in-block", upstream.url), "block-in", endpoints=endpoints),
        guarded_model("in-redact", openai_provider("in-redact", upstream.url), "redact-in", endpoints=endpoints),
        guarded_model("out-redact-in", openai_provider("out-redact-in", upstream.url), "redact-out"),
        guarded_model("both-ok", openai_provider("ok", upstream.url), "redact-both"),
        guarded_model("echo-out", dummy_provider("echo"), "redact-out"),
        guarded_model("email-redact", openai_provider(EMAIL_ANSWER, raw), "redact-out"),
        guarded_model("email-block", openai_provider(EMAIL_ANSWER, raw), "block-out"),
        guarded_model("email-in-only", openai_provider(EMAIL_ANSWER, raw), "redact-in"),
        guarded_model("email-text-redact", openai_provider(EMAIL_TEXT_ANSWER, raw), "redact-out",
                 endpoints=["completions"]),
        guarded_model("not-a-card", openai_provider(NOT_A_CARD_ANSWER, raw), "redact-out"),
        guarded_model("card-redact", openai_provider(CARD_STREAM, raw), "redact-out"),
        guarded_model("card-block", openai_provider(CARD_STREAM, raw), "block-out"),
        guarded_model("card-text-redact", openai_provider(CARD_TEXT_STREAM, raw), "redact-out",
                 endpoints=["completions"]),
        guarded_model("clean-redact", openai_provider(CLEAN_STREAM, raw), "redact-out"),
    ])


# -- what the raw upstream answers ------------------------------------------------------------------


def _chat_answer(text: str) -> bytes:
    body = {"id": "chatcmpl-raw", "object": "chat.completion", "created": 0, "model": "raw",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
    return response(200, json.dumps(body).encode())


def _text_answer(text: str) -> bytes:
    body = {"id": "cmpl-raw", "object": "text_completion", "created": 0, "model": "raw",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
    return response(200, json.dumps(body).encode())


def _chat_chunk(delta: dict, finish_reason: str | None = None) -> bytes:
    return json.dumps({"id": "chatcmpl-raw", "object": "chat.completion.chunk", "created": 0, "model": "raw",
                       "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                    "finish_reason": finish_reason}]}).encode()


def _text_chunk(text: str, finish_reason: str | None = None) -> bytes:
    return json.dumps({"id": "cmpl-raw", "object": "text_completion", "created": 0, "model": "raw",
                       "choices": [{"index": 0, "text": text, "logprobs": None,
                                    "finish_reason": finish_reason}]}).encode()


def _chat_stream(pieces: tuple[str, ...]) -> list[bytes]:
    return sse(_chat_chunk({"role": "assistant", "content": ""}), *(_chat_chunk({"content": p}) for p in pieces),
               _chat_chunk({}, "stop"))


def _text_stream(pieces: tuple[str, ...]) -> list[bytes]:
    return sse(*(_text_chunk(p) for p in pieces), _text_chunk("", "stop"))


def _card_pieces(offset: int) -> tuple[str, ...]:
    """A streamed answer whose card starts ``offset`` characters in, the card split over three chunks."""
    prefix = STREAM_PREFIX[:offset]
    head = tuple(prefix[i:i + PREFIX_PIECE_CHARS] for i in range(0, len(prefix), PREFIX_PIECE_CHARS))
    return head + CARD_PIECES + STREAM_SUFFIX


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, raw_upstream):
    raw_upstream.on(EMAIL_ANSWER, _chat_answer(f"write to {EMAIL} today"))
    raw_upstream.on(EMAIL_TEXT_ANSWER, _text_answer(f"write to {EMAIL} today"))
    raw_upstream.on(NOT_A_CARD_ANSWER, _chat_answer(f"order number {NOT_A_CARD}"))
    raw_upstream.on(CLEAN_STREAM, _chat_stream(CLEAN_PIECES))
    settings = {"guardrails": {"stream_window_chars": WINDOW_CHARS}}
    return module_gateway_factory(_models(upstream, raw_upstream), settings=settings)


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


@pytest.fixture(scope="module")
def claude(gw):
    http_client = anthropic.DefaultHttpxClient(trust_env=False)
    with anthropic.Anthropic(base_url=gw.base_url, api_key="test-key", max_retries=0,
                             timeout=CLIENT_TIMEOUT_S, http_client=http_client) as client:
        yield client


def _chat(model: str, content: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def _message_texts(messages: list[dict]) -> list[str]:
    """The texts of chat messages, string content or text parts."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            out += [p["text"] for p in content if p.get("type") == "text"]
    return out


def _deltas(chunks) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _sse_chunks(resp) -> tuple[list[dict], list[str]]:
    """The JSON chunks of a raw event-stream response, and its ``data:`` payloads."""
    data = resp.sse_data()
    return [json.loads(d) for d in data if d != "[DONE]"], data


def _raw_deltas(chunks: list[dict]) -> str:
    out = []
    for c in chunks:
        for choice in c.get("choices") or ():
            out.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
    return "".join(out)


# -- input ------------------------------------------------------------------------------------------

#: (path, body builder) for every API whose input a profile scans, each carrying the email.
_INPUTS = {
    "chat-string": ("/v1/chat/completions", lambda m, t: _chat(m, t)),
    "chat-text-parts": ("/v1/chat/completions",
                        lambda m, t: _chat(m, [{"type": "text", "text": "hello"}, {"type": "text", "text": t}])),
    "completions-prompt": ("/v1/completions", lambda m, t: {"model": m, "prompt": t}),
    "completions-prompt-list": ("/v1/completions", lambda m, t: {"model": m, "prompt": ["hello", t]}),
    "embeddings-input": ("/v1/embeddings", lambda m, t: {"model": m, "input": t}),
    "embeddings-input-list": ("/v1/embeddings", lambda m, t: {"model": m, "input": ["hello", t]}),
}


def _sent_texts(body: dict) -> list[str]:
    """The texts a recorded upstream body carries, wherever its API puts them."""
    if "messages" in body:
        return _message_texts(body["messages"])
    value = body.get("prompt", body.get("input"))
    return [value] if isinstance(value, str) else list(value)


class TestInputBlock:
    @pytest.mark.parametrize("kind", list(_INPUTS))
    def test_a_finding_is_a_400_content_filter_and_nothing_goes_upstream(self, gw, upstream, kind):
        path, build = _INPUTS[kind]
        resp = gw.request("POST", path, build("in-block", f"mail me at {EMAIL}"))
        assert resp.status == 400, resp
        assert resp.json() == BLOCKED_INPUT
        assert upstream.requests == []

    def test_clean_input_goes_upstream_unchanged(self, client, upstream):
        answer = client.chat.completions.create(**_chat("in-block", "what is the weather like"))
        assert answer.choices[0].message.content == CONTENT
        assert _message_texts(upstream.requests[0].body["messages"]) == ["what is the weather like"]

    def test_the_sdk_raises_a_bad_request_with_code_content_filter(self, client, upstream):
        with pytest.raises(openai.BadRequestError) as exc_info:
            client.chat.completions.create(**_chat("in-block", f"my card is {CARD}"))
        assert exc_info.value.code == "content_filter"
        assert upstream.requests == []

    def test_messages_block_is_an_anthropic_error_and_nothing_goes_upstream(self, gw, upstream):
        body = {"model": "in-block", "max_tokens": MAX_TOKENS, "system": f"the user is {EMAIL}",
                "messages": [{"role": "user", "content": "hi"}]}
        resp = gw.request("POST", "/v1/messages", body)
        assert resp.status == 400, resp
        assert resp.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                          "message": "Input content violates content policy"}}
        assert upstream.requests == []

    def test_messages_block_in_a_user_text_block(self, claude, upstream):
        with pytest.raises(anthropic.BadRequestError) as exc_info:
            claude.messages.create(model="in-block", max_tokens=MAX_TOKENS, messages=[
                {"role": "user", "content": [{"type": "text", "text": f"card {CARD}"}]}])
        assert exc_info.value.body["error"]["message"] == "Input content violates content policy"
        assert upstream.requests == []


class TestInputRedact:
    @pytest.mark.parametrize("kind", list(_INPUTS))
    def test_the_upstream_receives_the_redacted_text(self, gw, upstream, kind):
        path, build = _INPUTS[kind]
        resp = gw.request("POST", path, build("in-redact", f"mail me at {EMAIL}"))
        assert resp.status == 200, resp
        [received] = upstream.requests
        sent = _sent_texts(build("in-redact", "mail me at [REDACTED_EMAIL]"))
        assert _sent_texts(received.body) == sent

    @pytest.mark.parametrize(("text", "redacted"), [
        (f"mail {EMAIL} now", "mail [REDACTED_EMAIL] now"),
        (f"card {CARD} ok", "card [REDACTED_CREDIT_CARD] ok"),
        ("call +1 415 555 0100 now", "call [REDACTED_PHONE] now"),
        ("ssn 123-45-6789 ok", "ssn [REDACTED_SSN] ok"),
        ("host 10.20.30.40 and fe80::1:2:3", "host [REDACTED_IP] and [REDACTED_IP]"),
        ("key sk-abcdefghijklmnopqrstuvwxyz123456 ok", "key [REDACTED_SECRET] ok"),
        (f"see {TICKET} about {DENIED.upper()}", "see [REDACTED_TICKET] about [REDACTED_DENIED_WORD]"),
    ], ids=["email", "credit_card", "phone", "ssn", "ip", "secret", "pattern-and-deny-word"])
    def test_each_detector_redacts_before_the_upstream(self, client, upstream, text, redacted):
        client.chat.completions.create(**_chat("in-redact", text))
        [received] = upstream.requests
        assert _message_texts(received.body["messages"]) == [redacted]

    def test_other_fields_reach_the_upstream_unchanged(self, gw, upstream):
        body = {**_chat("in-redact", f"mail {EMAIL}"), "temperature": 0.25, "user": "u-1"}
        body["messages"].insert(0, {"role": "system", "content": "be brief"})
        assert gw.request("POST", "/v1/chat/completions", body).status == 200
        received = upstream.requests[0].body
        assert received["messages"] == [{"role": "system", "content": "be brief"},
                                        {"role": "user", "content": "mail [REDACTED_EMAIL]"}]
        assert (received["temperature"], received["user"]) == (0.25, "u-1")

    def test_messages_system_and_user_texts_are_redacted_before_the_upstream(self, claude, upstream):
        msg = claude.messages.create(model="in-redact", max_tokens=MAX_TOKENS, system=f"the user is {EMAIL}",
                                     messages=[{"role": "user", "content": f"my ticket is {TICKET}"}])
        assert [b.text for b in msg.content] == [CONTENT]
        [received] = upstream.requests
        assert _message_texts(received.body["messages"]) == ["the user is [REDACTED_EMAIL]",
                                                             "my ticket is [REDACTED_TICKET]"]

    def test_a_number_failing_luhn_reaches_the_upstream_unchanged(self, client, upstream):
        client.chat.completions.create(**_chat("in-redact", f"order {NOT_A_CARD}"))
        assert _message_texts(upstream.requests[0].body["messages"]) == [f"order {NOT_A_CARD}"]

    def test_an_output_only_profile_leaves_the_input_alone(self, client, upstream):
        client.chat.completions.create(**_chat("out-redact-in", f"mail {EMAIL}"))
        assert _message_texts(upstream.requests[0].body["messages"]) == [f"mail {EMAIL}"]


# -- whole answers ----------------------------------------------------------------------------------


class TestOutputWholeAnswer:
    def test_redact_rewrites_the_email_in_the_answer(self, client):
        answer = client.chat.completions.create(**_chat("email-redact", "hi"))
        assert answer.choices[0].message.content == "write to [REDACTED_EMAIL] today"
        assert answer.choices[0].finish_reason == "stop"

    def test_block_is_200_with_empty_content_and_finish_reason_content_filter(self, client):
        raw = client.chat.completions.with_raw_response.create(**_chat("email-block", "hi"))
        assert raw.status_code == 200
        answer = raw.parse()
        assert answer.choices[0].message.content == ""
        assert answer.choices[0].finish_reason == "content_filter"
        assert EMAIL not in raw.text

    def test_an_input_only_profile_leaves_the_answer_alone(self, client):
        answer = client.chat.completions.create(**_chat("email-in-only", "hi"))
        assert answer.choices[0].message.content == f"write to {EMAIL} today"

    def test_completions_text_is_redacted(self, client):
        answer = client.completions.create(model="email-text-redact", prompt="hi")
        assert answer.choices[0].text == "write to [REDACTED_EMAIL] today"

    def test_the_echo_of_an_unscanned_input_is_redacted_on_the_way_out(self, client):
        answer = client.chat.completions.create(**_chat("echo-out", f"reach me at {EMAIL}"))
        assert answer.choices[0].message.content == "reach me at [REDACTED_EMAIL]"

    def test_a_number_failing_luhn_is_delivered_unchanged(self, client):
        answer = client.chat.completions.create(**_chat("not-a-card", "hi"))
        assert answer.choices[0].message.content == f"order number {NOT_A_CARD}"

    def test_messages_answer_is_redacted(self, claude):
        msg = claude.messages.create(model="email-redact", max_tokens=MAX_TOKENS,
                                     messages=[{"role": "user", "content": "hi"}])
        assert [b.text for b in msg.content] == ["write to [REDACTED_EMAIL] today"]

    def test_messages_block_is_an_empty_text_with_stop_reason_refusal(self, claude):
        msg = claude.messages.create(model="email-block", max_tokens=MAX_TOKENS,
                                     messages=[{"role": "user", "content": "hi"}])
        assert [b.text for b in msg.content] == [""]
        assert msg.stop_reason == "refusal"


# -- streams ----------------------------------------------------------------------------------------


class TestOutputStream:
    def test_a_clean_stream_passes_through_intact_and_ends_normally(self, client):
        chunks = list(client.chat.completions.create(**_chat("clean-redact", "hi"), stream=True))
        assert _deltas(chunks) == "".join(CLEAN_PIECES)
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert all(c.model == "clean-redact" for c in chunks)

    def test_a_clean_raw_stream_ends_with_stop_then_done(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {**_chat("clean-redact", "hi"), "stream": True})
        assert resp.status == 200, resp
        chunks, data = _sse_chunks(resp)
        assert data[-1] == "[DONE]"
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert _raw_deltas(chunks) == "".join(CLEAN_PIECES)

    def test_text_is_held_back_in_windows_not_all_at_the_end(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {**_chat("clean-redact", "hi"), "stream": True})
        texts = [t for t in (_raw_deltas([c]) for c in _sse_chunks(resp)[0]) if t]
        # Released a window at a time: several text chunks, each but the last at least a window long.
        assert len(texts) >= 2, texts
        assert all(len(t) >= WINDOW_CHARS for t in texts[:-1]), texts

    @pytest.mark.parametrize("offset", CARD_OFFSETS)
    def test_a_card_split_over_chunks_is_redacted(self, client, raw_upstream, offset):
        pieces = _card_pieces(offset)
        raw_upstream.on(CARD_STREAM, _chat_stream(pieces))
        chunks = list(client.chat.completions.create(**_chat("card-redact", "hi"), stream=True))
        text = _deltas(chunks)
        assert text == "".join(pieces).replace(CARD, "[REDACTED_CREDIT_CARD]")
        assert not any(group in text for group in CARD_GROUPS), text
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    @pytest.mark.parametrize("offset", CARD_OFFSETS)
    def test_a_card_split_over_chunks_blocks_the_stream(self, gw, raw_upstream, offset):
        pieces = _card_pieces(offset)
        upstream_text = "".join(pieces)
        raw_upstream.on(CARD_STREAM, _chat_stream(pieces))
        resp = gw.request("POST", "/v1/chat/completions", {**_chat("card-block", "hi"), "stream": True})
        assert resp.status == 200, resp
        chunks, data = _sse_chunks(resp)
        assert data[-1] == "[DONE]"
        assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
        assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
        text = _raw_deltas(chunks)
        # Only text released before the flagged window: a prefix of the answer that stops short of
        # the card by at least the overlap still held back when the card was found.
        assert upstream_text.startswith(text)
        assert len(text) <= max(offset - OVERLAP_CHARS, 0) + WINDOW_CHARS, text
        assert not any(group in text for group in CARD_GROUPS), text

    def test_a_card_split_over_completions_chunks_is_redacted(self, client, raw_upstream):
        pieces = _card_pieces(CARD_OFFSETS[0])
        raw_upstream.on(CARD_TEXT_STREAM, _text_stream(pieces))
        chunks = list(client.completions.create(model="card-text-redact", prompt="hi", stream=True))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert text == "".join(pieces).replace(CARD, "[REDACTED_CREDIT_CARD]")

    def test_a_number_failing_luhn_is_streamed_unchanged(self, client, raw_upstream):
        pieces = ("order number ", NOT_A_CARD[:6], NOT_A_CARD[6:11], NOT_A_CARD[11:], " is on its way")
        raw_upstream.on(CARD_STREAM, _chat_stream(pieces))
        chunks = list(client.chat.completions.create(**_chat("card-redact", "hi"), stream=True))
        assert _deltas(chunks) == "".join(pieces)


class TestMessagesStreaming:
    """Anthropic's stream is held back as OpenAI chunks, before it is translated."""

    def test_a_card_split_over_chunks_is_redacted_on_messages(self, claude, raw_upstream):
        pieces = _card_pieces(CARD_OFFSETS[3])
        raw_upstream.on(CARD_STREAM, _chat_stream(pieces))
        with claude.messages.stream(model="card-redact", max_tokens=MAX_TOKENS,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "".join(pieces).replace(CARD, "[REDACTED_CREDIT_CARD]")
        assert final.stop_reason == "end_turn"

    def test_a_blocked_messages_stream_ends_as_a_refusal(self, claude, raw_upstream):
        pieces = _card_pieces(CARD_OFFSETS[3])
        raw_upstream.on(CARD_STREAM, _chat_stream(pieces))
        with claude.messages.stream(model="card-block", max_tokens=MAX_TOKENS,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert final.stop_reason == "refusal"
        assert "".join(pieces).startswith(text)
        assert not any(group in text for group in CARD_GROUPS), text

    def test_the_same_profile_streams_on_chat_completions(self, gw):
        resp = gw.request("POST", "/v1/chat/completions", {**_chat("both-ok", "hi"), "stream": True})
        assert resp.status == 200, resp
        chunks, data = _sse_chunks(resp)
        assert data[-1] == "[DONE]"
        assert _raw_deltas(chunks) == CONTENT

    def test_an_input_only_profile_streams(self, claude, upstream):
        with claude.messages.stream(model="in-redact", max_tokens=MAX_TOKENS,
                                    messages=[{"role": "user", "content": f"mail {EMAIL}"}]) as stream:
            text = "".join(stream.text_stream)
        assert text == CONTENT
        assert _message_texts(upstream.requests[0].body["messages"]) == ["mail [REDACTED_EMAIL]"]


# -- config -----------------------------------------------------------------------------------------


class TestConfig:
    def test_a_model_naming_an_undefined_profile_is_refused_at_start(self, gateway_cli):
        models = guarded_model("m", dummy_provider("echo"), "nope")
        result = gateway_cli(models, "--bind", "127.0.0.1:0")
        assert result.returncode == 1, result.stdout + result.stderr
        assert 'models.m.guardrail_profile: profile "nope" is not defined under guardrails' in result.stderr

    def test_an_azure_content_safety_provider_needs_its_endpoint(self, gateway_cli):
        profile = '[guardrails."mod"]\n[guardrails."mod".providers.safety]\ntype = "azure_content_safety"\n'
        result = gateway_cli(profile + guarded_model("m", dummy_provider("echo"), "mod"), "--check-config")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "guardrails.mod.providers.safety.endpoint: missing" in result.stderr

    def test_an_unknown_guard_provider_type_is_refused(self, gateway_cli):
        profile = '[guardrails."mod"]\n[guardrails."mod".providers.x]\ntype = "lakera"\n'
        result = gateway_cli(profile + guarded_model("m", dummy_provider("echo"), "mod"), "--check-config")
        assert result.returncode == 1, result.stdout + result.stderr
        assert "guardrails.mod.providers.x.type: one of: local, openai, azure_content_safety" in result.stderr

    def test_the_profiles_of_this_module_pass_the_check(self, gateway_cli):
        result = gateway_cli(PROFILES + guarded_model("m", dummy_provider("echo"), "redact-both"), "--check-config")
        assert result.returncode == 0, result.stdout + result.stderr
