"""TensorZero's tables in a config: what loads, what is refused (file, key path, reason), and what is
accepted without being acted on."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config_text
from providers.registry import build_registry

MODEL = '[models.m]\nrouting = ["p"]\n[models.m.providers.p]\ntype = "dummy"\nmodel_name = "echo"\n'


def load(text: str, tmp_path=None):
    source = str(tmp_path / "tensorzero.toml") if tmp_path is not None else "t.toml"
    return load_config_text(MODEL + text, source, build_registry())


def errors_of(text: str, tmp_path=None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(text, tmp_path)
    return e.value.errors


def test_a_function_with_files_relative_to_the_config(tmp_path):
    (tmp_path / "s.json").write_text('{"type": "object", "properties": {"x": {"type": "string"}}}')
    (tmp_path / "t.minijinja").write_text("x is {{ x }}")
    config = load('[functions.f]\ntype = "chat"\nsystem_schema = "s.json"\n'
                  '[functions.f.variants.v]\ntype = "chat_completion"\nmodel = "m"\nsystem_template = "t.minijinja"\n',
                  tmp_path)
    function = config.tensorzero.functions["f"]
    assert function.schemas["system"].valid({"x": "a"}) and "system" in function.variants["v"].templates


@pytest.mark.parametrize(("text", "error"), [
    ('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "chat_completion"\nmodle = "m"\n',
     "functions.f.variants.v.modle: unknown key"),
    ('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "chat_completion"\nmodle = "m"\n',
     "functions.f.variants.v.model: missing"),
    ('[functions.f]\ntype = "stream"\n', 'functions.f.type: expected "chat" or "json"'),
    ('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "sampler"\n',
     'functions.f.variants.v: unknown type "sampler"'),
    ('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "chat_completion"\nmodel = "gone"\n',
     'functions.f.variants.v.model: model "gone" is not defined under models'),
    ('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "chat_completion"\nmodel = "opnai::gpt-4o"\n',
     'functions.f.variants.v.model: shorthand "opnai::gpt-4o": unknown provider type "opnai"'),
    ('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "chat_completion"\nmodel = "m"\n'
     'json_mode = "strict"\n', "functions.f.variants.v.json_mode: only the variants of a type = \"json\" function"),
    ('[functions.f]\ntype = "chat"\ntools = ["t"]\n[functions.f.variants.v]\ntype = "chat_completion"\nmodel = "m"\n',
     'functions.f.tools[0]: tool "t" is not defined under tools'),
    ('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "chat_completion"\nmodel = "m"\n'
     '[functions.f.experimentation]\ntype = "static"\ncandidate_variants = ["w"]\n',
     'functions.f.experimentation.candidate_variants: variant "w" is not defined under variants'),
    ('[functions.f]\ntype = "chat"\nsystem_schema = "missing.json"\n[functions.f.variants.v]\n'
     'type = "chat_completion"\nmodel = "m"\n', 'functions.f.system_schema: cannot read "missing.json"'),
    ('[metrics.comment]\ntype = "boolean"\noptimize = "max"\nlevel = "inference"\n',
     'metrics.comment: "comment" is a built-in feedback'),
    ('[metrics.x]\ntype = "boolean"\noptimize = "up"\nlevel = "inference"\n', 'metrics.x.optimize: expected "max" or "min"'),
    ('[object_storage]\ntype = "tape"\n', 'object_storage.type: expected "s3_compatible", "filesystem" or "disabled"'),
    ('[postgres]\npool = 3\n', "postgres.pool: unknown key"),
])
def test_refusals_name_the_key_path(text, error):
    errors = errors_of(text)
    assert any(e.startswith(error) for e in errors), errors


def test_a_template_that_does_not_compile_is_refused_with_its_line(tmp_path):
    (tmp_path / "t.minijinja").write_text("line one\n{% if %}")
    errors = errors_of('[functions.f]\ntype = "chat"\n[functions.f.variants.v]\ntype = "chat_completion"\n'
                       'model = "m"\nsystem_template = "t.minijinja"\n', tmp_path)
    assert any(e.startswith("functions.f.variants.v.system_template: t.minijinja: line 2") for e in errors), errors


def test_a_schema_without_a_template_in_a_variant_is_refused(tmp_path):
    (tmp_path / "s.json").write_text('{"type": "object"}')
    errors = errors_of('[functions.f]\ntype = "chat"\nschemas.topic.path = "s.json"\n[functions.f.variants.v]\n'
                       'type = "chat_completion"\nmodel = "m"\n', tmp_path)
    assert 'functions.f.variants.v: the function has a schema "topic" but this variant has no template of that name' \
        in errors


def test_tensorzero_keys_taken_but_not_acted_on_are_listed():
    config = load('[gateway]\nglobal_outbound_http_timeout_ms = 1000\n[gateway.observability]\nbatch_writes = '
                  '{ enabled = true }\n[provider_types.openai.defaults]\napi_key_location = "env::X"\n'
                  '[clickhouse]\ndisable_automatic_migrations = true\n')
    assert config.unimplemented == ("gateway.global_outbound_http_timeout_ms", "gateway.observability.batch_writes",
                                    "provider_types", "clickhouse.disable_automatic_migrations")


def test_a_key_tensorzero_does_not_have_is_still_refused():
    assert "gateway.colour: unknown key" in errors_of('[gateway]\ncolour = "blue"\n')


def _provider(table: str):
    config = load_config_text(f'[models.x]\nrouting = ["p"]\n[models.x.providers.p]\n{table}', "t.toml", build_registry())
    return config.models["x"].providers["p"], config


def test_azure_takes_tensorzero_endpoint_and_no_model_name(monkeypatch):
    monkeypatch.setenv("AZ_ENDPOINT", "https://acme.openai.azure.com/")
    p, _ = _provider('type = "azure"\ndeployment_id = "gpt4o-prod"\nendpoint = "env::AZ_ENDPOINT"\n')
    assert (p.api_base, p.model_name) == ("https://acme.openai.azure.com", "gpt4o-prod")


def test_extra_body_and_headers_in_tensorzero_list_form():
    p, _ = _provider('type = "openai"\nmodel_name = "m"\n'
                     'extra_body = [{ pointer = "/a/b", value = 1 }, { pointer = "/c", delete = true }]\n'
                     'extra_headers = [{ name = "X-One", value = "1" }, { name = "User-Agent", delete = true }]\n')
    assert [dict(e) for e in p.body_edits] == [{"pointer": "/a/b", "value": 1}, {"pointer": "/c", "delete": True}]
    assert dict(p.extra_headers) == {"X-One": "1", "User-Agent": None}


def test_cost_entries_price_an_answer():
    p, _ = _provider('type = "openai"\nmodel_name = "m"\ncost = [\n'
                     '  { pointer = "/usage/prompt_tokens", cost_per_million = 2.5, required = true },\n'
                     '  { pointer_nonstreaming = "/usage/completion_tokens", pointer_streaming = "/usage/completion_tokens",'
                     ' cost_per_million = 10.0 },\n  { pointer = "/usage/web_searches", cost_per_unit = 0.01 },\n]\n')
    answer = {"usage": {"prompt_tokens": 1000, "completion_tokens": 100, "web_searches": 2}}
    assert p.cost.cost_of(None, answer) == pytest.approx(0.0025 + 0.001 + 0.02)
    assert p.cost.cost_of(None, {"usage": {"completion_tokens": 1}}) is None  # a required value is missing


@pytest.mark.parametrize(("table", "error"), [
    ('type = "openai"\nmodel_name = "m"\nextra_body = [{ value = 1 }]\n',
     "models.x.providers.p.extra_body[0].pointer: missing"),
    ('type = "openai"\nmodel_name = "m"\ncost = [{ pointer = "/a" }]\n',
     "models.x.providers.p.cost[0]: needs a number as exactly one of cost_per_million and cost_per_unit"),
    ('type = "openai"\nmodel_name = "m"\nendpoint = "https://x"\n', "models.x.providers.p.endpoint: unknown key"),
    ('type = "azure"\nendpoint = "https://x"\n', 'models.x.providers.p.deployment_id: required for provider type "azure"'),
])
def test_provider_refusals(table, error):
    with pytest.raises(ConfigError) as e:
        _provider(table)
    assert any(line.startswith(error) for line in e.value.errors), e.value.errors


def test_provider_keys_taken_but_unused_are_listed():
    _, config = _provider('type = "openai"\nmodel_name = "m"\napi_type = "responses"\n'
                          'discard_unknown_chunks = true\n'
                          'api_key_location = { default = "env::A", fallback = "env::B" }\n')
    assert set(config.unimplemented) == {"models.x.providers.p.discard_unknown_chunks",
                                         "models.x.providers.p.api_type",
                                         "models.x.providers.p.api_key_location.fallback"}


def test_batch_cost_prices_batch_answers_and_has_one_pointer():
    p, _ = _provider('type = "openai"\nmodel_name = "m"\n'
                     'batch_cost = [{ pointer = "/usage/prompt_tokens", cost_per_million = 1.25 }]\n')
    assert p.batch_cost.cost_of(None, {"usage": {"prompt_tokens": 1000}}) == pytest.approx(0.00125)
    with pytest.raises(ConfigError) as e:
        _provider('type = "openai"\nmodel_name = "m"\nbatch_cost = [{ pointer_nonstreaming = "/a", '
                  'pointer_streaming = "/a", cost_per_unit = 1 }]\n')
    assert any("batch_cost[0]: needs pointer" in line for line in e.value.errors), e.value.errors
