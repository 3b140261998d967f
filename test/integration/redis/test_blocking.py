"""Blocking rules budapp writes to a real Redis: each rule type, priority, status and expiry, ``log`` rules,
endpoint rules, rules checked before auth, live changes, custom reasons, the 403 and the rule stats.

Two open gateways (no auth: the endpoint of a request is its model's name) share one Redis database, so
a rate rule counts across both; an authenticated gateway has a database of its own. The open gateways'
tests take turns on ``blocking_rules:global``: each writes its own rules there (with a canary rule,
blocking an address of its own, to tell when every gateway has them) and sends from addresses no other
test uses, so no two tests share a match or a counter.
"""

from __future__ import annotations

import datetime
import itertools
import json
import time
import uuid
from pathlib import Path

import pytest
from budapp import grant, new_raw_key
from configs import dummy_provider, model_toml

from .polling import CHANGE_VISIBLE_S, wait_loaded, wait_until

MESSAGES = [{"role": "user", "content": "hi"}]
GEOIP_CITY = Path(__file__).resolve().parents[2] / "data" / "geoip" / "GeoIP2-City-Test.mmdb"
#: Addresses the GeoIP test database places in a country (see test/integration/observe/test_analytics.py).
GB_IP, US_IP = "81.2.69.142", "216.160.83.56"
OPEN_DB, AUTH_DB = 0, 1
GLOBAL_KEY = "blocking_rules:global"
STATS_PREFIX = "gateway:rule_stats:"
REASON_PREFIX = "blocking_rule_reason:"
MATCHES = "budgateway_blocking_matches_total"
#: The rule stats' Redis TTL, and how far below it the TTL may be once a test reads it.
STATS_TTL_S = 86_400
STATS_TTL_SLACK_S = 60
#: The open gateways' full resync: the safety net behind the notifications, short here so a test sees it run.
RESYNC_INTERVAL_S = 1.0
RESYNC_MARGIN_S = 1.5
#: Stats are written one way after the answer; they reach Redis within this.
STATS_VISIBLE_S = 2.0
#: A rule that expires while it is loaded: its lifetime from being written.
SHORT_LIFE_S = 2.0
RATE_THRESHOLD = 3
CANARY_PRIORITY = 1_000_000
REQUEST_TIMEOUT_S = 5.0
MODELS = "".join(model_toml(name, {"d": dummy_provider("hello")}) for name in ("plain", "guarded", "unguarded"))

_addresses = (f"198.51.100.{n}" for n in itertools.count(1))


def _address() -> str:
    """An IPv4 address (TEST-NET-2) no other test sends from."""
    return next(_addresses)


def _rule(rule_type: str, config: dict, **fields: object) -> dict:
    """A rule as budapp writes it, with an id and a name of its own; ``fields`` add or replace keys."""
    rule_id = f"rule-{uuid.uuid4().hex[:12]}"
    return {"id": rule_id, "rule_type": rule_type, "name": f"name-{rule_id}", "priority": 10, "status": "ACTIVE",
            "expires_at": None, "action": "block", "config": config, **fields}


def _ip_rule(*addresses: str, **fields: object) -> dict:
    return _rule("IP_BLOCKING", {"ip_addresses": list(addresses)}, **fields)


def _iso(seconds_from_now: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)
    return moment.isoformat().replace("+00:00", "Z")


def _chat(gw, ip: str | None = None, *, agent: str | None = None, model: str = "plain", key: str | None = None):
    headers = {}
    if ip is not None:
        headers["X-Forwarded-For"] = ip
    if agent is not None:
        headers["User-Agent"] = agent
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES}, headers=headers,
                      timeout=REQUEST_TIMEOUT_S)


def _blocked_by(resp) -> str | None:
    """The rule a 403 names (None for any other answer)."""
    return resp.headers.get("x-blocked-by-rule") if resp.status == 403 else None


def _within(timeout: float, predicate) -> float:
    """Seconds until ``predicate`` held; fails the test if it did not within ``timeout``."""
    elapsed = wait_until(predicate, timeout)
    assert elapsed is not None, f"not effective within {timeout} s"
    return elapsed


def _blocked_body(reason: str) -> dict:
    return {"error": {"message": reason, "type": "permission_error", "param": None, "code": "blocked"}}


