"""Writing JSON answers: one serialiser, one set of options, for every resource."""

from __future__ import annotations

from typing import Any

import falcon

from providers.jsonio import dumps

__all__ = ["inference_headers", "json_response"]


def json_response(resp: falcon.Response, obj: Any) -> None:
    resp.content_type = falcon.MEDIA_JSON
    resp.data = dumps(obj)


def inference_headers(resp: falcon.Response, provider: str, attempts: int, overhead_s: float | None = None) -> None:
    """The headers of every inference answer: who answered, after how many attempts, and (for whole
    answers) the time spent in the gateway rather than waiting on the upstream."""
    resp.set_header("x-budgateway-provider", provider)
    resp.set_header("x-budgateway-attempts", str(attempts))
    if overhead_s is not None:
        resp.set_header("x-budgateway-overhead-ms", f"{overhead_s * 1000.0:.3f}")
