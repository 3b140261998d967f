"""The served models: those of the config and those the control plane adds at run time.

Each model's providers are built once when the model is loaded; every change rebuilds the flattened
chains (the model's own providers, then each fallback model's, depth first, each model once) and
swaps the whole routes mapping, so a request never sees a half-made state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from gateway.config.schema import ModelConfig, Pricing, ProviderConfig, RetryConfig, TimeoutsConfig
from gateway.errors import ModelNotFoundError, ServiceUnavailableError
from providers.base import Provider
from providers.credentials import Credential, Secret

__all__ = ["Candidate", "Catalog", "MODEL_PREFIX", "ModelRoute"]

log = logging.getLogger(__name__)

#: The prefix TensorZero clients use to name a model directly.
MODEL_PREFIX = "tensorzero::model_name::"
#: The most shorthand models (``openai::gpt-4o-mini``) kept built: a client naming ever new ones
#: cannot grow the catalog without bound.
SHORTHAND_LIMIT = 256


class Candidate:
    """One provider of one model, as routing tries it."""

    __slots__ = ("model", "provider_name", "provider", "timeouts", "pricing", "label")

    def __init__(self, model: str, provider_name: str, provider: Provider, timeouts: TimeoutsConfig,
                 pricing: Pricing | None = None) -> None:
        self.model = model
        self.provider_name = provider_name
        self.provider = provider
        self.timeouts = timeouts
        #: The price of the candidate's own model (a fallback model's, not the one asked for).
        self.pricing = pricing
        self.label = f"{model}/{provider_name}"


class ModelRoute:
    """A served model: its config and its whole flattened chain of candidates."""

    __slots__ = ("name", "config", "chain")

    def __init__(self, config: ModelConfig, chain: tuple[Candidate, ...]) -> None:
        self.name = config.name
        self.config = config
        self.chain = chain


class Catalog:
    """Config models (fixed) and run-time models (from the control plane), by name."""

    def __init__(
        self,
        models: Mapping[str, ModelConfig],
        registry: Mapping[str, type[Provider]],
        credential_store: Mapping[str, Secret] | None = None,
    ) -> None:
        self._registry = registry
        self._store = credential_store if credential_store is not None else {}
        self._static = dict(models)
        self._dynamic: dict[str, ModelConfig] = {}
        self._instances = {name: self._build(model) for name, model in models.items()}
        #: Run-time models that cannot serve (e.g. a credential that did not decrypt), and why.
        self._unavailable: dict[str, str] = {}
        #: Shorthand models built on first use, by name.
        self._shorthands: dict[str, ModelRoute] = {}
        self.routes: Mapping[str, ModelRoute] = MappingProxyType({})
        self._rebuild()

    def _build(self, model: ModelConfig) -> dict[str, Provider]:
        instances = {}
        for pname, pconf in model.providers.items():
            credential = Credential(pconf.api_key_location, self._store)
            if credential.error:
                log.warning("models.%s.providers.%s: %s; requests to it will fail over", model.name, pname, credential.error)
            instances[pname] = self._registry[pconf.type](pconf, credential)
        return instances

    def _rebuild(self) -> None:
        # NOTE: a config model keeps its name when the control plane writes one of the same name.
        models = {**self._dynamic, **self._static}
        self.routes = MappingProxyType(
            {name: ModelRoute(model, self._chain(models, name)) for name, model in models.items()}
        )

    def _chain(self, models: Mapping[str, ModelConfig], start: str) -> tuple[Candidate, ...]:
        chain: list[Candidate] = []
        seen: set[str] = set()

        def walk(name: str) -> None:
            model = models.get(name)
            if model is None or name in seen:
                return
            seen.add(name)
            instances = self._instances[name]
            for pname in model.routing:
                pconf = model.providers[pname]
                # NOTE: the model's pricing first; TensorZero's per-provider cost when it has none.
                chain.append(Candidate(name, pname, instances[pname], pconf.timeouts, model.pricing or pconf.cost))
            for other in model.fallback_models:
                walk(other)

        walk(start)
        return tuple(chain)

    def replace_dynamic(self, models: Mapping[str, ModelConfig], unavailable: Mapping[str, str]) -> None:
        """Swap in a whole new set of run-time models (a full load)."""
        kept = {name: self._instances[name] for name in self._static}
        for name, model in models.items():
            kept[name] = self._instances[name] if self._dynamic.get(name) is model else self._build(model)
        self._instances = kept
        self._dynamic = dict(models)
        self._unavailable = dict(unavailable)
        self._rebuild()

    def upsert(self, model: ModelConfig) -> None:
        self._instances[model.name] = self._build(model)
        self._dynamic[model.name] = model
        self._unavailable.pop(model.name, None)
        self._rebuild()

    def remove(self, name: str) -> None:
        if self._dynamic.pop(name, None) is not None and name not in self._static:
            self._instances.pop(name, None)
        self._unavailable.pop(name, None)
        self._rebuild()

    def mark_unavailable(self, name: str, reason: str) -> None:
        """A run-time model that exists but cannot serve: requests get 503 with ``reason``."""
        if self._dynamic.pop(name, None) is not None and name not in self._static:
            self._instances.pop(name, None)
        self._unavailable[name] = reason
        self._rebuild()

    def resolve(self, name: str, shown: str | None = None) -> ModelRoute:
        """The route of ``name``; errors name the model as ``shown`` (what the client asked for)."""
        shown = shown or name
        route = self.routes.get(name)
        if route is None and name.startswith(MODEL_PREFIX):
            name = name[len(MODEL_PREFIX) :]
            route = self.routes.get(name)
        if route is None and "::" in name:
            route = self._shorthand(name)
        if route is None:
            reason = self._unavailable.get(name)
            if reason is not None:
                raise ServiceUnavailableError(f"Model {shown} is unavailable: {reason}")
            raise ModelNotFoundError(shown)
        return route

    def _shorthand(self, name: str) -> ModelRoute | None:
        """``provider_type::model_name``: one provider of that type at its default endpoint with its
        default key, for a type that needs nothing else (TensorZero's shorthand)."""
        route = self._shorthands.get(name)
        if route is not None:
            return route
        type_, _, model_name = name.partition("::")
        cls = self._registry.get(type_)
        if cls is None or not model_name or cls.requires_api_base or cls.check_options({}):
            return None
        provider = ProviderConfig(name=type_, type=type_, model_name=model_name, api_base=None,
                                  api_key_location=cls.default_api_key_location, timeouts=TimeoutsConfig(),
                                  extra_headers=MappingProxyType({}), extra_body=MappingProxyType({}),
                                  options=MappingProxyType({}))
        model = ModelConfig(name=name, routing=(type_,), endpoints=frozenset(cls.capabilities), fallback_models=(),
                            retry=RetryConfig(), providers=MappingProxyType({type_: provider}))
        instance = self._build(model)[type_]
        route = ModelRoute(model, (Candidate(name, type_, instance, provider.timeouts),))
        if len(self._shorthands) >= SHORTHAND_LIMIT:
            self._shorthands.pop(next(iter(self._shorthands)))
        self._shorthands[name] = route
        return route