class _Canary:
    """A rule of the highest priority blocking an address of its own: when a gateway blocks that address
    by it, it has every rule written with it."""

    def __init__(self) -> None:
        self.ip = _address()
        self.rule = _ip_rule(self.ip, priority=CANARY_PRIORITY)

    def seen_by(self, gw) -> bool:
        return _blocked_by(_chat(gw, self.ip)) == self.rule["id"]


def _install(redis_client, gateways, rules: list[dict], key: str = GLOBAL_KEY) -> _Canary:
    """Write ``rules`` (and a canary) to ``key``; returns once every gateway of ``gateways`` applies them."""
    canary = _Canary()
    redis_client.set(key, json.dumps([*rules, canary.rule]))
    for gw in gateways:
        _within(CHANGE_VISIBLE_S, lambda gw=gw: canary.seen_by(gw))
    return canary


def _stats(redis_client, rule_id: str, match_count: int) -> dict[str, str]:
    """The stats hash of ``rule_id`` once its match_count is ``match_count`` (it is written one way)."""
    key = STATS_PREFIX + rule_id
    _within(STATS_VISIBLE_S, lambda: redis_client.hget(key, "match_count") == str(match_count).encode())
    return {k.decode(): v.decode() for k, v in redis_client.hgetall(key).items()}


# -- the open gateways ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules_redis(redis_server):
    return redis_server.client(OPEN_DB)


def _open_gateway(module_gateway_factory, redis_server, store_env):
    settings = {"workers": 1, "blocking": {"enabled": True},
                "authentication": {"enabled": False, "resync_interval_s": RESYNC_INTERVAL_S},
                "analytics": {"geoip_db_path": str(GEOIP_CITY)}}
    gateway = module_gateway_factory(MODELS, settings=settings, env=store_env(redis_server.url(OPEN_DB)))
    wait_loaded(gateway)
    return gateway


@pytest.fixture(scope="module")
def gw(module_gateway_factory, redis_server, store_env):
    return _open_gateway(module_gateway_factory, redis_server, store_env)


@pytest.fixture(scope="module")
def gw2(module_gateway_factory, redis_server, store_env):
    """A second instance on the same Redis database."""
    return _open_gateway(module_gateway_factory, redis_server, store_env)


# The addresses and agents of the rule-type tests, and their rules (written once, for the class).
V4, V6, MAPPED_V4 = "203.0.113.7", "2001:db8::7", "203.0.113.8"
CIDR, IN_CIDR, OUT_OF_CIDR = "203.0.113.128/25", "203.0.113.200", "203.0.113.127"
TYPE_RULES = {
    "v4": _ip_rule(V4),
    "v6": _rule("IP_BLOCKING", {"ips": [V6]}),
    "mapped": _ip_rule(MAPPED_V4),
    "cidr": _rule("IP_BLOCKING", {"cidrs": [CIDR]}),
    "country": _rule("COUNTRY_BLOCKING", {"countries": ["gb"]}),
    "substring": _rule("USER_AGENT_BLOCKING", {"patterns": ["BadBot"]}),
    "glob": _rule("USER_AGENT_BLOCKING", {"patterns": ["curl/*"]}),
    "regex": _rule("USER_AGENT_BLOCKING", {"patterns": [r"/^python-requests\/\d+/"]}),
}


@pytest.fixture(scope="class")
def type_rules(gw, rules_redis):
    _install(rules_redis, [gw], list(TYPE_RULES.values()))


