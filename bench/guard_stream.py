"""What the output guardrail's hold-back adds to a stream: time to the first text, and the gap between
pieces of text, for one gateway serving the streaming mock as an unguarded model and as one whose
profile redacts PII in its output (``stream_window_chars`` 50 + the 64-character overlap).

    PATH=$PATH:/usr/sbin .venv/bin/python bench/guard_stream.py

The mock sends 40 chunks of "token " (6 characters) 5 ms apart. Streams alternate between the two
models; medians over 30 streams each.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Procs, free_port  # noqa: E402

SHAPE = "stream-40-5"
STREAMS = 30
GUARDED = f"""
[guardrails."pii"]
guard_types = ["output"]
[guardrails."pii".providers.local]
type = "local"
pii = ["email", "phone", "credit_card", "ssn", "ip", "secret"]
action = "redact"

[models."guarded"]
routing = ["mock"]
guardrail_profile = "pii"
[models."guarded".providers.mock]
type = "openai"
model_name = "{SHAPE}"
api_base = "http://127.0.0.1:STREAM_PORT/v1"
api_key_location = "none"
"""


def one(port: int, model: str) -> tuple[float, list[float]]:
    """(ms to the first text, the gaps in ms between pieces of text) of one stream."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    started = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    arrivals = []
    for line in resp:
        if line.startswith(b"data: {") and b'"content":"' in line and b'"content":""' not in line:
            arrivals.append(time.perf_counter())
    conn.close()
    first = (arrivals[0] - started) * 1000
    return first, [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)]


def main() -> None:
    with Procs() as procs:
        stream_port, port = free_port(), free_port()
        procs.stream_mock(stream_port)
        procs.gateway("guard-stream", port, stream_port, stream_port, [SHAPE], client="geventhttpclient",
                      workers=1, settings="\n" + GUARDED.replace("STREAM_PORT", str(stream_port)))
        results: dict[str, tuple[list[float], list[float]]] = {SHAPE: ([], []), "guarded": ([], [])}
        for _ in range(STREAMS):
            for model in results:
                first, gaps = one(port, model)
                results[model][0].append(first)
                results[model][1].extend(gaps)
        for model, (firsts, gaps) in results.items():
            name = "unguarded" if model == SHAPE else "guarded"
            print(f"{name:10} first text {statistics.median(firsts):6.1f} ms, gap between pieces "
                  f"{statistics.median(gaps):5.1f} ms (median), {len(gaps) / STREAMS:.0f} pieces a stream")


if __name__ == "__main__":
    main()
