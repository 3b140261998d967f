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


def test_several_choices_fail_closed():
    window = StreamWindow(guardrail(), 50)
    assert window.feed({"choices": [{"index": 1, "delta": {"content": CARD}}]}) == [] and window.blocked


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
