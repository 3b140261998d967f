"""The guard's tables read through their pydantic models: the exact lines the hand-written checks
gave (they rest on ``validation.read_table``'s wording), and the options as written."""

from __future__ import annotations

import pytest

from gateway.config import guard
from gateway.config.checker import Checker

LOCAL = {"type": "local", "pii": ["email"]}
AZURE = {"type": "azure_content_safety", "endpoint": "https://az"}


def profile_errors(providers: dict, **fields: object) -> list[str]:
    c = Checker()
    guard.profile(c, "p", {"providers": providers, **fields}, "guardrails.p")
    return c.errors


@pytest.mark.parametrize(("providers", "fields", "error"), [
    ({"x": {"type": "lakera"}}, {}, "guardrails.p.providers.x.type: one of: local, openai, azure_content_safety"),
    ({"x": {"pii": ["email"]}}, {}, "guardrails.p.providers.x.type: one of: local, openai, azure_content_safety"),
    ({"x": 5}, {}, "guardrails.p.providers.x: expected a table, got integer"),
    ({}, {}, "guardrails.p.providers: names no provider"),
    ({"l": LOCAL}, {"severity_threshold": "high"},
     "guardrails.p.severity_threshold: expected an integer or a number, got string"),
    ({"l": LOCAL}, {"execution_mode": "serial"}, 'guardrails.p.execution_mode: one of "parallel", "sequential"'),
    ({"l": LOCAL}, {"failure_mode": 1}, "guardrails.p.failure_mode: expected a string, got integer"),
    ({"l": LOCAL}, {"severity_threshold": None}, "guardrails.p.severity_threshold: "
                                                 "expected an integer or a number, got NoneType"),
    ({"l": {**LOCAL, "api_base": "http://x"}}, {}, "guardrails.p.providers.l.api_base: unknown key"),
    ({"l": {**LOCAL, "pii": ["email", 3]}}, {}, "guardrails.p.providers.l.pii[1]: expected a string, got integer"),
    ({"l": {**LOCAL, "pii": ["dna"]}}, {},
     'guardrails.p.providers.l: unknown detector "dna" (one of: email, phone, credit_card, ssn, ip, secret)'),
    ({"m": {"type": "openai", "timeout_ms": 0}}, {}, "guardrails.p.providers.m.timeout_ms: must be > 0, got 0"),
    ({"m": {"type": "openai", "api_base": "127.0.0.1:9"}}, {},
     'guardrails.p.providers.m.api_base: "127.0.0.1:9" is not an http:// or https:// URL'),
    ({"m": {"type": "openai", "probe_config": {"omni-moderation-latest": "hate"}}}, {},
     "guardrails.p.providers.m.probe_config.omni-moderation-latest: expected an array of category names"),
    ({"a": {"type": "azure_content_safety"}}, {},
     "guardrails.p.providers.a.endpoint: missing (the Content Safety resource's endpoint)"),
    ({"a": {**AZURE, "severity_threshold": 9}}, {}, "guardrails.p.providers.a.severity_threshold: "
                                                     "a severity from 0 to 7, got 9"),
    ({"a": {**AZURE, "severity_threshold": 2.0}}, {},
     "guardrails.p.providers.a.severity_threshold: expected an integer, got number"),
])
def test_a_profile_is_refused_with_the_checkers_words(providers, fields, error):
    assert profile_errors(providers, **fields) == [error]


def test_a_bad_api_key_location_is_told_by_its_parser():
    [error] = profile_errors({"m": {"type": "openai", "api_key_location": "environment::X"}})
    assert error.startswith('guardrails.p.providers.m.api_key_location: invalid api_key_location "environment::X"')


def test_options_keep_the_values_as_written():
    c = Checker()
    found = guard.profile(c, "p", {"severity_threshold": 1, "providers": {
        "m": {"type": "openai", "api_key_location": "none", "severity_threshold": 1, "timeout_ms": 250,
              "probe_config": {"omni-moderation-latest": ["hate"]}},
        "l": {"type": "local", "patterns": {"order": "ORD-[0-9]+"}, "action": "redact"}}}, "guardrail_table:p")
    assert c.errors == []
    assert found.severity_threshold == 1.0 and found.guard_types == frozenset({"input", "output"})
    openai, local = found.providers
    assert dict(openai.options) == {"api_base": None, "api_key_location": "none", "severity_threshold": 1,
                                    "timeout_ms": 250, "probe_config": {"omni-moderation-latest": ("hate",)}}
    assert type(openai.options["timeout_ms"]) is int and type(openai.options["severity_threshold"]) is int
    assert (local.options["pii"], dict(local.options["patterns"]), local.options["deny_words"]) == (
        (), {"order": "ORD-[0-9]+"}, ())


@pytest.mark.parametrize(("data", "error"), [
    ({"enabled": "yes"}, "gateway.blocking.enabled: expected a boolean, got string"),
    ({"rules": [{"id": "a", "rule_type": "IP_BLOCKING", "config": {"ips": ["1.2.3.4"]}, "endpoint_id": 7}]},
     "gateway.blocking.rules[0].endpoint_id: expected a string"),
    ({"rules": [{"id": "a", "rule_type": "GEO"}]},
     "gateway.blocking.rules[0]: rule_type: one of IP_BLOCKING, COUNTRY_BLOCKING, USER_AGENT_BLOCKING, "
     "RATE_BASED_BLOCKING"),
])
def test_blocking_is_refused_with_the_checkers_words(data, error):
    c = Checker()
    guard.blocking(c, data)
    assert c.errors == [error]


def test_the_stream_window_takes_the_table_then_the_environment(monkeypatch):
    monkeypatch.setenv(guard.WINDOW_ENV, "80")
    c = Checker()
    assert guard.stream_window_chars(c, {}) == 80 and guard.stream_window_chars(c, {"stream_window_chars": 9}) == 9
    guard.stream_window_chars(c, {"stream_window_chars": 0})
    assert c.errors == ["gateway.guardrails.stream_window_chars: must be > 0, got 0"]
