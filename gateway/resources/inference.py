"""``POST /inference``: TensorZero's native endpoint, plain and streamed.

The resolve stage asks ``target`` which model the request runs first (the plan of
``tensorzero.inference``); ``function_calls.FunctionCalls`` then runs the plan's variants and
``NativeAnswers`` gives TensorZero's answer or chunks.
"""

from __future__ import annotations

from typing import Any

import falcon

from gateway.resources.function_calls import FunctionCalls, NativeAnswers

__all__ = ["Inference"]


class Inference:
    capability = "chat"
    path = "/inference"
    required = ()
    error_format = "tensorzero"

    def __init__(self, calls: FunctionCalls) -> None:
        self._calls = calls
        self._present = NativeAnswers()

    def target(self, ctx: Any, body: dict) -> str:
        return self._calls.plan(ctx, body)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._calls.run(req, resp, req.context.body, self._present)
