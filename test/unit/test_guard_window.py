"""The stream hold-back and the texts guardrails read, without sockets: the edges a review found."""

from __future__ import annotations

from types import MappingProxyType

from gateway.config.schema import GuardProviderConfig, GuardrailProfile
from gateway.guard.guardrails import Guardrail
from gateway.guard.pii import DETECTORS, LocalGuard
from gateway.guard.rules import RuleSet, parse_rule
from gateway.guard.texts import answer_slots, request_slots
from gateway.guard.window import StreamWindow

CARD = "4111 1111 1111 1111"


class CountingGuardrail(Guardrail):
    scans = 0

    def check_window(self, text, cut):
        self.scans += 1
        return super().check_window(text, cut)


def guardrail(action: str = "redact") -> CountingGuardrail:
    opts = MappingProxyType({"pii": list(DETECTORS), "action": action, "patterns": {}, "deny_words": []})
    return CountingGuardrail(GuardrailProfile("p", frozenset({"output"}), (GuardProviderConfig("l", "local", opts),)))


def chunk(content, **delta) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": content, **delta}, "logprobs": {"content": [{"token": str(content)}]},
         "finish_reason": None}]}


def stream(pieces, guard=None, **delta) -> tuple[str, list[dict]]:
    window = StreamWindow(guard or guardrail(), 50)
    out = []
    for piece in pieces:
        out += window.feed(chunk(piece, **delta))
    out += window.feed({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out += window.close()
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in out), out


def test_an_empty_delta_does_not_release_half_a_card():
    text, _ = stream(["x" * 70, "4111 1111", "", " 1111 1111", " end"])
    assert text == "x" * 70 + "[REDACTED_CREDIT_CARD] end"


def test_empty_tool_calls_on_every_chunk_are_not_a_boundary():
    text, _ = stream(["x" * 70, "4111 11", "11 1111 ", "1111", " end"], tool_calls=[])
    assert CARD not in text and "[REDACTED_CREDIT_CARD]" in text


def test_released_text_carries_no_logprobs_of_what_it_replaced():
    _, out = stream([f"card {CARD} done"])
    assert all(c["choices"][0].get("logprobs") is None for c in out)


def test_text_held_behind_an_open_finding_is_bounded_and_not_rescanned_per_chunk():
    guard = guardrail()
    text, _ = stream(["sk-"] + ["A" * 10] * 2000, guard)
    assert text.startswith("[REDACTED_SECRET]")
    assert guard.scans < 2000 / 5, guard.scans


def choice_chunk(index, content=None, finish=None) -> dict:
    delta = {} if content is None else {"content": content}
    return {"id": "c", "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


def texts_by_choice(out) -> dict:
    texts: dict = {}
    for c in out:
        for choice in c["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + (choice["delta"].get("content") or "")
    return texts


def test_several_choices_are_held_apart():
    window = StreamWindow(guardrail(), 50)
    out = []
    # Interleaved the way OpenAI sends n > 1: one choice per chunk; each choice has half a card.
    for piece in ("x" * 60, "4111 1111", " 1111 1111", " end"):
        out += window.feed(choice_chunk(0, piece))
        out += window.feed(choice_chunk(1, piece.replace("x", "y")))
    out += window.feed(choice_chunk(0, finish="stop")) + window.feed(choice_chunk(1, finish="stop"))
    out += window.close()
    texts = texts_by_choice(out)
    assert texts == {0: "x" * 60 + "[REDACTED_CREDIT_CARD] end", 1: "y" * 60 + "[REDACTED_CREDIT_CARD] end"}
    assert [c["choices"][0]["finish_reason"] for c in out if c["choices"][0]["finish_reason"]] == ["stop", "stop"]


def test_a_block_in_one_choice_ends_every_open_choice():
    window = StreamWindow(guardrail("block"), 50)
    out = window.feed(choice_chunk(0, "fine " * 20)) + window.feed(choice_chunk(0, finish="stop"))
    out += window.feed(choice_chunk(1, f"card {CARD} here"))
    out += window.feed(choice_chunk(2, "also fine"))
    out += window.close()
    assert window.blocked and CARD not in str(out)
    last = window.blocked_chunk()
    assert {c["index"]: c["finish_reason"] for c in last["choices"]} == {1: "content_filter", 2: "content_filter"}


def test_one_chunk_with_several_choices_is_split():
    window = StreamWindow(guardrail(), 50)
    both = {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"},
                                   {"index": 1, "delta": {"content": "b"}, "finish_reason": "stop"}]}
    out = window.feed(both) + window.close()
    assert texts_by_choice(out) == {0: "a", 1: "b"}


def test_texts_of_odd_bodies_and_responses_answers():
    assert request_slots({"messages": 5}, "chat") == []
    answer = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "mail a@b.co"}]}]}
    assert [holder[key] for (holder, key), _ in answer_slots(answer, "responses")] == ["mail a@b.co"]


def test_deny_words_match_in_any_case_even_beside_letters_whose_lowercase_is_longer():
    guard = LocalGuard(pii=[], deny_words=["project-x"])
    assert [f.kind for f in guard.findings("İ PROJECT-X now")] == ["deny_word"]


def test_a_glob_with_a_character_class_is_not_screened_away():
    rules = RuleSet([parse_rule({"id": "g", "rule_type": "USER_AGENT_BLOCKING",
                                 "config": {"patterns": ["*[abcdefgh]ot*"]}}, "t")])
    assert [m.rule.id for m in rules.matches("1.1.1.1", None, "Mozilla bot/1.0")] == ["g"]


