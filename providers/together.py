"""Together AI: OpenAI-compatible chat, completions, embeddings and image generation."""

from __future__ import annotations

from providers.openai import OpenAIProvider

__all__ = ["TogetherProvider"]

TYPE = "together"


class TogetherProvider(OpenAIProvider):
    type = TYPE
    default_api_base = "https://api.together.xyz/v1"
    default_api_key_location = "env::TOGETHER_API_KEY"
    capabilities = frozenset({"chat", "completions", "embedding", "image_generation"})
