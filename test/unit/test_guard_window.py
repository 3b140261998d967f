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
