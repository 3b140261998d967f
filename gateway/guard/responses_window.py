"""The output guardrail of a Responses API stream: its text events held back in windows.

Each content part (``output_index``, ``content_index``) streams through its own ``TextHold``:
``response.output_text.delta`` and ``response.refusal.delta`` events are held and go out as one delta
per released window; every other event first lets out what is held, and the events that repeat the
text (``*.done``, the part, the item, the final response) carry what actually went out (redacted).
A block ends the stream with ``response.incomplete``, ``incomplete_details.reason = "content_filter"``,
OpenAI's own way of saying a response was cut by its content filter.
"""

from __future__ import annotations

from typing import Any

from gateway.guard.guardrails import Guardrail, Scan
from gateway.guard.window import OVERLAP, TextHold

__all__ = ["ResponsesWindow"]

#: The text events, and the field of their content part that holds the text.
_DELTAS = {"response.output_text.delta": "text", "response.refusal.delta": "refusal"}
_DONES = {"response.output_text.done": "text", "response.refusal.done": "refusal"}
_PART_FIELDS = {"output_text": "text", "refusal": "refusal"}


class ResponsesWindow:
    def __init__(self, guardrail: Guardrail, size: int, overlap: int = OVERLAP, scan: Scan | None = None) -> None:
        self._hold = lambda: TextHold(guardrail, size, overlap, scan)
        self._holds: dict[tuple[Any, Any], TextHold] = {}
        #: Per content part: the text that went out, and the last delta event (the envelope of the next).
        self._sent: dict[tuple[Any, Any], list[str]] = {}
        self._templates: dict[tuple[Any, Any], dict] = {}
        #: The last ``response`` object the stream showed: a blocked stream's last event is made of it.
        self._response: dict | None = None
        self.blocked = False

    @property
    def redacted(self) -> bool:
        return any(hold.redacted for hold in self._holds.values())

    def feed(self, event: dict) -> list[dict]:
        """The events to send now for ``event`` (maybe none: its text is held)."""
        kind = event.get("type")
        if kind in _DELTAS and isinstance(event.get("delta"), str):
            key = (event.get("output_index"), event.get("content_index"))
            hold = self._holds.get(key)
            if hold is None:
                hold = self._holds[key] = self._hold()
                self._sent[key] = []
            self._templates[key] = event
            return self._out(key, hold, hold.add(event["delta"]))
        out = self.close()
        if self.blocked:
            return []
        if isinstance(event.get("response"), dict):
            self._response = event["response"]
        self._rewrite(kind, event)
        return out + [event]

    def close(self) -> list[dict]:
        """The upstream ended (or a non-text event came): what is held, scanned."""
        out: list[dict] = []
        for key, hold in self._holds.items():
            out += self._out(key, hold, hold.flush())
            if self.blocked:
                return []
        return out

    def _out(self, key: tuple[Any, Any], hold: TextHold, text: str) -> list[dict]:
        if hold.blocked:
            self.blocked = True
            return []
        if not text:
            return []
        self._sent[key].append(text)
        return [{**self._templates[key], "delta": text, "logprobs": []}]

    def _text(self, output_index: Any, content_index: Any) -> str | None:
        sent = self._sent.get((output_index, content_index))
        return None if sent is None else "".join(sent)

    def _rewrite(self, kind: Any, event: dict) -> None:
        """The texts an event repeats, set to what went out."""
        if kind in _DONES:
            text = self._text(event.get("output_index"), event.get("content_index"))
            if text is not None:
                event[_DONES[kind]] = text
                event.pop("logprobs", None)
        elif kind in ("response.content_part.done", "response.content_part.added"):
            self._rewrite_part(event.get("part"), event.get("output_index"), event.get("content_index"))
        elif kind == "response.output_item.done":
            self._rewrite_item(event.get("item"), event.get("output_index"))
        elif isinstance(event.get("response"), dict):
            output = event["response"].get("output")
            for index, item in enumerate(output if isinstance(output, list) else ()):
                self._rewrite_item(item, index)

    def _rewrite_item(self, item: Any, output_index: Any) -> None:
        content = item.get("content") if isinstance(item, dict) else None
        for index, part in enumerate(content if isinstance(content, list) else ()):
            self._rewrite_part(part, output_index, index)

    def _rewrite_part(self, part: Any, output_index: Any, content_index: Any) -> None:
        if not isinstance(part, dict) or part.get("type") not in _PART_FIELDS:
            return
        text = self._text(output_index, content_index)
        if text is not None:
            part[_PART_FIELDS[part["type"]]] = text
            if part.get("logprobs"):
                part["logprobs"] = []

    def blocked_event(self) -> dict:
        """The last event of a blocked stream."""
        response = {**(self._response or {"object": "response"}), "status": "incomplete",
                    "incomplete_details": {"reason": "content_filter"}, "output": []}
        return {"type": "response.incomplete", "response": response}
