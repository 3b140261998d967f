"""``GET /v1/models`` and ``GET /v1/models/{id}``: the served models in OpenAI's list shape."""

from __future__ import annotations

import time

import falcon

from gateway.catalog import Catalog
from gateway.errors import ModelNotFoundError
from gateway.resources.respond import json_response

__all__ = ["Models"]


class Models:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._created = int(time.time())
        self._cache: tuple[object, dict[str, dict]] | None = None

    def _models(self) -> dict[str, dict]:
        """Every served model's entry; remade only when the catalog's routes have changed."""
        routes = self._catalog.routes
        if self._cache is None or self._cache[0] is not routes:
            entries = {
                name: {
                    "id": name,
                    "object": "model",
                    "created": self._created,
                    "owned_by": "budgateway",
                    # Beyond OpenAI's fields: what the model serves (its configured endpoints).
                    "capabilities": sorted(route.config.endpoints),
                }
                for name, route in routes.items()
            }
            self._cache = (routes, entries)
        return self._cache[1]

    def _visible(self, req: falcon.Request) -> dict[str, dict]:
        """The models the client may use: all, or with auth its key's (prompts are not models)."""
        models = self._models()
        grants = req.context.grants
        if grants is None:
            return models
        visible = {}
        for name, grant in grants.items():
            if name.startswith("prompt:"):
                continue
            entry = models.get(grant.endpoint_id)
            if entry is not None:
                visible[name] = {**entry, "id": name}
        return visible

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        json_response(resp, {"object": "list", "data": list(self._visible(req).values())})

    def on_get_one(self, req: falcon.Request, resp: falcon.Response, model_id: str) -> None:
        model = self._visible(req).get(model_id)
        if model is None:
            raise ModelNotFoundError(model_id)
        json_response(resp, model)
