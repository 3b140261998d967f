"""The output guardrail of a stream: text held back in windows, each scanned before it goes out.

``TextHold`` is one text being streamed: text collects until a window (``[gateway.guardrails]
stream_window_chars``) plus an overlap is held; the whole of it is scanned, the window goes out
(redacted if need be), and the overlap stays held, unredacted, with the next text, so a finding
across a window's edge (a card number split over chunks) is scanned whole before any of it leaves.
A block ends the stream: none of the flagged window's text goes out.

``StreamWindow`` holds OpenAI chunks (chat or completions) back through one ``TextHold`` per choice
(``n > 1`` streams each choice apart); ``guard.responses_window`` does the same for Responses events.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.guard.guardrails import Guardrail, GuardrailFailureError, Scan

__all__ = ["StreamWindow", "TextHold"]

#: Characters kept back from each window for the next scan: longer than any one finding should be.
OVERLAP = 64


class TextHold:
    """One streamed text (a choice, a Responses content part): ``add`` what arrives, send what it
    returns; ``flush`` at the text's end. ``blocked`` once a window was flagged."""

    __slots__ = ("_guardrail", "_scan", "_size", "_overlap", "_cap", "held", "_scanned", "blocked", "redacted")

    def __init__(self, guardrail: Guardrail, size: int, overlap: int = OVERLAP, scan: Scan | None = None) -> None:
        self._guardrail = guardrail
        #: The stream's one scan record: every window's verdict counted into it.
        self._scan = scan
        self._size = size
        self._overlap = overlap
        #: Past ``_cap`` held characters a window goes out final (a finding still open at its end is
        #: taken as it is: a bounded hold, bounded work).
        self._cap = 4 * (size + overlap)
        self.held = ""
        #: How much was held at the last scan.
        self._scanned = 0
        self.blocked = False
        #: Whether any window was redacted.
        self.redacted = False

    def add(self, text: str) -> str:
        """Hold ``text``; what may go out now ("" for nothing yet)."""
        self.held += text
        held = len(self.held)
        # NOTE: scan again only once a window's worth has come since the last scan, so text held
        # behind a finding that has not ended yet is not rescanned at every chunk.
        if held >= self._size + self._overlap and held - self._scanned >= self._size:
            return self._release(final=held >= self._cap)
        return ""

    def flush(self) -> str:
        """The text ended: what is still held, scanned."""
        return self._release(final=True) if self.held else ""

    def _release(self, *, final: bool) -> str:
        held = self.held
        self._scanned = len(held)
        cut = len(held) if final else max(len(held) - self._overlap, 0)
        started = time.monotonic()
        try:
            verdict, cut = self._guardrail.check_window(held, cut)
        except GuardrailFailureError:
            verdict = None  # fail_fast: a window no guardrail could check never goes out
        if self._scan is not None:
            self._scan.add(verdict, time.monotonic() - started)
        if verdict is None or verdict.blocked:
            self.blocked = True
            self.held = ""
            return ""
        out = verdict.texts[0]
        self.redacted = self.redacted or out != held[:cut]
        self.held = held[cut:]
        self._scanned = len(self.held)
        return out


class StreamWindow:
    """For OpenAI chunks: chat (``choices[i].delta.content``) or completions (``choices[i].text``)."""

    def __init__(self, guardrail: Guardrail, size: int, overlap: int = OVERLAP, scan: Scan | None = None) -> None:
        self._hold = lambda: TextHold(guardrail, size, overlap, scan)
        #: Per choice index: its hold and the last chunk that carried its text (the envelope of what
        #: a window sends).
        self._holds: dict[Any, TextHold] = {}
        self._templates: dict[Any, dict] = {}
        #: Choices that have finished: a blocked stream's last chunk ends only the others.
        self._finished: set[Any] = set()
        self.blocked = False

    @property
    def redacted(self) -> bool:
        return any(hold.redacted for hold in self._holds.values())

    def feed(self, chunk: dict) -> list[dict]:
        """The chunks to send now for ``chunk`` (maybe none: its text is held)."""
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            # A chunk of no choice (usage): everything held goes first, whole.
            out = self._flush_all()
            return out if self.blocked else out + [chunk]
        if len(choices) > 1:
            out = []
            for choice in choices:
                out += self.feed({**chunk, "choices": [choice]})
                if self.blocked:
                    break
            return out
        choice = choices[0] if isinstance(choices[0], dict) else {}
        index = choice.get("index", 0)
        hold = self._holds.get(index)
        if hold is None:
            hold = self._holds[index] = self._hold()
        text = _text(choice)
        boundary = choice.get("finish_reason") is not None or _more_than_text(choice)
        if text:
            self._templates[index] = chunk
            released = hold.add(text)
        elif not boundary:
            # No text and nothing else (a role, an empty delta): it goes out only before any text is
            # held, and never forces out what is held.
            return [] if hold.held else [chunk]
        else:
            released = ""
        if not boundary:
            return self._sent(index, hold, released)
        # A real boundary (tool calls, a finish): what is held goes first, whole.
        out = self._sent(index, hold, released + hold.flush())
        if self.blocked:
            return out
        if choice.get("finish_reason") is not None:
            self._finished.add(index)
        return out + [_with_text(chunk, None) if text else chunk]

    def close(self) -> list[dict]:
        """The upstream ended: what is still held, scanned."""
        return self._flush_all()

    def _flush_all(self) -> list[dict]:
        out: list[dict] = []
        for index, hold in self._holds.items():
            out += self._sent(index, hold, hold.flush())
            if self.blocked:
                return []
        return out

    def _sent(self, index: Any, hold: TextHold, text: str) -> list[dict]:
        if hold.blocked:
            self.blocked = True
            return []
        template = self._templates.get(index)
        return [_text_chunk(template, text)] if text and template is not None else []

    def blocked_chunk(self) -> dict:
        """The last chunk of a blocked stream: every choice not yet finished ends ``content_filter``."""
        open_ = [i for i in self._holds if i not in self._finished] or [0]
        template = next(iter(self._templates.values()), None) or {
            "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}]}
        chunk = _with_text(template, None)
        first = chunk["choices"][0]
        chunk["choices"] = [{**first, "index": i, "finish_reason": "content_filter", "logprobs": None}
                            for i in open_]
        return chunk


def _text(choice: dict) -> str | None:
    delta = choice.get("delta")
    value = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return value if isinstance(value, str) else None


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
    index = choice.get("index", 0)
    if isinstance(choice.get("delta"), dict):
        chunk["choices"] = [{"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]
    else:
        chunk["choices"] = [{"index": index, "text": text, "logprobs": None, "finish_reason": None}]
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
