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
#: What emails, keys, addresses and tokens are written with: a window is never cut inside a run of
#: them, so a long one (an email's local part may be 64 characters) is scanned whole.
_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-@/=:")


def _token_start(text: str, cut: int) -> int:
    """``cut``, moved back to the start of the token it would split (0: the held text is one token)."""
    if cut >= len(text) or text[cut] not in _TOKEN:
        return cut
    while cut > 0 and text[cut - 1] in _TOKEN:
        cut -= 1
    return cut


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
        cut = len(held) if final else _token_start(held, max(len(held) - self._overlap, 0))
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


#: The texts of a chat delta held back (besides tool-call arguments); a completions choice has ``text``.
_CHAT_FIELDS = ("content", "reasoning_content", "refusal")
_TEXT_FIELDS = ("text",)


class StreamWindow:
    """For OpenAI chunks: chat (``choices[i].delta``: its content, reasoning, refusal and tool-call
    arguments) or completions (``choices[i].text``). Each text of each choice has its own hold; a
    chunk carrying one text first lets out what the choice holds of the others, so the client gets
    them in the order they came, and a finish lets out everything the choice holds."""

    def __init__(self, guardrail: Guardrail, size: int, overlap: int = OVERLAP, scan: Scan | None = None) -> None:
        self._hold = lambda: TextHold(guardrail, size, overlap, scan)
        #: Per (choice index, text): its hold; a text is a field name, or a tool call's index.
        self._holds: dict[tuple[Any, Any], TextHold] = {}
        #: Per choice index: its last chunk (the envelope of what a flush sends).
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
            out = self.close()
            return out if self.blocked else out + [chunk]
        out: list[dict] = []
        for choice in choices:
            if isinstance(choice, dict):
                out += self._feed_choice({**chunk, "choices": [choice]}, choice)
            if self.blocked:
                return []
        return out

    def _feed_choice(self, chunk: dict, choice: dict) -> list[dict]:
        index = choice.get("index", 0)
        delta = choice.get("delta")
        chat = isinstance(delta, dict)
        holder = delta if chat else choice
        texts = {field: holder[field] for field in (_CHAT_FIELDS if chat else _TEXT_FIELDS)
                 if isinstance(holder.get(field), str) and holder[field]}
        calls = _call_arguments(delta) if chat else {}
        finish = choice.get("finish_reason") is not None
        self._templates[index] = chunk
        if not texts and not calls and not finish and not _more_than_text(choice):
            # No text and nothing else (a role, an empty delta): it goes out only before any text is
            # held, and never forces out what is held.
            return [] if self._holding(index) else [chunk]
        out = []
        for (i, key), hold in self._holds.items():
            if i == index and key not in texts and key not in calls and hold.held:
                out += self._flushed(index, key, hold.flush())
        released_texts, released_calls = {}, {}
        for key, text in (*texts.items(), *calls.items()):
            hold = self._holds.get((index, key))
            if hold is None:
                hold = self._holds[(index, key)] = self._hold()
            released = hold.add(text) + (hold.flush() if finish else "")
            if hold.blocked:
                self.blocked = True
                return []
            (released_texts if key in texts else released_calls)[key] = released
        if finish:
            self._finished.add(index)
        sent = _rewritten(chunk, choice, released_texts, released_calls)
        return out + ([sent] if sent is not None else [])

    def _holding(self, index: Any) -> bool:
        return any(hold.held for (i, _), hold in self._holds.items() if i == index)

    def close(self) -> list[dict]:
        """The upstream ended (or a chunk of no choice came): everything held, scanned."""
        out: list[dict] = []
        for (index, key), hold in self._holds.items():
            out += self._flushed(index, key, hold.flush())
            if hold.blocked:
                self.blocked = True
                return []
        return out

    def _flushed(self, index: Any, key: Any, text: str) -> list[dict]:
        """A chunk of one held text, in the envelope of the choice's last chunk."""
        template = self._templates.get(index)
        if not text or template is None:
            return []
        chunk = {k: template[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in template}
        if isinstance(key, int):
            choice = {"index": index, "delta": {"tool_calls": [{"index": key, "function": {"arguments": text}}]}}
        elif key == "text":
            choice = {"index": index, "text": text}
        else:
            choice = {"index": index, "delta": {key: text}}
        chunk["choices"] = [{**choice, "logprobs": None, "finish_reason": None}]
        return [chunk]

    def blocked_chunk(self) -> dict:
        """The last chunk of a blocked stream: every choice not yet finished ends ``content_filter``."""
        open_ = [i for i in self._templates if i not in self._finished] or [0]
        template = next(iter(self._templates.values()), None) or {"object": "chat.completion.chunk"}
        chunk = {k: template[k] for k in ("id", "object", "created", "model", "system_fingerprint") if k in template}
        chat = chunk.get("object") != "text_completion"
        chunk["choices"] = [{"index": i, **({"delta": {}} if chat else {"text": ""}), "logprobs": None,
                             "finish_reason": "content_filter"} for i in open_]
        return chunk


def _call_arguments(delta: dict) -> dict[int, str]:
    """The argument text of each tool call in a chat delta, by the call's index."""
    calls = delta.get("tool_calls")
    out = {}
    for position, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, str) and arguments:
            index = call.get("index", position)
            out[index if isinstance(index, int) else position] = arguments
    return out


def _more_than_text(choice: dict) -> bool:
    """Whether a chunk carries more than its texts (a tool call's name, say): it then goes out."""
    delta = choice.get("delta")
    return isinstance(delta, dict) and any(v not in (None, "", [], {}) for k, v in delta.items()
                                           if k not in _CHAT_FIELDS and k != "role")


def _rewritten(chunk: dict, choice: dict, texts: dict[str, str], calls: dict[int, str]) -> dict | None:
    """``chunk`` with its texts replaced by what may go out of them; None when nothing is left to send."""
    choice = dict(choice)
    if texts or calls:
        # NOTE: the logprobs spell out the held text token by token: they go with it.
        choice["logprobs"] = None
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        if "text" in texts:
            choice["text"] = texts["text"]
        if not choice.get("text") and choice.get("finish_reason") is None:
            return None
        return {**chunk, "choices": [choice]}
    delta = dict(delta)
    for field in _CHAT_FIELDS:
        if field in texts:
            if texts[field]:
                delta[field] = texts[field]
            else:
                delta.pop(field)
    if calls:
        kept = []
        for position, call in enumerate(delta.get("tool_calls") or ()):
            index = call.get("index", position) if isinstance(call, dict) else position
            if not isinstance(call, dict) or index not in calls:
                kept.append(call)
                continue
            function = {**call["function"], "arguments": calls[index]}
            call = {**call, "function": function}
            if calls[index] or any(k not in ("index", "function") for k in call) or len(function) > 1:
                kept.append(call)
        if kept:
            delta["tool_calls"] = kept
        else:
            delta.pop("tool_calls")
    choice["delta"] = delta
    if not any(v not in (None, "", [], {}) for k, v in delta.items() if k != "role") and \
            choice.get("finish_reason") is None:
        return None
    return {**chunk, "choices": [choice]}
