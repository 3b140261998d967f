"""The observe and limits tables read through their pydantic models: the values they give, and the
messages the hand-written checks gave before them, word for word."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config_text
from gateway.config.limits import rate_limits_json
from gateway.config.schema import RateLimits
from providers.registry import build_registry

REGISTRY = build_registry()
MODEL = '[models.m]\nrouting = ["d"]\n[models.m.providers.d]\ntype = "dummy"\nmodel_name = "text"\n'


def load(text: str):
    return load_config_text(MODEL + text, "t.toml", REGISTRY)


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value.errors


@pytest.mark.parametrize(("text", "error"), [
    ("[gateway.metrics]\nduration_buckets = [0.2, 0.1]",
     "gateway.metrics.duration_buckets: must be positive and strictly ascending"),
    ("[gateway.metrics]\nttft_buckets = [1, true]", "gateway.metrics.ttft_buckets: expected a non-empty array of numbers (seconds)"),
    ('[gateway.metrics]\noverhead_buckets = "x"', "gateway.metrics.overhead_buckets: expected an array, got string"),
    ('[gateway.observability]\nclickhouse_url = "ftp://u:secret@h"',
     "gateway.observability.clickhouse_url: expected clickhouse://, http:// or https://"),
    ("[gateway.observability]\nbatch_rows = 0", "gateway.observability.batch_rows: must be > 0, got 0"),
    ('[gateway.observability]\nqueue_rows = "5"', "gateway.observability.queue_rows: expected an integer, got string"),
    ('[gateway.analytics]\ntrusted_proxies = ["10.0.0.0/8", "nope"]',
     'gateway.analytics.trusted_proxies[1]: "nope" is not an IP address or CIDR range'),
    ("[gateway.export.otlp.traces]\nextra_headers = { X = 1 }",
     "gateway.export.otlp.traces.extra_headers.X: expected a string, got integer"),
    ("[gateway.export.otlq]\n", "gateway.export.otlq: unknown key"),
    ("[models.m.pricing]\ninput_cost = 1", "models.m.pricing.output_cost: missing (the price per per_tokens tokens)"),
    ("[models.m.pricing]\ninput_cost = -1\noutput_cost = 1", "models.m.pricing.input_cost: must be >= 0, got -1"),
    ('[models.m.pricing]\ninput_cost = 1\noutput_cost = "1"',
     "models.m.pricing.output_cost: expected an integer or a number, got string"),
    ("[gateway.rate_limits]\nredis_timeout_ms = 0", "gateway.rate_limits.redis_timeout_ms: must be > 0, got 0"),
    ("[gateway.rate_limits]\nlease_ttl_s = true", "gateway.rate_limits.lease_ttl_s: expected an integer or a number, got boolean"),
    ('[gateway.rate_limits]\ndefault_algorithm = "leaky"',
     'gateway.rate_limits.default_algorithm: unknown algorithm "leaky" (one of: sliding_window, fixed_window, token_bucket)'),
    ("[gateway.usage_limits]\nfail_open = 1", "gateway.usage_limits.fail_open: expected a boolean, got integer"),
    ("[models.m.rate_limits]\nburst_size = 2.0", "models.m.rate_limits.burst_size: expected an integer, got number"),
    ("[[rate_limiting.rules]]\npriority = 0\ntokens_per_minute = { capacity = 1.5, refill_rate = 1 }",
     "rate_limiting.rules[0].tokens_per_minute: tokens limits are whole numbers"),
    ('[[rate_limiting.rules]]\npriority = 0\ncost_per_minute = "x"',
     "rate_limiting.rules[0].cost_per_minute: expected a number or a table { capacity, refill_rate }"),
    ("[[rate_limiting.rules]]\npriority = 0\nmodel_inferences_per_day = 0",
     "rate_limiting.rules[0].model_inferences_per_day: must be > 0, got 0"),
    ("[[rate_limiting.rules]]\npriority = 0\ntokens_per_hour = { capacity = 1 }",
     "rate_limiting.rules[0].tokens_per_hour.refill_rate: missing"),
    ("[[rate_limiting.rules]]\npriority = 0", "rate_limiting.rules[0]: sets no limit (e.g. model_inferences_per_minute = 10)"),
    ('[[rate_limiting.rules]]\npriority = 0\ntokens_per_hour = 1\nscope = [{ tag_key = "a", api_key_public_id = "b" }]',
     "rate_limiting.rules[0].scope[0]: is either { tag_key, tag_value } or { api_key_public_id }"),
    ('[[rate_limiting.rules]]\npriority = 0\ntokens_per_hour = 1\nscope = [{ tag_key = "a" }]',
     "rate_limiting.rules[0].scope[0].tag_value: missing"),
])
def test_a_bad_value_is_told_as_before(text, error):
    errors = errors_of(text)
    assert error in errors, errors
    assert not any("secret" in e for e in errors)


def test_values_are_read_with_their_defaults():
    config = load('[gateway.observability]\nclickhouse_url = ""\nbatch_rows = 7\n'
                  '[gateway.analytics]\ntrusted_proxies = ["::1"]\ngeoip_db_path = ""\n'
                  '[gateway.rate_limits]\nredis_timeout_ms = 50\n'
                  '[models.m.pricing]\ninput_cost = 1\noutput_cost = 2.5\ncurrency = ""\n'
                  "[rate_limiting]\ndefault_cost = 2\n")
    gateway = config.gateway
    assert (gateway.observability.clickhouse_url, gateway.observability.batch_rows) == (None, 7)
    assert gateway.observability.queue_rows == 10_000
    assert (gateway.analytics.trusted_proxies, gateway.analytics.geoip_db_path) == (("::1",), None)
    # A TOML integer where a number is expected is that number, a float.
    assert type(gateway.rate_limits.redis_timeout_ms) is float and gateway.rate_limits.redis_timeout_ms == 50
    pricing = config.models["m"].pricing
    assert (pricing.input_cost, type(pricing.input_cost), pricing.currency) == (1.0, float, "USD")
    assert (config.rate_limiting.default_cost, type(config.rate_limiting.default_cost)) == (2.0, float)


def test_tensorzero_keys_taken_unused_are_listed_in_the_files_order():
    config = load('[gateway.observability]\nbackend = "x"\nasync_writes = true\n'
                  "[gateway.metrics]\ntensorzero_inference_latency_overhead_seconds_buckets = [1]\n"
                  '[gateway.export.otlp.traces]\ninclude_content = true\nformat = "x"\n')
    assert config.unimplemented == ("gateway.metrics.tensorzero_inference_latency_overhead_seconds_buckets",
                                    "gateway.observability.backend", "gateway.observability.async_writes",
                                    "gateway.export.otlp.traces.include_content",
                                    "gateway.export.otlp.traces.format")


def test_a_rules_digest_is_what_it_was():
    # The digest names the rule's counters in Redis: a changed digest would restart every limit.
    rules = load('[[rate_limiting.rules]]\npriority = 1\ntokens_per_minute = { capacity = 100, refill_rate = 10 }\n'
                 'cost_per_day = 2.5\nscope = [{ tag_key = "user_id", tag_value = "tensorzero::each" }, '
                 '{ api_key_public_id = "abc" }]\n'
                 "[[rate_limiting.rules]]\nalways = true\nmodel_inferences_per_hour = 1000\n").rate_limiting.rules
    assert [r.digest for r in rules] == ["b57c0b409a922c68", "2b9a837d4a2408b4"]


def test_published_limits_take_null_for_not_set():
    limits, errors = rate_limits_json('{"algorithm": null, "requests_per_minute": null, "tokens_per_minute": 5}', "w")
    assert (limits, errors) == (RateLimits(tokens_per_minute=5), [])
    assert set(rate_limits_json('{"requests_per_minute": "5", "colour": null}', "w")[1]) == {
        "w.requests_per_minute: expected an integer, got string", "w.colour: unknown key"}
    assert rate_limits_json("[1]", "w")[1] == ["w: expected a table, got array"]
