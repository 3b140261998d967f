"""Config loading and validation: every message names the file, the key path and the reason."""

import pytest

from gateway.config import ConfigError, load_config, load_config_text
from gateway.config.default import DEFAULT_CONFIG, DEFAULT_SOURCE
from providers.registry import build_registry

REGISTRY = build_registry()

GOOD = """
[gateway]
bind_address = "127.0.0.1:4000"
workers = 2
shutdown_timeout_s = 5
max_body_bytes = 1024

[models.gpt]
routing = ["a", "b"]
fallback_models = ["other"]
retry_config = { num_retries = 2, max_delay_s = 1.5 }

[models.gpt.providers.a]
type = "openai"
model_name = "gpt-4o"
api_base = "http://127.0.0.1:9/v1/"
api_key_location = "none"
timeouts = { non_streaming = { total_ms = 500 }, streaming = { ttft_ms = 100, total_ms = 2000 } }
extra_headers = { "x-a" = "1" }
extra_body = { "seed" = 1 }

[models.gpt.providers.b]
type = "dummy"
model_name = "text"

[models.other]
routing = ["d"]
endpoints = ["chat", "embedding"]

[models.other.providers.d]
type = "dummy"
model_name = "echo"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.toml", REGISTRY)
    return info.value.errors


class TestValidConfig:
    def test_values_are_read(self):
        config = load_config_text(GOOD, "t.toml", REGISTRY)
        assert (config.gateway.host, config.gateway.port, config.gateway.workers) == ("127.0.0.1", 4000, 2)
        assert config.gateway.max_body_bytes == 1024
        gpt = config.models["gpt"]
        assert gpt.routing == ("a", "b")
        assert gpt.fallback_models == ("other",)
        assert gpt.retry.num_retries == 2 and gpt.retry.max_delay_s == 1.5
        assert gpt.endpoints == frozenset({"chat"})
        a = gpt.providers["a"]
        assert a.api_base == "http://127.0.0.1:9/v1"
        assert a.timeouts.non_streaming_total_s == 0.5
        assert a.timeouts.streaming_ttft_s == 0.1
        assert dict(a.extra_body) == {"seed": 1}

    def test_config_is_immutable(self):
        config = load_config_text(GOOD, "t.toml", REGISTRY)
        with pytest.raises(TypeError):
            config.models["new"] = None
        with pytest.raises(AttributeError):
            config.gateway.port = 1

    def test_default_api_key_location_comes_from_the_type(self):
        config = load_config_text(GOOD.replace('api_key_location = "none"\n', ""), "t.toml", REGISTRY)
        assert config.models["gpt"].providers["a"].api_key_location == "env::OPENAI_API_KEY"
        assert config.models["gpt"].providers["b"].api_key_location == "none"

    def test_builtin_default_config_is_valid(self):
        config = load_config_text(DEFAULT_CONFIG, DEFAULT_SOURCE, REGISTRY)
        assert "dummy" in config.models

    def test_bundled_config_is_valid(self):
        config = load_config("conf/tensorzero.toml", REGISTRY)
        assert {"dummy", "echo"} <= set(config.models)


class TestValidationMessages:
    def test_routing_names_an_undefined_provider(self):
        text = GOOD.replace('routing = ["a", "b"]', 'routing = ["a", "azur"]')
        assert 'models.gpt.routing[1]: provider "azur" is not defined under models.gpt.providers' in errors_of(text)

    def test_error_message_names_the_file(self):
        with pytest.raises(ConfigError) as info:
            load_config_text(GOOD.replace('routing = ["a", "b"]', 'routing = ["zz"]'), "conf/x.toml", REGISTRY)
        assert str(info.value).startswith("conf/x.toml: models.gpt.routing[0]:")

    def test_unknown_top_level_key(self):
        assert "modles: unknown key" in errors_of(GOOD + "\n[modles]\n")

    def test_unknown_gateway_key(self):
        assert "gateway.bind: unknown key" in errors_of(GOOD.replace("[gateway]", '[gateway]\nbind = "x"'))

    def test_unknown_model_key(self):
        text = GOOD.replace('fallback_models = ["other"]', 'fallback_model = ["other"]')
        assert "models.gpt.fallback_model: unknown key" in errors_of(text)

    def test_unknown_provider_key(self):
        text = GOOD.replace('model_name = "gpt-4o"', 'model_name = "gpt-4o"\napi_bsae = "x"')
        assert 'models.gpt.providers.a.api_bsae: unknown key for provider type "openai"' in errors_of(text)

    def test_unknown_provider_type(self):
        errors = errors_of(GOOD.replace('type = "openai"', 'type = "opena"'))
        assert any(e.startswith('models.gpt.providers.a.type: unknown provider type "opena"') for e in errors)

    def test_missing_type_and_model_name(self):
        errors = errors_of(GOOD.replace('type = "dummy"\nmodel_name = "text"', 'api_key_location = "none"'))
        assert any(e.startswith("models.gpt.providers.b.type: missing") for e in errors)
        assert any(e.startswith("models.gpt.providers.b.model_name: missing") for e in errors)

    def test_wrong_type_of_value(self):
        assert "gateway.workers: expected an integer, got string" in errors_of(GOOD.replace("workers = 2", 'workers = "2"'))

    def test_bool_is_not_a_number(self):
        text = GOOD.replace("shutdown_timeout_s = 5", "shutdown_timeout_s = true")
        assert "gateway.shutdown_timeout_s: expected an integer or a number, got boolean" in errors_of(text)

    def test_bad_bind_address(self):
        errors = errors_of(GOOD.replace('"127.0.0.1:4000"', '"localhost"'))
        assert 'gateway.bind_address: "localhost" is not HOST:PORT' in errors

    def test_negative_timeout(self):
        errors = errors_of(GOOD.replace("total_ms = 500", "total_ms = -5"))
        assert "models.gpt.providers.a.timeouts.non_streaming.total_ms: must be > 0, got -5" in errors

    def test_unknown_timeout_key(self):
        errors = errors_of(GOOD.replace("ttft_ms = 100", "first_token_ms = 100"))
        assert "models.gpt.providers.a.timeouts.streaming.first_token_ms: unknown key" in errors

    def test_unknown_fallback_model(self):
        errors = errors_of(GOOD.replace('fallback_models = ["other"]', 'fallback_models = ["nope"]'))
        assert 'models.gpt.fallback_models[0]: model "nope" is not defined under models' in errors

    def test_fallback_to_itself(self):
        errors = errors_of(GOOD.replace('fallback_models = ["other"]', 'fallback_models = ["gpt"]'))
        assert "models.gpt.fallback_models[0]: a model cannot fall back to itself" in errors

    def test_unknown_capability(self):
        errors = errors_of(GOOD.replace('endpoints = ["chat", "embedding"]', 'endpoints = ["chat", "embeddings"]'))
        assert any(e.startswith('models.other.endpoints[1]: unknown capability "embeddings"') for e in errors)

    def test_missing_routing(self):
        errors = errors_of(GOOD.replace('routing = ["d"]\n', ""))
        assert any(e.startswith("models.other.routing: missing") for e in errors)

    def test_bad_api_key_location(self):
        errors = errors_of(GOOD.replace('api_key_location = "none"', 'api_key_location = "environment::X"'))
        assert any(e.startswith('models.gpt.providers.a.api_key_location: invalid api_key_location "environment::X"') for e in errors)

    def test_self_hosted_types_require_api_base(self):
        errors = errors_of(GOOD.replace('type = "openai"', 'type = "vllm"').replace('api_base = "http://127.0.0.1:9/v1/"\n', ""))
        assert 'models.gpt.providers.a.api_base: required for provider type "vllm"' in errors

    def test_api_base_must_be_http(self):
        errors = errors_of(GOOD.replace('"http://127.0.0.1:9/v1/"', '"127.0.0.1:9"'))
        assert 'models.gpt.providers.a.api_base: "127.0.0.1:9" is not an http:// or https:// URL' in errors

    def test_retry_config_unknown_key(self):
        errors = errors_of(GOOD.replace("num_retries = 2", "retries = 2"))
        assert "models.gpt.retry_config.retries: unknown key" in errors

    def test_quoted_model_names_in_paths(self):
        text = '[models."gpt-4.1"]\nrouting = ["x"]\n[models."gpt-4.1".providers.a]\ntype = "dummy"\nmodel_name = "t"\n'
        assert 'models."gpt-4.1".routing[0]: provider "x" is not defined under models."gpt-4.1".providers' in errors_of(text)

    def test_invalid_toml(self):
        errors = errors_of("[gateway\n")
        assert errors[0].startswith("invalid TOML:")

    def test_every_problem_is_reported(self):
        text = GOOD.replace("workers = 2", "workers = -1").replace('routing = ["d"]', 'routing = ["q"]')
        assert len(errors_of(text)) == 2

    def test_unreadable_file(self, tmp_path):
        with pytest.raises(ConfigError) as info:
            load_config(str(tmp_path / "missing.toml"), REGISTRY)
        assert "cannot read the file" in str(info.value)
