"""The local guardrail's detectors: what each finds and what it must not, and redaction."""

from __future__ import annotations

import pytest

from gateway.guard.pii import LocalGuard

ALL = LocalGuard(patterns={"ticket": "TKT-[0-9]{6}"}, deny_words=["project-x", "Blue Moon"])


def kinds(text: str, guard: LocalGuard = ALL) -> list[tuple[str, str]]:
    return [(f.kind, text[f.start:f.end]) for f in guard.findings(text)]


@pytest.mark.parametrize(("text", "found"), [
    ("write to jane.doe+ai@mail.example.co.uk today", [("email", "jane.doe+ai@mail.example.co.uk")]),
    ("call +1 415-555-0132 now", [("phone", "+1 415-555-0132")]),
    ("or (415) 555-0199", [("phone", "(415) 555-0199")]),
    ("card 4111 1111 1111 1111 ok", [("credit_card", "4111 1111 1111 1111")]),
    ("card 4111-1111-1111-1111", [("credit_card", "4111-1111-1111-1111")]),
    ("ssn 123-45-6789", [("ssn", "123-45-6789")]),
    ("host 192.168.1.20 up", [("ip", "192.168.1.20")]),
    ("host 2001:db8::1 and ::1", [("ip", "2001:db8::1"), ("ip", "::1")]),
    ("key sk-proj-abcdefghijklmnopqrstuvwx12", [("secret", "sk-proj-abcdefghijklmnopqrstuvwx12")]),
    ("aws AKIAIOSFODNN7EXAMPLE", [("secret", "AKIAIOSFODNN7EXAMPLE")]),
    ("ref TKT-123456", [("pattern:ticket", "TKT-123456")]),
    ("about PROJECT-X and blue moon", [("deny_word", "PROJECT-X"), ("deny_word", "blue moon")]),
])
def test_each_detector_finds_its_kind(text, found):
    assert kinds(text) == found


@pytest.mark.parametrize("text", [
    "a number 4111 1111 1111 1112 that fails Luhn",  # neither a card nor a phone
    "at 12:30:45 on 2024-05-06",
    "dead:beef is not an address",
    "version 1.2.3.4.5 and 999.1.1.1",
    "ssn-like 000-12-3456 and 666-12-3456",
    "task-manager ask-me projects-xyz",
    "email@ without a domain, and a@b",
    "order 12345 for 3 items",
])
def test_what_is_not_pii(text):
    assert kinds(text) == []


def test_redaction_names_each_kind():
    guard = LocalGuard()
    text = "mail a@example.com, card 4111 1111 1111 1111, ip 10.0.0.1"
    assert guard.redact(text, guard.findings(text)) == (
        "mail [REDACTED_EMAIL], card [REDACTED_CREDIT_CARD], ip [REDACTED_IP]")
    assert ALL.redact("TKT-000001", ALL.findings("TKT-000001")) == "[REDACTED_TICKET]"


def test_only_the_chosen_detectors_run():
    assert kinds("a@example.com 10.0.0.1", LocalGuard(pii=["ip"])) == [("ip", "10.0.0.1")]


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"pii": ["passport"]}, 'unknown detector "passport"'),
    ({"patterns": {"bad name": "x"}}, "a name of letters"),
    ({"patterns": {"bad": "("}}, "not a regex"),
])
def test_bad_settings_say_why(kwargs, reason):
    with pytest.raises(ValueError, match=reason):
        LocalGuard(**kwargs)