def texts(slots) -> list[str]:
    return [holder[key] for holder, key in slots]


def test_request_texts_beyond_messages():
    chat = {"messages": [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": '{"to": "a@b.co"}'}}]},
        {"role": "tool", "tool_call_id": "t", "content": "sent to a@b.co"}]}
    assert texts(request_slots(chat, "chat")) == ['{"to": "a@b.co"}', "sent to a@b.co"]
    claude = {"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {"to": ["a@b.co"], "n": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": [{"type": "text", "text": "ok a@b.co"}]}]}]}
    assert texts(request_slots(claude, "chat", "anthropic")) == ["a@b.co", "ok a@b.co"]
    responses = {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                           {"type": "function_call_output", "call_id": "c", "output": "a@b.co"}]}
    assert texts(request_slots(responses, "responses")) == ["{}", "a@b.co"]
    assert texts(request_slots({"prompt": "a cat at a@b.co"}, "image_generation")) == ["a cat at a@b.co"]
    assert texts(request_slots({"input": "say a@b.co", "voice": "x"}, "text_to_speech")) == ["say a@b.co"]
    assert request_slots({"prompt": [1, 2, 3]}, "completions") == []


def test_answer_texts_beyond_content():
    answer = {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": None, "refusal": "no", "reasoning_content": "think",
        "tool_calls": [{"id": "t", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]}
    assert [holder[key] for (holder, key), _ in answer_slots(answer, "chat")] == ["no", "think", "{}"]
    claude = {"content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "hi"},
                          {"type": "tool_use", "id": "t", "name": "f", "input": {"q": "x"}}]}
    assert [holder[key] for (holder, key), _ in answer_slots(claude, "chat", "anthropic")] == ["hmm", "hi", "x"]
    responses = {"output": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "s"}]},
                            {"type": "function_call", "arguments": '{"a": 1}'}]}
    assert [holder[key] for (holder, key), _ in answer_slots(responses, "responses")] == ["s", '{"a": 1}']


def call_chunk(arguments, index=0, **call) -> dict:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": index, **call, "function": {"arguments": arguments, **call.pop("function", {})}}]},
        "finish_reason": None}]}


def test_tool_call_arguments_are_held_and_redacted():
    window = StreamWindow(guardrail(), 50)
    out = window.feed(call_chunk("", id="call_1", type="function", function={"name": "pay"}))
    for piece in ('{"note": "' + "x" * 60, "4111 11", "11 1111 ", "1111", ' thanks"}'):
        out += window.feed(call_chunk(piece))
    out += window.feed({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    out += window.close()
    calls = [call for c in out for call in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls[0]["id"] == "call_1" and calls[0]["function"]["name"] == "pay"
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert arguments == '{"note": "' + "x" * 60 + '[REDACTED_CREDIT_CARD] thanks"}'
    assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_reasoning_then_content_keep_their_order():
    window = StreamWindow(guardrail(), 50)
    out = []
    for piece in ("let me think ", "about it"):
        out += window.feed({"id": "c", "choices": [{"index": 0, "delta": {"reasoning_content": piece}}]})
    out += window.feed(chunk("The answer is 4."))
    out += window.feed({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    fields = [(k, v) for c in out for k, v in c["choices"][0]["delta"].items() if v]
    assert fields == [("reasoning_content", "let me think about it"), ("content", "The answer is 4.")]


def test_a_card_in_tool_call_arguments_blocks():
    window = StreamWindow(guardrail("block"), 50)
    out = window.feed(call_chunk(f'{{"card": "{CARD}"}}'))
    out += window.close()
    assert window.blocked and CARD not in str(out)
    assert window.blocked_chunk()["choices"][0]["finish_reason"] == "content_filter"


def test_a_long_email_is_never_cut_at_a_window_edge():
    local = "a" * 80
    tail = " today, and then a few more words" * 4
    text = "x" * 20 + " write to " + local + "@example.com" + tail
    pieces = [text[i:i + 7] for i in range(0, len(text), 7)]
    out, _ = stream(pieces)
    assert local[:10] not in out and out == "x" * 20 + " write to [REDACTED_EMAIL]" + tail


def test_tensorzero_texts_on_every_route():
    openai_route = {"messages": [{"role": "user", "content": [
        {"type": "tensorzero::raw_text", "value": "raw a@b.co"},
        {"type": "tensorzero::template", "name": "t", "arguments": {"who": "c@d.co"}},
        {"type": "text", "tensorzero::arguments": {"x": "e@f.co"}}]}],
        "tensorzero::extra_body": [{"pointer": "/messages/-", "value": {"role": "user", "content": "g@h.co"}}]}
    assert texts(request_slots(openai_route, "chat")) == ["user", "g@h.co", "raw a@b.co", "c@d.co", "e@f.co"]
    native = {"input": {"messages": [{"role": "assistant", "content": [
        {"type": "tool_call", "id": "1", "name": "f", "raw_arguments": '{"a": "x@y.co"}'},
        {"type": "unknown", "data": {"type": "note", "text": "z@w.co"}}]}]}}
    assert texts(request_slots(native, "chat", "tensorzero")) == ['{"a": "x@y.co"}', "note", "z@w.co"]
