"""Blocking rules without sockets: parsing budapp's rules, and what a compiled RuleSet matches."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_config_text
from gateway.guard.rules import RuleSet, parse_rule, parse_rules
from providers.registry import build_registry


def rule(rule_id: str, rule_type: str, config: dict, **fields) -> dict:
    return {"id": rule_id, "rule_type": rule_type, "name": rule_id, "priority": 0, "status": "ACTIVE",
            "action": "block", "config": config, **fields}


def ids(rules: RuleSet, ip: str = "192.0.2.1", country: str | None = None, agent: str = "") -> list[str]:
    return [m.rule.id for m in rules.matches(ip, country, agent)]


class TestParsing:
    @pytest.mark.parametrize(("data", "reason"), [
        ({"rule_type": "IP_BLOCKING", "config": {"ips": ["1.2.3.4"]}}, "id: missing"),
        (rule("a", "GEO", {}), "rule_type: one of"),
        (rule("a", "IP_BLOCKING", {"ips": ["1.2.3.999"]}), "is not an IP address or CIDR range"),
        (rule("a", "IP_BLOCKING", {}), "no ip_addresses, ips or cidrs"),
        (rule("a", "COUNTRY_BLOCKING", {"countries": "DE"}), "expected an array of strings"),
        (rule("a", "USER_AGENT_BLOCKING", {"patterns": ["/(/"]}), "a bad regex"),
        (rule("a", "RATE_BASED_BLOCKING", {"threshold": 0}), "config.threshold: expected a whole number > 0"),
        (rule("a", "IP_BLOCKING", {"ips": ["1.2.3.4"]}, action="drop"), "action: block or log"),
    ])
    def test_bad_rules_say_why(self, data, reason):
        with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
            parse_rule(data, "t")

    def test_inactive_and_expired_rules_do_not_apply(self):
        assert parse_rule(rule("a", "IP_BLOCKING", {"ips": ["1.2.3.4"]}, status="INACTIVE"), "t") is None
        assert parse_rule(rule("a", "IP_BLOCKING", {"ips": ["1.2.3.4"]}, expires_at="2001-01-01T00:00:00Z"), "t") is None
        live = parse_rule(rule("a", "IP_BLOCKING", {"ips": ["1.2.3.4"]}, expires_at="2999-01-01T00:00:00"), "t")
        assert live is not None and live.expires_at > 0

    def test_rate_defaults(self):
        found = parse_rule(rule("r", "RATE_BASED_BLOCKING", {}), "t")
        assert (found.threshold, found.window_s) == (100, 60)
        found = parse_rule(rule("r", "RATE_BASED_BLOCKING", {"requests_per_minute": 5, "window_minutes": 2}), "t")
        assert (found.threshold, found.window_s) == (5, 120)

    def test_an_array_skips_what_does_not_parse(self, caplog):
        rules = parse_rules([rule("good", "IP_BLOCKING", {"ips": ["1.2.3.4"]}), {"id": "bad"}], "blocking_rules:global")
        assert [r.id for r in rules] == ["good"]
        assert "blocking_rules:global[1]" in caplog.text
        assert parse_rules({"not": "a list"}, "x") == []

    def test_toml_rules_are_checked_with_their_key_path(self):
        text = """
[gateway.blocking]
enabled = true
[[gateway.blocking.rules]]
id = "a"
rule_type = "IP_BLOCKING"
config = { ips = ["nope"] }
"""
        with pytest.raises(ConfigError) as info:
            load_config_text(text, "t.toml", build_registry())
        assert info.value.errors == ["gateway.blocking.rules[0]: config: 'nope' is not an IP address or CIDR range"]


class TestMatching:
    def test_addresses_ranges_and_mapped_ipv4(self):
        rules = RuleSet([parse_rule(rule("v4", "IP_BLOCKING", {"ip_addresses": ["203.0.113.7"]}), "t"),
                         parse_rule(rule("net", "IP_BLOCKING", {"cidrs": ["10.0.0.0/8", "2001:db8::/32"]}), "t"),
                         parse_rule(rule("v6", "IP_BLOCKING", {"ips": ["2001:db8::1"]}), "t")])
        assert ids(rules, "203.0.113.7") == ["v4"]
        assert ids(rules, "::ffff:203.0.113.7") == ["v4"]
        assert ids(rules, "10.255.255.255") == ["net"] and ids(rules, "11.0.0.0") == []
        assert sorted(ids(rules, "2001:db8::1")) == ["net", "v6"]
        assert ids(rules, "not an address") == []

    def test_overlapping_ranges_of_many_rules(self):
        rules = RuleSet([parse_rule(rule(f"r{i}", "IP_BLOCKING", {"cidrs": [f"10.0.0.0/{8 + i}"]}), "t")
                         for i in range(8)])
        assert ids(rules, "10.0.0.1") == [f"r{i}" for i in range(8)]
        assert ids(rules, "10.128.0.0") == ["r0"]

    def test_countries_in_any_case(self):
        rules = RuleSet([parse_rule(rule("c", "COUNTRY_BLOCKING", {"country_codes": ["kp", "IR"]}), "t")])
        assert ids(rules, country="KP") == ["c"] and ids(rules, country="ir") == ["c"]
        assert ids(rules, country="DE") == [] and ids(rules, country=None) == []

    def test_agent_patterns(self):
        rules = RuleSet([parse_rule(rule("sub", "USER_AGENT_BLOCKING", {"patterns": ["BadBot"]}), "t"),
                         parse_rule(rule("glob", "USER_AGENT_BLOCKING", {"patterns": ["python-requests/*"]}), "t"),
                         parse_rule(rule("re", "USER_AGENT_BLOCKING", {"patterns": [r"/^curl\/[0-9]+/"]}), "t")])
        assert ids(rules, agent="Mozilla (compatible; badbot/2.1)") == ["sub"]
        assert ids(rules, agent="Python-Requests/2.31") == ["glob"]
        assert ids(rules, agent="my python-requests/2.31") == [], "a glob spans the whole agent"
        assert ids(rules, agent="CURL/8.5.0") == ["re"]
        assert ids(rules, agent="Mozilla/5.0") == [] and ids(rules, agent="") == []

    def test_priority_order_then_the_order_given(self):
        rules = RuleSet([parse_rule(rule("low", "IP_BLOCKING", {"ips": ["1.1.1.1"]}, priority=1), "t"),
                         parse_rule(rule("high", "COUNTRY_BLOCKING", {"countries": ["AU"]}, priority=9), "t"),
                         parse_rule(rule("low-2", "IP_BLOCKING", {"cidrs": ["1.1.1.0/24"]}, priority=1), "t")])
        assert ids(rules, "1.1.1.1", "AU") == ["high", "low", "low-2"]
