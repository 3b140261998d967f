"""Guardrail profiles made runnable: each provider built once, and a profile's verdict on texts.

The ``local`` providers run first, in order: one whose ``action`` is ``block`` and that finds anything
blocks; one whose action is ``redact`` rewrites what it found, and the next reads the rewritten text.
Then the remote ones (``openai``, ``azure_content_safety``) on the texts as they would go on: all at once with
``execution_mode = "parallel"``, one after another with ``"sequential"``; any that flags blocks. A
remote provider that cannot answer lets the text through under ``failure_mode = "best_effort"``
(counted), and fails the request under ``"fail_fast"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import gevent

from gateway.config.schema import GuardrailProfile
from gateway.errors import GatewayError
from gateway.guard.moderation import AzureContentSafety, GuardrailUnavailable, OpenAIModeration, RemoteGuard
from gateway.guard.pii import LocalGuard
from providers.credentials import Secret
from providers.http import UpstreamClient

__all__ = ["Guardrail", "GuardrailFailureError", "Scan", "Verdict", "build_guardrails"]

log = logging.getLogger(__name__)


class GuardrailFailureError(GatewayError):
    """A guardrail of a ``fail_fast`` profile could not give a verdict."""

    status, type, code = 502, "server_error", "guardrail_failure"


class Verdict:
    """What a profile made of some texts: ``blocked``, or the texts as they may go on (redacted or not)."""

    __slots__ = ("blocked", "texts", "redacted", "kinds", "score")

    def __init__(self, blocked: bool, texts: list[str], redacted: bool, kinds: list[str], score: float = 0.0) -> None:
        self.blocked = blocked
        self.texts = texts
        self.redacted = redacted
        #: What was found, by kind (email, credit_card, pattern:NAME, deny_word, moderation:CATEGORY, ...).
        self.kinds = kinds
        #: How sure: 1 for a local finding, a moderation category's score, 0 for nothing found.
        self.score = score


class Scan:
    """One scan for the ``GuardrailInference`` rows: which profile, on what, what it found and did."""

    __slots__ = ("profile", "guard_type", "flagged", "score", "kinds", "action", "latency_ms", "started_at")

    def __init__(self, profile: str, guard_type: str, started_at: float) -> None:
        self.profile = profile
        self.guard_type = guard_type
        self.started_at = started_at
        self.flagged = False
        self.score = 0.0
        self.kinds: list[str] = []
        #: "passed", "redacted" or "blocked" ("failed": no provider could answer under fail_fast).
        self.action = "passed"
        self.latency_ms = 0.0

    def add(self, verdict: Verdict | None, latency_s: float) -> None:
        """Count one verdict into the scan (None: the guardrail failed)."""
        self.latency_ms += latency_s * 1000.0
        if verdict is None:
            self.action = "failed"
            return
        self.kinds += verdict.kinds
        self.score = max(self.score, verdict.score)
        self.flagged = self.flagged or verdict.blocked or verdict.redacted or bool(verdict.kinds)
        if verdict.blocked:
            self.action = "blocked"
        elif verdict.redacted and self.action == "passed":
            self.action = "redacted"


class Guardrail:
    """``failed(profile_id)`` counts a remote provider that could not answer (best effort)."""

    def __init__(self, profile: GuardrailProfile, http: UpstreamClient | None = None,
                 failed: Callable[[str], None] | None = None, store: Mapping[str, Secret] | None = None) -> None:
        self.id = profile.id
        self.guard_types = profile.guard_types
        self._providers = [(LocalGuard(p.options["pii"], p.options["patterns"], p.options["deny_words"]),
                            p.options["action"]) for p in profile.providers if p.type == "local"]
        self._remote: list[RemoteGuard] = [
            OpenAIModeration(p.name, p.options, http, profile.severity_threshold, store) if p.type == "openai"
            else AzureContentSafety(p.name, p.options, http, store)
            for p in profile.providers if p.type in ("openai", "azure_content_safety")]
        self._parallel = profile.execution_mode == "parallel"
        self._fail_fast = profile.failure_mode == "fail_fast"
        self._failed = failed or (lambda profile_id: None)

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
                    return Verdict(True, texts, redacted, kinds, 1.0)
                texts[i] = guard.redact(text, findings)
                redacted = True
        if self._remote:
            flagged = self._ask_remote(texts)
            if flagged:
                return Verdict(True, texts, redacted, kinds + [k for k, _ in flagged], max(v for _, v in flagged))
        return Verdict(False, texts, redacted, kinds, 1.0 if kinds else 0.0)

    def check_window(self, text: str, cut: int) -> tuple[Verdict, int]:
        """A stream's held ``text``, of which ``text[:cut]`` is to go out: the verdict (its one text is
        what goes out) and where that ends in ``text``. A blocking finding anywhere in the held text
        blocks; redactions act on the findings that end before the cut; while a finding runs across
        the cut nothing goes out (the window waits for more text); and what stays held is kept as it
        came, so the next scan sees a finding whole (a card is never half of it taken for a phone)."""
        findings = [(f, action) for guard, action in self._providers for f in guard.findings(text)]
        # A block acts on any finding held, but for one that reaches the end of what has arrived
        # (more may follow: a longer number, a longer word), unless the stream has ended.
        final = cut == len(text)
        blocking = [f.kind for f, action in findings if action == "block" and (final or f.end < len(text))]
        if blocking:
            return Verdict(True, [""], False, blocking, 1.0), cut
        if any(f.start < cut < f.end for f, _ in findings):
            return Verdict(False, [""], False, []), 0
        acting = sorted((f for f, action in findings if action == "redact" and f.end <= cut),
                        key=lambda f: (f.start, -f.end))
        kept = []
        for f in acting:
            if not kept or f.start >= kept[-1].end:
                kept.append(f)
        out = LocalGuard.redact(text[:cut], kept) if kept else text[:cut]
        kinds = [f.kind for f in kept]
        if self._remote and out:
            flagged = self._ask_remote([out])
            if flagged:
                return Verdict(True, [""], False, kinds + [k for k, _ in flagged], max(v for _, v in flagged)), cut
        return Verdict(False, [out], bool(kept), kinds, 1.0 if kept else 0.0), cut

    def _ask_remote(self, texts: list[str]) -> list[tuple[str, float]]:
        def one(provider: RemoteGuard) -> tuple[list[tuple[str, float]], bool]:
            """(what it flagged, whether it failed): never raises, so a parallel call fails nowhere else."""
            try:
                return provider.flagged(texts), False
            except GuardrailUnavailable as e:
                log.warning("guardrail %s/%s could not answer: %s", self.id, provider.name, e)
                self._failed(self.id)
                return [], True

        if not self._parallel or len(self._remote) == 1:
            answers = []
            for provider in self._remote:
                answers.append(one(provider))
                if answers[-1][0] or answers[-1][1] and self._fail_fast:
                    break
        else:
            jobs = [gevent.spawn(one, provider) for provider in self._remote]
            try:
                gevent.joinall(jobs)
            finally:
                gevent.killall(jobs, block=False)  # the request's greenlet left: its calls go with it
            answers = [job.value for job in jobs if job.successful()]
        flagged = [found for result, _ in answers for found in result]
        if not flagged and self._fail_fast and any(failed for _, failed in answers):
            raise GuardrailFailureError(f"The guardrail {self.id} could not check the content")
        return flagged


def build_guardrails(profiles: Mapping[str, GuardrailProfile], http: UpstreamClient | None = None,
                     failed: Callable[[str], None] | None = None,
                     store: Mapping[str, Secret] | None = None) -> dict[str, Guardrail]:
    return {profile_id: Guardrail(profile, http, failed, store) for profile_id, profile in profiles.items()}
