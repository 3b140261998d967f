"""The hosted APIs that speak OpenAI's wire format, one row each: the type name, where it is served,
the variable its key is read from by default, and what it serves.

Each row becomes a subclass of ``OpenAIProvider`` (requests go as the client sent them, the model
renamed); ``api_base`` and ``api_key_location`` in a provider table override the row's defaults.
The names and key variables are TensorZero's, so its configs load unchanged.
"""

from __future__ import annotations

from providers.openai import OpenAIProvider

__all__ = ["COMPATIBLE_PROVIDERS"]

_CHAT = frozenset({"chat"})

#: type, default api_base, default key variable, capabilities.
_TABLE: tuple[tuple[str, str, str, frozenset[str]], ...] = (
    ("together", "https://api.together.xyz/v1", "TOGETHER_API_KEY",
     frozenset({"chat", "completions", "embedding", "image_generation"})),
    ("anyscale", "https://api.endpoints.anyscale.com/v1", "ANYSCALE_API_KEY",
     frozenset({"chat", "completions", "embedding"})),
    ("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", _CHAT),
    ("fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY",
     frozenset({"chat", "completions", "embedding"})),
    ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY",
     frozenset({"chat", "audio_transcription", "audio_translation"})),
    ("hyperbolic", "https://api.hyperbolic.xyz/v1", "HYPERBOLIC_API_KEY", frozenset({"chat", "completions"})),
    ("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", frozenset({"chat", "embedding"})),
    ("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", frozenset({"chat", "completions"})),
    ("xai", "https://api.x.ai/v1", "XAI_API_KEY", _CHAT),
)


#: TensorZero's own keys of some of these types (taken, not acted on).
_TENSORZERO_OPTIONS = {"fireworks": frozenset({"parse_think_blocks"}), "together": frozenset({"parse_think_blocks"}),
                       "groq": frozenset({"reasoning_format"}), "mistral": frozenset({"prompt_mode"})}


def _provider_class(type_: str, api_base: str, variable: str, capabilities: frozenset[str]) -> type[OpenAIProvider]:
    name = "".join(part.capitalize() for part in type_.split("_")) + "Provider"
    return type(name, (OpenAIProvider,), {
        "tensorzero_options": _TENSORZERO_OPTIONS.get(type_, frozenset()),
        "__module__": __name__,
        "__doc__": f"{type_}: OpenAI's wire format at {api_base}.",
        "type": type_,
        "default_api_base": api_base,
        "default_api_key_location": f"env::{variable}",
        "capabilities": capabilities,
    })


COMPATIBLE_PROVIDERS: tuple[type[OpenAIProvider], ...] = tuple(_provider_class(*row) for row in _TABLE)
