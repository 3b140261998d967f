"""A loopback Azure OpenAI resource: OpenAI's wire format behind Azure's deployment paths, key and versions.

Azure serves ``POST {endpoint}/openai/deployments/{deployment-id}/<OpenAI path>?api-version=YYYY-MM-DD``
with the key in the ``api-key`` header (https://learn.microsoft.com/azure/ai-services/openai/reference).
This resource checks each of them and answers as Azure does when one is wrong:

- no ``api-key`` header, or the wrong key: 401, ``{"error": {"code": "401", "message": "Access denied..."}}``;
- a path outside ``/openai/deployments/``, or no ``api-version``, or one it does not serve: 404
  ``Resource not found``;
- a deployment it does not have: 404 with code ``DeploymentNotFound``.

A request that passes is answered by ``OpenAIHandler``, so the ``model`` behaviours of ``upstream`` apply.
"""

from __future__ import annotations

import re

from upstream import OpenAIHandler, RecordedRequest, Upstream

__all__ = ["API_KEY", "API_VERSIONS", "DEPLOYMENTS", "AzureUpstream"]

#: The key of the resource.
API_KEY = "azure-test-key-0123456789"
#: The deployments the resource has.
DEPLOYMENTS = frozenset({"gpt-4o-deploy", "embed-deploy", "whisper-deploy", "dalle-deploy"})
#: The data-plane API versions the resource serves (the gateway's default among them).
API_VERSIONS = frozenset({"2024-10-21", "2025-04-01-preview"})

_DEPLOYMENT_PATH = re.compile(r"/openai/deployments/([^/]+)(/.+)")
_ACCESS_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
                  "a valid key for an active subscription and use a correct regional API endpoint for your "
                  "resource.")
_NO_DEPLOYMENT = ("The API deployment for this resource does not exist. If you created the deployment within "
                  "the last 5 minutes, please wait a moment and try again.")


class _AzureHandler(OpenAIHandler):
    def openai_path(self, rec: RecordedRequest) -> str | None:
        if rec.headers.get("api-key") != API_KEY:
            self.send_json(401, {"error": {"code": "401", "message": _ACCESS_DENIED}})
            return None
        m = _DEPLOYMENT_PATH.fullmatch(rec.route)
        versions = rec.query.get("api-version", [])
        served = len(versions) == 1 and versions[0] in API_VERSIONS
        if m is None or m.group(2) not in self.ROUTES or not served:
            self.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})
            return None
        if m.group(1) not in DEPLOYMENTS:
            self.send_json(404, {"error": {"code": "DeploymentNotFound", "message": _NO_DEPLOYMENT}})
            return None
        return m.group(2)


class AzureUpstream(Upstream):
    """The resource; ``url`` is its endpoint (what a provider's ``api_base`` names), without any path."""

    def __init__(self) -> None:
        super().__init__(_AzureHandler)
        self.url = f"http://127.0.0.1:{self.port}"
