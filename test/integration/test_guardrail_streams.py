"""Output guardrails beyond one chat text: ``/v1/responses`` events, ``n > 1`` chat streams and tool
calls (whole and streamed), each with a card split over pieces that must never reach the client whole."""

from __future__ import annotations

import json

import pytest
from configs import guarded_model, local_profile, model_toml, openai_provider
from upstream_raw import chunk, response, sse

ALL_PII = ["email", "phone", "credit_card", "ssn", "ip", "secret"]
CARD = "4111 1111 1111 1111"
CARD_PIECES = ("4111 11", "11 1111 ", "1111")
#: Small windows (plus the 64-char overlap) so a short answer spans several of them.
WINDOW_CHARS = 20

PREFIX = "The number you asked me to read back from the form is "
PIECES = (PREFIX[:20], PREFIX[20:40], PREFIX[40:], *CARD_PIECES, " and that", " is all.")
TEXT = "".join(PIECES)
REDACTED = PREFIX + "[REDACTED_CREDIT_CARD] and that is all."

PROFILES = (local_profile("redact-out", ["output"], "redact", pii=ALL_PII)
            + local_profile("block-out", ["output"], "block", pii=ALL_PII))

IDS = {"item_id": "msg_1", "output_index": 0, "content_index": 0}


def _response(status: str, text: str | None) -> dict:
    part = [{"type": "output_text", "text": text, "annotations": []}] if text is not None else []
    output = [{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": part}]
    usage = {"input_tokens": 5, "output_tokens": 9, "total_tokens": 14}
    return {"id": "resp_1", "object": "response", "created_at": 0, "status": status, "model": "raw",
            "output": output if text is not None else [], "usage": usage if text is not None else None}


def _responses_stream() -> list[bytes]:
    events = [("response.created", {"response": _response("in_progress", None)}),
              ("response.output_item.added", {"output_index": 0, "item": {
                  "id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
              ("response.content_part.added", {**IDS, "part": {"type": "output_text", "text": "",
                                                               "annotations": []}})]
    events += [("response.output_text.delta", {**IDS, "delta": piece}) for piece in PIECES]
    events += [("response.output_text.done", {**IDS, "text": TEXT}),
               ("response.content_part.done", {**IDS, "part": {"type": "output_text", "text": TEXT,
                                                              "annotations": []}}),
               ("response.output_item.done", {"output_index": 0, "item": _response("completed", TEXT)["output"][0]}),
               ("response.completed", {"response": _response("completed", TEXT)})]
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    body = [chunk(f"event: {name}\ndata: {json.dumps({'type': name, **e, 'sequence_number': i})}\n\n".encode())
            for i, (name, e) in enumerate(events)]
    return [head, *body, b"0\r\n\r\n"]


def _two_choices_stream() -> list[bytes]:
    """``n = 2`` the way OpenAI streams it: one choice per chunk, interleaved; each carries the card."""
    def one(index: int, delta: dict, finish: str | None = None) -> bytes:
        return json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "raw",
                           "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}).encode()
    chunks = [one(i, {"role": "assistant", "content": ""}) for i in (0, 1)]
    for piece in PIECES:
        chunks += [one(0, {"content": piece}), one(1, {"content": piece.upper()})]
    chunks += [one(0, {}, "stop"), one(1, {}, "stop")]
    return sse(*chunks)


def _tool_call_answer() -> bytes:
    call = {"id": "call_1", "type": "function", "function": {"name": "pay", "arguments": json.dumps({"card": CARD})}}
    body = {"id": "chatcmpl-raw", "object": "chat.completion", "created": 0, "model": "raw",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                         "finish_reason": "tool_calls"}]}
    return response(200, json.dumps(body).encode())


def _tool_call_stream() -> list[bytes]:
    def one(delta: dict, finish: str | None = None) -> bytes:
        return json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "raw",
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode()
    head = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "pay", "arguments": ""}}
    pieces = ('{"note": "' + PREFIX, *CARD_PIECES, '"}')
    return sse(one({"role": "assistant", "tool_calls": [head]}),
               *(one({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces),
               one({}, "tool_calls"))


@pytest.fixture(scope="module")
def gw(module_gateway_factory, raw_upstream):
    raw_upstream.on("responses-card", _responses_stream())
    raw_upstream.on("two-choices", _two_choices_stream())
    raw_upstream.on("tool-call", _tool_call_answer())
    raw_upstream.on("tool-call-stream", _tool_call_stream())
    models = PROFILES + "".join([
        guarded_model("resp-redact", openai_provider("responses-card", raw_upstream.url), "redact-out",
                 endpoints=["responses"]),
        guarded_model("resp-block", openai_provider("responses-card", raw_upstream.url), "block-out",
                 endpoints=["responses"]),
        model_toml("resp-open", {"p": openai_provider("responses-card", raw_upstream.url)}, endpoints=["responses"]),
        guarded_model("n2-redact", openai_provider("two-choices", raw_upstream.url), "redact-out"),
        guarded_model("n2-block", openai_provider("two-choices", raw_upstream.url), "block-out"),
        guarded_model("call-redact", openai_provider("tool-call", raw_upstream.url), "redact-out"),
        guarded_model("call-block", openai_provider("tool-call", raw_upstream.url), "block-out"),
        guarded_model("call-stream", openai_provider("tool-call-stream", raw_upstream.url), "redact-out"),
    ])
    return module_gateway_factory(models, settings={"guardrails": {"stream_window_chars": WINDOW_CHARS}})


@pytest.fixture(scope="module")
def client(gw):
    return gw.openai()


def _deltas(events) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_text.delta")


class TestResponsesStream:
    def test_a_card_split_over_deltas_is_redacted_everywhere_the_text_appears(self, client):
        events = list(client.responses.create(model="resp-redact", input="read it", stream=True))
        assert _deltas(events) == REDACTED
        assert all(CARD not in str(e.model_dump()) for e in events)
        done = {e.type: e for e in events}
        assert done["response.output_text.done"].text == REDACTED
        assert done["response.content_part.done"].part.text == REDACTED
        assert done["response.output_item.done"].item.content[0].text == REDACTED
        final = events[-1]
        assert final.type == "response.completed" and final.response.output_text == REDACTED
        assert final.response.model == "resp-redact"
        assert [e.sequence_number for e in events] == list(range(len(events)))

    def test_a_block_ends_the_stream_incomplete_for_content_filter(self, client):
        events = list(client.responses.create(model="resp-block", input="read it", stream=True))
        assert all("1111" not in str(e.model_dump()) for e in events)
        final = events[-1]
        assert final.type == "response.incomplete"
        assert final.response.status == "incomplete"
        assert final.response.incomplete_details.reason == "content_filter"
        assert _deltas(events) == PREFIX[:len(_deltas(events))]

    def test_without_a_profile_events_pass_with_the_clients_model_name(self, client):
        events = list(client.responses.create(model="resp-open", input="read it", stream=True))
        assert _deltas(events) == TEXT
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[0].response.model == "resp-open" and events[-1].response.model == "resp-open"
        assert events[-1].response.usage.output_tokens == 9


class TestSeveralChoices:
    def test_each_choice_is_held_and_redacted_apart(self, client):
        texts: dict[int, str] = {}
        finishes: dict[int, str] = {}
        for c in client.chat.completions.create(model="n2-redact", n=2, stream=True,
                                                messages=[{"role": "user", "content": "read it"}]):
            for choice in c.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert texts == {0: REDACTED, 1: REDACTED.replace(PREFIX, PREFIX.upper()).replace(
            " and that is all.", " AND THAT IS ALL.")}
        assert finishes == {0: "stop", 1: "stop"}

    def test_a_block_ends_every_open_choice_with_content_filter(self, client):
        seen, finishes = "", {}
        for c in client.chat.completions.create(model="n2-block", n=2, stream=True,
                                                messages=[{"role": "user", "content": "read it"}]):
            for choice in c.choices:
                seen += choice.delta.content or ""
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        assert "1111" not in seen
        assert finishes == {0: "content_filter", 1: "content_filter"}


class TestToolCalls:
    ASK = [{"role": "user", "content": "pay it"}]

    def test_the_arguments_of_a_whole_answer_are_redacted(self, client):
        answer = client.chat.completions.create(model="call-redact", messages=self.ASK)
        [call] = answer.choices[0].message.tool_calls
        assert json.loads(call.function.arguments) == {"card": "[REDACTED_CREDIT_CARD]"}

    def test_a_block_drops_the_tool_calls(self, client):
        choice = client.chat.completions.create(model="call-block", messages=self.ASK).choices[0]
        assert choice.finish_reason == "content_filter"
        assert choice.message.tool_calls is None and not choice.message.content

    def test_streamed_arguments_are_held_back_and_redacted(self, client):
        arguments, names = "", []
        for c in client.chat.completions.create(model="call-stream", messages=self.ASK, stream=True):
            for call in (c.choices[0].delta.tool_calls or ()) if c.choices else ():
                arguments += call.function.arguments or ""
                names += [call.function.name] if call.function.name else []
        assert names == ["pay"]
        assert json.loads(arguments) == {"note": PREFIX + "[REDACTED_CREDIT_CARD]"}
