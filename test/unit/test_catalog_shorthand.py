"""TensorZero's model shorthand, ``provider_type::model_name``: a model built on first use at the
type's default endpoint with its default key, for the types that need nothing else."""

from __future__ import annotations

import pytest

from gateway.catalog import SHORTHAND_LIMIT, Catalog
from gateway.errors import ModelNotFoundError
from providers.registry import build_registry


@pytest.fixture
def catalog():
    return Catalog({}, build_registry())


@pytest.mark.parametrize(("name", "type_", "model_name", "key"), [
    ("openai::gpt-4o-mini", "openai", "gpt-4o-mini", "env::OPENAI_API_KEY"),
    ("anthropic::claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest", "env::ANTHROPIC_API_KEY"),
    ("deepseek::deepseek-chat", "deepseek", "deepseek-chat", "env::DEEPSEEK_API_KEY"),
    ("tensorzero::model_name::groq::llama-3.1-8b-instant", "groq", "llama-3.1-8b-instant", "env::GROQ_API_KEY"),
    ("openrouter::openai/gpt-4o::free", "openrouter", "openai/gpt-4o::free", "env::OPENROUTER_API_KEY"),
])
def test_a_shorthand_is_one_provider_of_its_type(catalog, name, type_, model_name, key):
    route = catalog.resolve(name)
    [candidate] = route.chain
    config = route.config.providers[type_]
    assert (config.type, config.model_name, config.api_base, config.api_key_location) == (type_, model_name, None, key)
    assert "chat" in route.config.endpoints
    assert catalog.resolve(name) is route  # built once


@pytest.mark.parametrize("name", ["vllm::llama", "azure::gpt-4o", "nope::model", "openai::", "::gpt-4o"])
def test_a_type_that_needs_more_is_no_shorthand(catalog, name):
    with pytest.raises(ModelNotFoundError):
        catalog.resolve(name)


def test_shorthands_kept_are_bounded(catalog):
    for i in range(SHORTHAND_LIMIT + 50):
        catalog.resolve(f"openai::model-{i}")
    assert len(catalog._shorthands) == SHORTHAND_LIMIT
