"""What the local guardrail costs: a 2 KB prompt (the guardrails issue's budget: 0.2 ms), and a
stream's hold-back window per chunk, in this process (no server: the scans themselves).

    .venv/bin/python bench/guard.py

The hold-back also delays text by construction: nothing of a stream's text goes out before a window
plus the overlap (``stream_window_chars`` + 64 characters) has arrived, or the stream has ended.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.schema import GuardProviderConfig, GuardrailProfile  # noqa: E402
from gateway.guard.guardrails import Guardrail  # noqa: E402
from gateway.guard.pii import DETECTORS, LocalGuard  # noqa: E402
from gateway.guard.window import StreamWindow  # noqa: E402

PROSE = ("The quick brown fox jumps over the lazy dog in 2024, and then considers the meaning of life. " * 25)[:2048]
PII = ("Mail jane.doe@example.com or call +1 415-555-0132. Card 4111 1111 1111 1111, SSN 123-45-6789, "
       "host 10.0.0.1 or 2001:db8::1, key sk-abcdefghijklmnopqrstuvwxyz123456, ticket TKT-123456. ")
DENSE = (PROSE[:1600] + PII * 3)[:2048]
RUNS, LOOPS = 5, 2000


def median_us(fn) -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        for _ in range(LOOPS):
            fn()
        times.append((time.perf_counter() - t) / LOOPS * 1e6)
    return statistics.median(times)


def main() -> None:
    guard = LocalGuard(tuple(DETECTORS), {"ticket": "TKT-[0-9]{6}"}, ["project-x"])
    for name, text in (("2 KB of prose", PROSE), ("2 KB dense with PII", DENSE)):
        cost = median_us(lambda text=text: guard.redact(text, guard.findings(text)))
        print(f"local guardrail, {name:20} {cost:7.1f} µs")
    profile = GuardrailProfile("p", frozenset({"output"}), (GuardProviderConfig("local", "local", {
        "pii": tuple(DETECTORS), "action": "redact", "patterns": {}, "deny_words": ()}),))
    guardrail = Guardrail(profile)
    words = PROSE.split(" ")
    chunks = [{"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w + " "},
                                                                          "finish_reason": None}]} for w in words]

    def stream() -> None:
        window = StreamWindow(guardrail, 50)
        for chunk in chunks:
            window.feed(chunk)
        window.close()

    per_stream = median_us(stream) if LOOPS else 0.0
    print(f"hold-back window (50 + 64 chars): {per_stream / len(chunks):.1f} µs a chunk "
          f"({len(chunks)} chunks of one word, {json.dumps(len(PROSE))} characters)")


if __name__ == "__main__":
    main()
