"""What a rate-limited gateway answers, checked: the refusal bodies, the limit headers and ``Retry-After``,
and dummy models with a ``[models."name".rate_limits]`` table."""

from __future__ import annotations

import json
import math
import re
import time

from configs import dummy_provider, model_toml, toml_value

__all__ = [
    "DENIED",
    "ROUNDING_S",
    "UNAVAILABLE",
    "assert_denied",
    "assert_request_headers",
    "duration_s",
    "limited_model",
]

DENIED = {"error": {"message": "Rate limit exceeded", "type": "rate_limit_error", "param": None,
                    "code": "rate_limit_exceeded"}}
UNAVAILABLE = {"error": {"message": "Rate limiting is unavailable", "type": "server_error", "param": None,
                         "code": "service_unavailable"}}
#: ``X-RateLimit-Reset`` is whole unix seconds, rounded up: it may lie this much past the window.
ROUNDING_S = 1
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s|(\d+)ms)$")


def limited_model(name: str, limits: dict | None = None, behaviour: str = "hello") -> str:
    """A dummy model, and its ``rate_limits`` table (after the model's own) when ``limits`` is given."""
    text = model_toml(name, {"d": dummy_provider(behaviour)})
    if limits is not None:
        text += f"\n[models.{json.dumps(name)}.rate_limits]\n"
        text += "".join(f"{k} = {toml_value(v)}\n" for k, v in limits.items())
    return text


def duration_s(text: str) -> float:
    """OpenAI's reset duration (``20ms``, ``15.3s``, ``6m0s``, ``1h0m0s``) in seconds."""
    found = _DURATION.match(text)
    assert found is not None, f"not a duration: {text!r}"
    hours, minutes, seconds, ms = found.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0) + int(ms or 0) / 1000


def assert_request_headers(resp, sent_at: float, limit: int, remaining: int, reset_s: float) -> None:
    """The generic trio and OpenAI's requests trio: the limit, what is left, and a reset after ``sent_at``
    (``time.time()`` before the request) within ``reset_s``."""
    h = resp.headers
    assert (h["X-RateLimit-Limit"], h["x-ratelimit-limit-requests"]) == (str(limit), str(limit)), resp
    assert (h["X-RateLimit-Remaining"], h["x-ratelimit-remaining-requests"]) == (str(remaining),) * 2, resp
    reset = int(h["X-RateLimit-Reset"])
    assert sent_at <= reset <= time.time() + reset_s + ROUNDING_S, (reset, sent_at)
    assert 0 <= duration_s(h["x-ratelimit-reset-requests"]) <= reset_s


def assert_denied(resp, wait_s: float) -> int:
    """A 429 with the exact body and a ``Retry-After`` (whole seconds, 1 to ``wait_s``) that agrees with
    ``retry-after-ms``; returns ``Retry-After``."""
    assert resp.status == 429, resp
    assert resp.json() == DENIED
    retry, retry_ms = resp.headers["Retry-After"], resp.headers["retry-after-ms"]
    assert retry.isdigit() and 1 <= int(retry) <= wait_s, retry
    assert retry_ms.isdigit() and int(retry) == max(1, math.ceil(int(retry_ms) / 1000)), (retry, retry_ms)
    return int(retry)
