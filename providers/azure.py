"""Azure OpenAI: OpenAI's wire format at ``{api_base}/openai/deployments/{deployment_id}/...?api-version=``.

The key goes in the ``api-key`` header. ``api_base`` is the resource endpoint, e.g.
``https://my-resource.openai.azure.com``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from providers.openai import CAPABILITIES, OpenAIProvider

__all__ = ["AzureProvider", "DEFAULT_API_VERSION"]

TYPE = "azure"
#: The current generally available data-plane API version.
DEFAULT_API_VERSION = "2024-10-21"


class AzureProvider(OpenAIProvider):
    type = TYPE
    default_api_key_location = "env::AZURE_OPENAI_API_KEY"
    requires_api_base = True
    api_base_aliases = ("endpoint",)
    requires_model_name = False
    options = frozenset({"deployment_id", "api_version"})
    # Azure serves no moderations and no Responses API on this path scheme.
    capabilities = CAPABILITIES - {"moderation", "responses"}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check_options(options)
        if "deployment_id" not in options:
            problems.append(("deployment_id", 'required for provider type "azure"'))
        for key in ("deployment_id", "api_version"):
            if key in options and not (isinstance(options[key], str) and options[key]):
                problems.append((key, "expected a non-empty string"))
        return problems

    def _url(self, path: str) -> str:
        options = self.config.options
        deployment = quote(options["deployment_id"], safe="")
        version = quote(options.get("api_version", DEFAULT_API_VERSION), safe="")
        return f"{self._base}/openai/deployments/{deployment}{path}?api-version={version}"

    def _auth(self, secret: str) -> tuple[str, str]:
        return "api-key", secret
