"""Stage 3: the client's API key, checked against the in-memory key table (never a Redis round trip).

The key comes as ``Authorization: Bearer <key>`` (the prefix optional), or as ``x-api-key``.

Resources that set ``auth = False`` (health, status, metrics) are open. The key's models are left on
the context for the resolve stage, which maps the requested name through them.
"""

from __future__ import annotations

from typing import Any

import falcon

from gateway.errors import AuthenticationError, ServiceUnavailableError
from gateway.stores.keys import KeyTable

__all__ = ["AuthStage", "client_key"]

_BEARER = "bearer "


def client_key(req: falcon.Request) -> str | None:
    """The API key a request carries (``Authorization: Bearer``, the prefix optional, or ``x-api-key``)."""
    # Anthropic's SDK (for /v1/messages) sends its key as x-api-key.
    header = req.get_header("Authorization") or req.get_header("x-api-key")
    if not header:
        return None
    token = header[len(_BEARER):] if header[: len(_BEARER)].lower() == _BEARER else header
    return token.strip()


class AuthStage:
    def __init__(self, keys: KeyTable) -> None:
        self._keys = keys

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        if resource is None or not getattr(resource, "auth", True):
            return
        token = client_key(req)
        if token is None:
            raise AuthenticationError("Missing authorization header")
        found = self._keys.lookup(token) if token else None
        if found is None:
            if not self._keys.loaded:
                # Fail closed, but say why: the table has never been loaded (Redis down since start).
                raise ServiceUnavailableError("Authentication is not available yet: the key table is not loaded")
            raise AuthenticationError("Invalid API key")
        key, grants = found
        ctx = req.context
        ctx.grants = grants
        ctx.api_key_id = key.api_key_id
        ctx.user_id = key.user_id
        ctx.project_id = key.project_id
