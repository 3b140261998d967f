"""The ClickHouse rows of blocking-rule matches: a ``GatewayBlockingEvents`` row per match (blocked or only
logged) and the request's ``GatewayAnalytics`` row marked blocked or not.

One gateway (no Redis: its rules are ``[[gateway.blocking.rules]]`` in TOML) writes into one database of
the session's ClickHouse; each test sends from a client address of its own and finds its rows by it.
"""

from __future__ import annotations

import datetime
import json
import uuid
from pathlib import Path

import pytest
from configs import dummy_provider, model_toml, toml_value

from .conftest import wait_rows

GEOIP_CITY = Path(__file__).resolve().parents[2] / "data" / "geoip" / "GeoIP2-City-Test.mmdb"
MESSAGES = [{"role": "user", "content": "hi"}]
CHAT_PATH = "/v1/chat/completions"
#: An address the GeoIP test database places in Great Britain (see test_analytics.py).
GB_IP = "81.2.69.142"
BLOCKED_IP, LOGGED_IP, ENDPOINT_IP = "203.0.113.50", "203.0.113.60", "203.0.113.70"
#: How far a row's time may lie from the test's clock (ClickHouse 18's DateTime is whole seconds).
CLOCK_SLACK_S = 2

BLOCK_RULE = {"id": "ch-ip-block", "rule_type": "IP_BLOCKING", "name": "ch ip block", "priority": 40,
              "status": "ACTIVE", "action": "block", "config": {"ip_addresses": [BLOCKED_IP]}}
LOG_RULE = {"id": "ch-ip-log", "rule_type": "IP_BLOCKING", "name": "ch ip log", "priority": 30,
            "action": "log", "config": {"ip_addresses": [LOGGED_IP]}}
COUNTRY_RULE = {"id": "ch-country", "rule_type": "COUNTRY_BLOCKING", "name": "ch country", "priority": 20,
                "config": {"countries": ["GB"]}}
ENDPOINT_RULE = {"id": "ch-endpoint", "rule_type": "IP_BLOCKING", "name": "ch endpoint", "priority": 10,
                 "endpoint_id": "guarded", "config": {"ip_addresses": [ENDPOINT_IP]}}


def _blocking_toml(rules: list[dict]) -> str:
    text = "\n[gateway.blocking]\nenabled = true\n"
    for rule in rules:
        text += "\n[[gateway.blocking.rules]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in rule.items())
    return text


MODELS = (model_toml("plain", {"d": dummy_provider("hello")}) + model_toml("guarded", {"d": dummy_provider("hello")})
          + _blocking_toml([BLOCK_RULE, LOG_RULE, COUNTRY_RULE, ENDPOINT_RULE]))


@pytest.fixture(scope="module")
def blocking_db() -> str:
    return f"t_blocking_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def gw(module_gateway_factory, clickhouse, blocking_db, tmp_path_factory):
    return module_gateway_factory(MODELS, settings={
        "workers": 1,
        "observability.clickhouse_url": clickhouse.native_url(blocking_db),
        "observability.flush_interval_ms": 100,
        "observability.spool_dir": str(tmp_path_factory.mktemp("spool")),
        "analytics.geoip_db_path": str(GEOIP_CITY),
    })


def _chat(gw, ip: str, agent: str, model: str = "plain"):
    return gw.request("POST", CHAT_PATH, {"model": model, "messages": MESSAGES},
                      headers={"X-Forwarded-For": ip, "User-Agent": agent})


def _agent() -> str:
    return f"blocking-rows-test/{uuid.uuid4().hex}"


def _event(clickhouse, db: str, agent: str) -> dict:
    return wait_rows(clickhouse, f"SELECT * FROM {db}.GatewayBlockingEvents WHERE user_agent = '{agent}'", 1)[0]


def _analytics(clickhouse, db: str, agent: str) -> dict:
    return wait_rows(clickhouse, f"SELECT * FROM {db}.GatewayAnalytics WHERE user_agent = '{agent}'", 1)[0]


def _near_now(text: str, started: datetime.datetime) -> bool:
    moment = datetime.datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    slack = datetime.timedelta(seconds=CLOCK_SLACK_S)
    return started - slack <= moment <= datetime.datetime.now(datetime.UTC) + slack