@pytest.mark.usefixtures("type_rules")
class TestRuleTypes:
    def test_ipv4_address_is_blocked(self, gw):
        resp = _chat(gw, V4)
        assert _blocked_by(resp) == TYPE_RULES["v4"]["id"], resp
        assert resp.headers["x-block-reason"] == f"IP {V4} is blocked"

    def test_other_ipv4_address_is_let_through(self, gw):
        assert _chat(gw, "203.0.113.6").status == 200

    def test_ipv6_address_is_blocked_in_any_spelling(self, gw):
        for spelling in (V6, "2001:DB8:0:0:0:0:0:7"):
            resp = _chat(gw, spelling)
            assert _blocked_by(resp) == TYPE_RULES["v6"]["id"], (spelling, resp)
        assert _chat(gw, "2001:db8::8").status == 200

    def test_ipv4_mapped_ipv6_client_matches_the_ipv4_rule(self, gw):
        assert _blocked_by(_chat(gw, f"::ffff:{MAPPED_V4}")) == TYPE_RULES["mapped"]["id"]

    def test_cidr_blocks_its_range_only(self, gw):
        assert _blocked_by(_chat(gw, IN_CIDR)) == TYPE_RULES["cidr"]["id"]
        assert _chat(gw, OUT_OF_CIDR).status == 200

    def test_country_of_the_forwarded_address_is_blocked(self, gw):
        resp = _chat(gw, GB_IP)
        assert _blocked_by(resp) == TYPE_RULES["country"]["id"], resp
        assert resp.json() == _blocked_body("Requests from country GB are blocked")

    def test_other_country_is_let_through(self, gw):
        assert _chat(gw, US_IP).status == 200

    def test_user_agent_substring_matches_in_any_case(self, gw):
        resp = _chat(gw, agent="Mozilla/5.0 (compatible; BADBOT/2.1)")
        assert _blocked_by(resp) == TYPE_RULES["substring"]["id"], resp
        assert resp.headers["x-block-reason"] == "User agent is blocked"

    def test_user_agent_glob_matches_the_whole_agent_in_any_case(self, gw):
        assert _blocked_by(_chat(gw, agent="CURL/8.4.0")) == TYPE_RULES["glob"]["id"]

    def test_user_agent_glob_does_not_match_inside_an_agent(self, gw):
        # "curl/*" over the WHOLE agent: an agent that merely contains "curl/" does not match it.
        resp = _chat(gw, agent="my-curl/8.4.0")
        assert resp.status == 200, resp

    def test_user_agent_regex_matches_in_any_case(self, gw):
        assert _blocked_by(_chat(gw, agent="Python-Requests/2.31.0")) == TYPE_RULES["regex"]["id"]

    def test_user_agent_regex_is_searched_as_written(self, gw):
        assert _chat(gw, agent="my python-requests/2.31.0").status == 200

    def test_operational_routes_are_never_blocked(self, gw):
        for path in ("/health", "/status", "/metrics"):
            resp = gw.request("GET", path, headers={"X-Forwarded-For": V4})
            assert resp.status == 200, (path, resp)


class TestRateRule:
    def test_two_instances_together_let_the_threshold_through(self, gw, gw2, rules_redis):
        rule = _rule("RATE_BASED_BLOCKING", {"threshold": RATE_THRESHOLD, "window_seconds": 60})
        _install(rules_redis, [gw, gw2], [rule])
        ip = _address()
        answers = [_chat((gw, gw2)[i % 2], ip) for i in range(RATE_THRESHOLD + 2)]
        assert [a.status for a in answers] == [200] * RATE_THRESHOLD + [403, 403], answers
        for resp in answers[RATE_THRESHOLD:]:
            assert resp.headers["x-blocked-by-rule"] == rule["id"]
            assert resp.json() == _blocked_body(f"Too many requests from {ip}")
        assert _chat(gw, _address()).status == 200  # each client address has a count of its own


class TestPriority:
    def test_higher_priority_block_rule_is_the_one_named(self, gw, rules_redis):
        ip = _address()
        low = _ip_rule(ip, priority=5)
        high = _rule("IP_BLOCKING", {"cidrs": [f"{ip}/32"]}, priority=50)
        _install(rules_redis, [gw], [low, high])
        assert _blocked_by(_chat(gw, ip)) == high["id"]

    def test_higher_priority_log_rule_is_recorded_and_the_lower_block_rule_blocks(self, gw, rules_redis):
        ip = _address()
        logged = _ip_rule(ip, priority=90, action="log")
        blocking = _ip_rule(ip, priority=5)
        _install(rules_redis, [gw], [blocking, logged])
        logs_before = gw.metric_total(MATCHES, action="log")
        assert _blocked_by(_chat(gw, ip)) == blocking["id"]
        assert _stats(rules_redis, logged["id"], 1)["match_count"] == "1"
        assert gw.metric_total(MATCHES, action="log") == logs_before + 1


