"""The output guardrail of a stream: delta text held back in windows, each scanned before it goes out.

Text collects until a window (``[gateway.guardrails] stream_window_chars``) plus an overlap is held;
the whole of it is scanned, the window goes out (redacted if need be) as one chunk, and the overlap
stays held, unredacted, with the next text, so a finding across a window's edge (a card number split
over chunks) is scanned whole before any of it leaves. A block ends the stream: none of the flagged
window's text goes out, and a last chunk says ``finish_reason: "content_filter"``.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.guard.guardrails import Guardrail, GuardrailFailureError, Scan

__all__ = ["StreamWindow"]

#: Characters kept back from each window for the next scan: longer than any one finding should be.
OVERLAP = 64


class StreamWindow:
    """For OpenAI chunks: chat (``choices[0].delta.content``) or completions (``choices[0].text``)."""

    def __init__(self, guardrail: Guardrail, size: int, overlap: int = OVERLAP, scan: Scan | None = None) -> None:
        self._guardrail = guardrail
        #: The stream's one scan record: every window's verdict counted into it.
        self._scan = scan
        self._size = size
        self._overlap = overlap
        self._held = ""
        #: How much was held at the last scan; past ``_cap`` held characters a window goes out final
        #: (a finding still open at its end is taken as it is: a bounded hold, bounded work).
        self._scanned = 0
        self._cap = 4 * (size + overlap)
        self._template: dict | None = None
        self.blocked = False
        #: Whether any window was redacted.
        self.redacted = False

    @staticmethod
    def _text(chunk: dict) -> tuple[dict | None, str | None]:
        """The chunk's one choice and its text; (None, None) for a chunk of no choice (usage)."""
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return None, None
        choice = choices[0] if isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            return choice, content if isinstance(content, str) else None
        text = choice.get("text")
        return choice, text if isinstance(text, str) else None

    def feed(self, chunk: dict) -> list[dict]:
        """The chunks to send now for ``chunk`` (maybe none: its text is held)."""
        if _several_choices(chunk.get("choices")):
            # NOTE: several choices (n > 1) are not held apart: fail closed rather than let one through.
            self.blocked = True
            return []
        choice, text = self._text(chunk)
        boundary = choice is None or choice.get("finish_reason") is not None or _more_than_text(choice)
        if text:
            self._template = chunk
            self._held += text
        elif not boundary:
            # No text and nothing else (a role, an empty delta): it goes out only before any text is
            # held, and never forces out what is held.
            return [] if self._held else [chunk]
        if not boundary:
            # NOTE: scan again only once a window's worth has come since the last scan, so text held
            # behind a finding that has not ended yet is not rescanned at every chunk.
            if len(self._held) >= self._size + self._overlap and len(self._held) - self._scanned >= self._size:
                return self._release(final=len(self._held) >= self._cap)
            return []
        # A real boundary (tool calls, a finish, usage): what is held goes first, whole.
        out = self._release(final=True) if self._held else []
        if self.blocked:
            return out
        return out + [_with_text(chunk, None) if text else chunk]

    def close(self) -> list[dict]:
        """The upstream ended: what is still held, scanned."""
        return self._release(final=True) if self._held else []

    def _release(self, *, final: bool) -> list[dict]:
        held = self._held
        self._scanned = len(held)
        cut = len(held) if final else max(len(held) - self._overlap, 0)
        started = time.monotonic()
        try:
            verdict, cut = self._guardrail.check_window(held, cut)
        except GuardrailFailureError:
            verdict = None  # fail_fast: a window no guardrail could check never goes out
        if self._scan is not None:
            self._scan.add(verdict, time.monotonic() - started)
        blocked = verdict is None or verdict.blocked
        out = "" if blocked else verdict.texts[0]
        if blocked:
            self.blocked = True
            self._held = ""
            return []
        self.redacted = self.redacted or out != held[:cut]
        self._held = held[cut:]
        self._scanned = len(self._held)
        return [_text_chunk(self._template, out)] if out and self._template is not None else []

    def blocked_chunk(self) -> dict:
        """The last chunk of a blocked stream."""
        template = self._template or {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}]}
        chunk = _with_text(template, None)
        chunk["choices"][0]["finish_reason"] = "content_filter"
        return chunk


def _several_choices(choices: Any) -> bool:
    if not isinstance(choices, list) or not choices:
        return False
    return len(choices) > 1 or isinstance(choices[0], dict) and choices[0].get("index", 0) not in (0, None)


def _more_than_text(choice: dict) -> bool:
    """Whether a chunk's delta carries more than text (tool calls, say): it then goes out at once."""
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(v not in (None, "", [], {}) for k, v in delta.items()
                                           if k not in ("content", "role"))


def _text_chunk(template: dict, text: str) -> dict[str, Any]:
    """A chunk of ``text`` alone, made from ``template``'s envelope: no finish, tool calls or logprobs of
    the chunk it came from (those go out with that chunk, once)."""
    chunk = {k: template[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in template}
    choice = template["choices"][0]
    if isinstance(choice.get("delta"), dict):
        chunk["choices"] = [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]
    else:
        chunk["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": None}]
    return chunk


def _with_text(template: dict, text: str | None) -> dict[str, Any]:
    """``template`` with its one choice's text set to ``text`` (None: no text at all)."""
    choice = dict(template["choices"][0])
    if isinstance(choice.get("delta"), dict):
        delta = dict(choice["delta"])
        if text is None:
            delta.pop("content", None)
        else:
            delta["content"] = text
        choice["delta"] = delta
    elif text is not None or "text" in choice:
        choice["text"] = text or ""
    return {**template, "choices": [choice]}
