"""The last stage: complete the request's outcome from its answer, and finish it when the answer has ended.

A whole answer finishes here, before its bytes are written; a stream finishes when it closes (its end,
an upstream failure, the client leaving), so its finish hooks see what the stream carried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon

from gateway.outcome import Outcome

__all__ = ["RecordStage"]


class RecordStage:
    """``stream_opened(outcome)`` runs when a streamed answer starts (the open-streams gauge)."""

    def __init__(self, stream_opened: Callable[[Outcome], None] | None = None) -> None:
        self._stream_opened = stream_opened

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool) -> None:
        ctx = req.context
        outcome = ctx.outcome
        if outcome is None:  # the context stage never ran (Falcon refused the request before it)
            return
        outcome.route = req.uri_template or "unmatched"
        outcome.model = ctx.model
        if ctx.route is not None:
            outcome.model_name = ctx.route.name
        outcome.status = resp.status_code
        if not outcome.bytes_in:
            outcome.bytes_in = req.content_length or 0
        outcome.request_body = ctx.body
        stream = ctx.stream
        if stream is None or resp.stream is not stream:
            if stream is not None:
                stream.close()  # an error answer took its place: release the upstream
            data = resp.data
            if data:
                outcome.bytes_out = len(data)
                outcome.response_body = data
            outcome.finish()
            return
        outcome.is_stream = True
        if self._stream_opened is not None:
            self._stream_opened(outcome)
        stream.on_close(lambda _stream: outcome.finish())