def test_blocked_request_leaves_a_blocking_event(gw, clickhouse, blocking_db):
    agent = _agent()
    started = datetime.datetime.now(datetime.UTC)
    resp = _chat(gw, BLOCKED_IP, agent)
    assert resp.status == 403, resp
    assert resp.headers["x-blocked-by-rule"] == BLOCK_RULE["id"]
    row = _event(clickhouse, blocking_db, agent)
    assert (row["rule_id"], row["client_ip"], row["request_path"], row["request_method"]) == (
        BLOCK_RULE["id"], BLOCKED_IP, CHAT_PATH, "POST")
    assert (row["rule_type"], row["rule_name"], row["rule_priority"]) == ("IP_BLOCKING", "ch ip block", 40)
    assert (row["block_reason"], row["action_taken"]) == (f"IP {BLOCKED_IP} is blocked", "block")
    assert uuid.UUID(row["id"]) and _near_now(row["blocked_at"], started), row


def test_blocked_requests_analytics_row_is_marked_blocked(gw, clickhouse, blocking_db):
    agent = _agent()
    assert _chat(gw, BLOCKED_IP, agent).status == 403
    row = _analytics(clickhouse, blocking_db, agent)
    assert (row["client_ip"], row["status_code"], row["path"]) == (BLOCKED_IP, 403, CHAT_PATH)
    assert (row["is_blocked"], row["block_reason"], row["block_rule_id"]) == (
        1, f"IP {BLOCKED_IP} is blocked", BLOCK_RULE["id"])


def test_logged_match_leaves_an_event_with_action_log(gw, clickhouse, blocking_db):
    agent = _agent()
    resp = _chat(gw, LOGGED_IP, agent)
    assert resp.status == 200, resp
    row = _event(clickhouse, blocking_db, agent)
    assert (row["rule_id"], row["client_ip"], row["rule_type"], row["rule_name"], row["rule_priority"]) == (
        LOG_RULE["id"], LOGGED_IP, "IP_BLOCKING", "ch ip log", 30)
    assert (row["request_path"], row["request_method"], row["action_taken"]) == (CHAT_PATH, "POST", "log")


def test_logged_requests_analytics_row_is_not_blocked(gw, clickhouse, blocking_db):
    agent = _agent()
    assert _chat(gw, LOGGED_IP, agent).status == 200
    row = _analytics(clickhouse, blocking_db, agent)
    assert (row["client_ip"], row["status_code"], row["is_blocked"]) == (LOGGED_IP, 200, 0)


def test_country_blocks_event_has_the_country_code(gw, clickhouse, blocking_db):
    agent = _agent()
    resp = _chat(gw, GB_IP, agent)
    assert resp.status == 403, resp
    row = _event(clickhouse, blocking_db, agent)
    assert (row["rule_id"], row["rule_type"], row["country_code"], row["client_ip"]) == (
        COUNTRY_RULE["id"], "COUNTRY_BLOCKING", "GB", GB_IP)
    assert row["block_reason"] == "Requests from country GB are blocked"


def test_toml_endpoint_rule_blocks_its_model_only(gw, clickhouse, blocking_db):
    agent = _agent()
    assert _chat(gw, ENDPOINT_IP, agent, model="plain").status == 200
    resp = _chat(gw, ENDPOINT_IP, agent, model="guarded")
    assert (resp.status, resp.headers.get("x-blocked-by-rule")) == (403, ENDPOINT_RULE["id"]), resp
    row = _event(clickhouse, blocking_db, agent)
    assert (row["rule_id"], row["model_name"], row["action_taken"]) == (ENDPOINT_RULE["id"], "guarded", "block")


def test_request_matching_no_rule_leaves_no_event(gw, clickhouse, blocking_db):
    agent = _agent()
    assert _chat(gw, "203.0.113.99", agent).status == 200
    _analytics(clickhouse, blocking_db, agent)  # written in the same batch as an event would be
    events = clickhouse.rows(f"SELECT id FROM {blocking_db}.GatewayBlockingEvents WHERE user_agent = '{agent}'")
    assert events == [], json.dumps(events)
