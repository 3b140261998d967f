"""Guardrail profiles made runnable: each provider compiled once, and a profile's verdict on texts.

Only the ``local`` provider runs so far (the config refuses the others at start, by key path). Its
providers run in order over the texts: a provider whose ``action`` is ``block`` and that finds
anything blocks; one whose action is ``redact`` rewrites what it found, and the next one reads the
rewritten text.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.schema import GuardrailProfile
from gateway.guard.pii import LocalGuard

__all__ = ["Guardrail", "Verdict", "build_guardrails"]


class Verdict:
    """What a profile made of some texts: ``blocked``, or the texts as they may go on (redacted or not)."""

    __slots__ = ("blocked", "texts", "redacted", "kinds")

    def __init__(self, blocked: bool, texts: list[str], redacted: bool, kinds: list[str]) -> None:
        self.blocked = blocked
        self.texts = texts
        self.redacted = redacted
        #: What was found, by kind (email, credit_card, pattern:NAME, deny_word, ...).
        self.kinds = kinds


class Guardrail:
    def __init__(self, profile: GuardrailProfile) -> None:
        self.id = profile.id
        self.guard_types = profile.guard_types
        self._providers = [(LocalGuard(p.options["pii"], p.options["patterns"], p.options["deny_words"]),
                            p.options["action"]) for p in profile.providers if p.type == "local"]

    @property
    def scans_input(self) -> bool:
        return "input" in self.guard_types

    @property
    def scans_output(self) -> bool:
        return "output" in self.guard_types

    def check(self, texts: list[str]) -> Verdict:
        texts = list(texts)
        redacted = False
        kinds: list[str] = []
        for guard, action in self._providers:
            for i, text in enumerate(texts):
                findings = guard.findings(text)
                if not findings:
                    continue
                kinds += [f.kind for f in findings]
                if action == "block":
                    return Verdict(True, texts, redacted, kinds)
                texts[i] = guard.redact(text, findings)
                redacted = True
        return Verdict(False, texts, redacted, kinds)


def build_guardrails(profiles: Mapping[str, GuardrailProfile]) -> dict[str, Guardrail]:
    return {profile_id: Guardrail(profile) for profile_id, profile in profiles.items()}