class TestStatusAndExpiry:
    def test_inactive_rule_is_ignored(self, gw, rules_redis):
        ip = _address()
        _install(rules_redis, [gw], [_ip_rule(ip, status="INACTIVE")])
        assert _chat(gw, ip).status == 200

    def test_expired_rule_is_ignored(self, gw, rules_redis):
        ip = _address()
        _install(rules_redis, [gw], [_ip_rule(ip, expires_at="2000-01-01T00:00:00Z")])
        assert _chat(gw, ip).status == 200

    def test_rule_applies_until_it_expires(self, gw, rules_redis):
        ip = _address()
        rule = _ip_rule(ip, expires_at=_iso(SHORT_LIFE_S))
        _install(rules_redis, [gw], [rule])
        assert _blocked_by(_chat(gw, ip)) == rule["id"]
        _within(SHORT_LIFE_S + CHANGE_VISIBLE_S, lambda: _chat(gw, ip).status == 200)


class TestLogAction:
    def test_log_rule_lets_the_request_through(self, gw, rules_redis):
        ip = _address()
        _install(rules_redis, [gw], [_ip_rule(ip, action="log")])
        resp = _chat(gw, ip)
        assert resp.status == 200, resp
        assert "x-blocked-by-rule" not in resp.headers

    def test_log_rule_bumps_its_stats_and_the_log_metric(self, gw, rules_redis):
        ip = _address()
        rule = _ip_rule(ip, action="log")
        _install(rules_redis, [gw], [rule])
        before = gw.metric_total(MATCHES, action="log", rule_type="IP_BLOCKING")
        assert _chat(gw, ip).status == 200
        assert _stats(rules_redis, rule["id"], 1)["match_count"] == "1"
        assert gw.metric_total(MATCHES, action="log", rule_type="IP_BLOCKING") == before + 1


class TestEndpointRules:
    def test_endpoint_rule_blocks_that_model_only(self, gw, rules_redis):
        ip = _address()
        rule = _ip_rule(ip)
        rules_redis.set("blocking_rules:endpoint:guarded", json.dumps([rule]))
        _within(CHANGE_VISIBLE_S, lambda: _blocked_by(_chat(gw, ip, model="guarded")) == rule["id"])
        assert _chat(gw, ip, model="unguarded").status == 200
        assert _chat(gw, ip, model="plain").status == 200

    def test_endpoint_rule_deleted_no_longer_blocks(self, gw, rules_redis):
        ip = _address()
        key = "blocking_rules:endpoint:guarded"
        rules_redis.set(key, json.dumps([_ip_rule(ip)]))
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, ip, model="guarded").status == 403)
        rules_redis.delete(key)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, ip, model="guarded").status == 200)


class TestLiveChanges:
    def test_rules_written_apply_within_a_second(self, gw, rules_redis):
        ip = _address()
        _install(rules_redis, [gw], [])
        assert _chat(gw, ip).status == 200
        rule = _ip_rule(ip)
        rules_redis.set(GLOBAL_KEY, json.dumps([rule]))
        _within(CHANGE_VISIBLE_S, lambda: _blocked_by(_chat(gw, ip)) == rule["id"])

    def test_invalid_json_keeps_the_last_good_rules(self, gw, rules_redis):
        ip = _address()
        rule = _ip_rule(ip)
        canary = _install(rules_redis, [gw], [rule])
        rules_redis.set(GLOBAL_KEY, "[{not json")
        # A reason written after the bad JSON: once it shows, the gateway has read the bad JSON too.
        marker = f"marker {uuid.uuid4().hex[:8]}"
        rules_redis.set(REASON_PREFIX + canary.rule["name"], marker)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, canary.ip).headers.get("x-block-reason") == marker)
        assert _blocked_by(_chat(gw, ip)) == rule["id"]
        # And through a full resync, which reads the bad JSON again.
        deadline = time.monotonic() + RESYNC_INTERVAL_S + RESYNC_MARGIN_S
        while time.monotonic() < deadline:
            resp = _chat(gw, ip)
            assert _blocked_by(resp) == rule["id"], f"the last good rules were dropped: {resp}"

    def test_deleting_the_key_removes_its_rules(self, gw, rules_redis):
        ip = _address()
        _install(rules_redis, [gw], [_ip_rule(ip)])
        assert _chat(gw, ip).status == 403
        rules_redis.delete(GLOBAL_KEY)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, ip).status == 200)

    def test_reason_from_redis_is_the_message_and_the_header(self, gw, rules_redis):
        ip = _address()
        rule = _ip_rule(ip)
        _install(rules_redis, [gw], [rule])
        reason = "Blocked for abuse; write to abuse@example.com"
        rules_redis.set(REASON_PREFIX + rule["name"], reason)
        _within(CHANGE_VISIBLE_S, lambda: _chat(gw, ip).headers.get("x-block-reason") == reason)
        resp = _chat(gw, ip)
        assert resp.json() == _blocked_body(reason)
        assert resp.headers["x-blocked-by-rule"] == rule["id"]


