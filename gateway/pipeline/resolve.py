"""Stage 4: read and parse the JSON body once, resolve ``model`` to a route, check the capability."""

from __future__ import annotations

from typing import Any

import falcon
import ujson

from gateway.errors import (
    InvalidJSONError,
    InvalidRequestError,
    MissingParameterError,
    RequestTooLargeError,
    UnsupportedCapabilityError,
)
from gateway.routing import Router

__all__ = ["ResolveStage"]


class ResolveStage:
    """Runs for resources that declare a ``capability``; others (health, models) are left alone.

    A resource lists the body fields it requires in ``required`` (besides ``model``).
    """

    def __init__(self, router: Router, max_body_bytes: int) -> None:
        self._router = router
        self._max = max_body_bytes

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        capability = getattr(resource, "capability", None)
        if capability is None or req.method != "POST":
            return
        ctx = req.context
        body = self._read_json(req)
        model = body.get("model")
        if model is None or model == "":
            raise MissingParameterError("model")
        if not isinstance(model, str):
            raise InvalidRequestError("'model' must be a string", param="model")
        # Resolved before the other checks, so a rejected request still counts against its model.
        route = ctx.route = self._router.resolve(model)
        ctx.model = model
        if capability not in route.config.endpoints:
            raise UnsupportedCapabilityError(model, capability)
        for field in resource.required:
            if field not in body or body[field] is None:
                raise MissingParameterError(field)
        ctx.body = body

    def _read_json(self, req: falcon.Request) -> dict:
        length = req.content_length
        limit = self._max
        if length is not None and length > limit:
            raise RequestTooLargeError(f"Request body of {length} bytes is over the limit of {limit} bytes")
        raw = req.bounded_stream.read(limit + 1) if length is None else req.bounded_stream.read()
        if len(raw) > limit:
            raise RequestTooLargeError(f"Request body is over the limit of {limit} bytes")
        if not raw:
            raise InvalidJSONError("Request body is empty; expected a JSON object")
        try:
            body = ujson.loads(raw)
        except ValueError as e:
            raise InvalidJSONError(f"Request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise InvalidJSONError("Request body must be a JSON object")
        return body
