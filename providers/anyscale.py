"""Anyscale Endpoints: OpenAI-compatible chat, completions and embeddings."""

from __future__ import annotations

from providers.openai import OpenAIProvider

__all__ = ["AnyscaleProvider"]

TYPE = "anyscale"


class AnyscaleProvider(OpenAIProvider):
    type = TYPE
    default_api_base = "https://api.endpoints.anyscale.com/v1"
    default_api_key_location = "env::ANYSCALE_API_KEY"
    capabilities = frozenset({"chat", "completions", "embedding"})
