"""The rate-limit headers of an answer: the generic ``X-RateLimit-*`` trio and OpenAI's ``x-ratelimit-*``
(requests and tokens), and ``Retry-After`` (and ``retry-after-ms``, which the OpenAI SDK prefers) on a 429.

Each family shows the limit of its kind with the least left (of equal ones, the longest window).
"""

from __future__ import annotations

import math
import time

from gateway.limits.limiter import Admission

__all__ = ["duration", "limit_headers", "retry_headers"]


def duration(ms: float) -> str:
    """A reset delay the way OpenAI writes it: ``20ms``, ``1.5s``, ``6m0s``, ``1h0m0s``."""
    ms = max(0, math.ceil(ms))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _tightest(admission: Admission) -> dict[str, tuple]:
    """kind -> (capacity, remaining, reset ms) of the limit with the least left."""
    best: dict[str, tuple] = {}
    for check, result in zip(admission.checks, admission.results, strict=True):
        if len(result) < 4 + 3 * len(check.limits):
            continue  # refused for concurrency before the limits were looked at
        for i, limit in enumerate(check.limits):
            remaining, reset_ms = result[4 + 3 * i], result[5 + 3 * i]
            found = best.get(limit.kind)
            if found is None or (remaining, -reset_ms) < (found[1], -found[2]):
                best[limit.kind] = (limit.capacity, remaining, reset_ms)
    return best


def limit_headers(admission: Admission) -> dict[str, str]:
    best = _tightest(admission)
    headers: dict[str, str] = {}
    now = time.time()
    main = best.get("requests") or best.get("tokens")
    if main is not None:
        capacity, remaining, reset_ms = main
        headers["X-RateLimit-Limit"] = str(int(capacity))
        headers["X-RateLimit-Remaining"] = str(int(remaining))
        headers["X-RateLimit-Reset"] = str(math.ceil(now + reset_ms / 1000))
    for kind in ("requests", "tokens"):
        found = best.get(kind)
        if found is not None:
            capacity, remaining, reset_ms = found
            headers[f"x-ratelimit-limit-{kind}"] = str(int(capacity))
            headers[f"x-ratelimit-remaining-{kind}"] = str(int(remaining))
            headers[f"x-ratelimit-reset-{kind}"] = duration(reset_ms)
    return headers


def retry_headers(admission: Admission) -> dict[str, str]:
    """The headers of a refusal: the limits' state, and when to try again."""
    retry_ms = max(r[2] for r in admission.results if r[0] != 1)
    headers = limit_headers(admission)
    headers["Retry-After"] = str(max(1, math.ceil(retry_ms / 1000)))
    headers["retry-after-ms"] = str(int(retry_ms))
    return headers