class TestRefusal:
    def test_body_and_headers_of_the_403(self, gw, rules_redis):
        ip = _address()
        rule = _ip_rule(ip)
        _install(rules_redis, [gw], [rule])
        resp = _chat(gw, ip)
        assert resp.status == 403
        assert resp.headers["content-type"].startswith("application/json")
        assert resp.json() == _blocked_body(f"IP {ip} is blocked")
        assert resp.headers["x-block-reason"] == f"IP {ip} is blocked"
        assert resp.headers["x-blocked-by-rule"] == rule["id"]

    def test_stats_hash_counts_matches_and_lives_a_day(self, gw, rules_redis):
        ip = _address()
        rule = _ip_rule(ip)
        _install(rules_redis, [gw], [rule])
        started = datetime.datetime.now(datetime.UTC)
        assert [_chat(gw, ip).status for _ in range(2)] == [403, 403]
        stats = _stats(rules_redis, rule["id"], 2)
        last = datetime.datetime.fromisoformat(stats["last_matched"].replace("Z", "+00:00"))
        assert started - datetime.timedelta(seconds=1) <= last <= datetime.datetime.now(datetime.UTC)
        ttl = rules_redis.ttl(STATS_PREFIX + rule["id"])
        assert STATS_TTL_S - STATS_TTL_SLACK_S <= ttl <= STATS_TTL_S, ttl


# -- the authenticated gateway: global rules before auth ---------------------------------------------

AUTH_BLOCKED_IP = "192.0.2.10"
AUTH_OPEN_IP = "192.0.2.11"
AUTH_RULE = _ip_rule(AUTH_BLOCKED_IP)
AUTH_KEY = new_raw_key()


@pytest.fixture(scope="module")
def auth_gw(module_gateway_factory, redis_server, budapp_factory, key_pair, store_env):
    writer = budapp_factory(redis_server, AUTH_DB, key_pair)
    writer.put_key(AUTH_KEY, {"plain": grant("plain")})
    writer.put_raw(GLOBAL_KEY, json.dumps([AUTH_RULE]))
    settings = {"workers": 1, "blocking": {"enabled": True}}
    env = store_env(redis_server.url(AUTH_DB), private_key=key_pair.pkcs1_pem())
    gateway = module_gateway_factory(MODELS, settings=settings, env=env)
    wait_loaded(gateway)
    return gateway


class TestBeforeAuth:
    def test_blocked_client_with_an_invalid_key_gets_403_not_401(self, auth_gw):
        resp = _chat(auth_gw, AUTH_BLOCKED_IP, key=new_raw_key())
        assert _blocked_by(resp) == AUTH_RULE["id"], resp
        assert resp.json() == _blocked_body(f"IP {AUTH_BLOCKED_IP} is blocked")

    def test_blocked_client_without_a_key_gets_403(self, auth_gw):
        assert _blocked_by(_chat(auth_gw, AUTH_BLOCKED_IP)) == AUTH_RULE["id"]

    def test_blocked_client_with_a_valid_key_gets_403(self, auth_gw):
        assert _blocked_by(_chat(auth_gw, AUTH_BLOCKED_IP, key=AUTH_KEY)) == AUTH_RULE["id"]

    def test_other_client_with_an_invalid_key_gets_401(self, auth_gw):
        assert _chat(auth_gw, AUTH_OPEN_IP, key=new_raw_key()).status == 401

    def test_other_client_with_a_valid_key_is_served(self, auth_gw):
        resp = _chat(auth_gw, AUTH_OPEN_IP, key=AUTH_KEY)
        assert resp.status == 200, resp
