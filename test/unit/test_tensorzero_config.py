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
