"""The provider registry: provider ``type`` names mapped to classes, built-ins first, then entry points."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType

from providers.anthropic import AnthropicProvider
from providers.azure import AzureProvider
from providers.base import Provider
from providers.compatible import COMPATIBLE_PROVIDERS
from providers.dummy import DummyProvider
from providers.gemini import GeminiProvider
from providers.openai import BudProvider, OpenAIProvider, SGLangProvider, TGIProvider, VLLMProvider

__all__ = ["BUILTIN_PROVIDERS", "ENTRY_POINT_GROUP", "RegistryError", "build_registry"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "budgateway.providers"
BUILTIN_PROVIDERS: tuple[type[Provider], ...] = (
    OpenAIProvider,
    VLLMProvider,
    SGLangProvider,
    TGIProvider,
    BudProvider,
    AzureProvider,
    AnthropicProvider,
    GeminiProvider,
    *COMPATIBLE_PROVIDERS,
    DummyProvider,
)


class RegistryError(Exception):
    """A provider plug-in could not be registered (a duplicate type, or not a Provider)."""


def build_registry(extra: Iterable[type[Provider]] = ()) -> Mapping[str, type[Provider]]:
    """Register the built-ins, then ``extra``, then the ``budgateway.providers`` entry points; freeze."""
    registry: dict[str, type[Provider]] = {}

    def add(cls: object, origin: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            raise RegistryError(f"{origin}: {cls!r} is not a subclass of providers.base.Provider")
        if cls.type in registry:
            raise RegistryError(f'{origin}: provider type "{cls.type}" is already registered by {registry[cls.type].__module__}')
        registry[cls.type] = cls

    for cls in BUILTIN_PROVIDERS:
        add(cls, "built-in")
    for cls in extra:
        add(cls, "extra")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        add(ep.load(), f"entry point {ep.name} ({ep.value})")
    return MappingProxyType(registry)
