"""``GET /v1/models`` and ``GET /v1/models/{id}``: the served models in OpenAI's list shape."""

from __future__ import annotations

import time

import falcon

from gateway.errors import ModelNotFoundError
from gateway.resources.respond import json_response
from gateway.routing import Router

__all__ = ["Models"]


class Models:
    def __init__(self, router: Router) -> None:
        created = int(time.time())
        # Built once per config load: the list never changes until a reload builds a new app.
        self._models = {
            name: {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "budgateway",
                # Beyond OpenAI's fields: what the model serves (its configured endpoints).
                "capabilities": sorted(route.config.endpoints),
            }
            for name, route in router.routes.items()
        }
        self._list = {"object": "list", "data": list(self._models.values())}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        json_response(resp, self._list)

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, model_id: str) -> None:
        model = self._models.get(model_id)
        if model is None:
            raise ModelNotFoundError(model_id)
        json_response(resp, model)
