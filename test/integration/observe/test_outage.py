"""No analytics row is lost: ClickHouse going away and coming back, a gateway restarting with rows spooled,
the HTTP interface, and a spool with no ClickHouse at all."""

from __future__ import annotations

import json
import signal

from configs import dummy_provider, model_toml

from .conftest import wait_for, wait_rows

MODELS = model_toml("free", {"d": dummy_provider("hello")})
MESSAGES = [{"role": "user", "content": "hi"}]


def _settings(url: str | None, spool) -> dict:
    settings = {"observability.flush_interval_ms": 100, "observability.spool_dir": str(spool)}
    if url:
        settings["observability.clickhouse_url"] = url
    return settings


def _chat(gw, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "free", "messages": MESSAGES})
        assert resp.status == 200, resp
        ids.append(resp.headers["x-tensorzero-inference-id"])
    return ids


def _all_arrived(ch, db: str, ids: list[str]) -> None:
    rows = wait_rows(ch, f"SELECT inference_id FROM {db}.GatewayAnalytics", len(ids))
    assert sorted(r["inference_id"] for r in rows) == sorted(ids), "a row is missing or came twice"
    rows = wait_rows(ch, f"SELECT inference_id FROM {db}.ModelInference", len(ids))
    assert sorted(r["inference_id"] for r in rows) == sorted(ids)


def test_clickhouse_restart_loses_nothing_and_doubles_nothing(gateway_factory, own_clickhouse, database, tmp_path):
    gw = gateway_factory(MODELS, settings=_settings(own_clickhouse.native_url(database), tmp_path / "spool"))
    before = _chat(gw, 5)
    wait_rows(own_clickhouse, f"SELECT id FROM {database}.GatewayAnalytics", 5)

    own_clickhouse.stop(kill=True)
    during = _chat(gw, 10)  # served as ever while ClickHouse is away
    wait_for(lambda: gw.request("GET", "/health").json().get("clickhouse") == "error", what="clickhouse: error")
    assert gw.request("GET", "/health").status == 200
    assert any((tmp_path / "spool").glob("*.jsonl")), "nothing was spooled"

    own_clickhouse.start()
    after = _chat(gw, 3)
    _all_arrived(own_clickhouse, database, before + during + after)
    wait_for(lambda: gw.request("GET", "/health").json().get("clickhouse") == "ok", what="clickhouse: ok")
    assert gw.metric_total("budgateway_analytics_rows_total", table="GatewayAnalytics", result="spooled") >= 10
    assert gw.metric_total("budgateway_analytics_rows_total", result="dropped") == 0


def test_the_spool_survives_a_gateway_restart(gateway_factory, own_clickhouse, database, tmp_path):
    spool = tmp_path / "spool"
    own_clickhouse.stop(kill=True)
    first = gateway_factory(MODELS, settings=_settings(own_clickhouse.native_url(database), spool))
    ids = _chat(first, 6)
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    lines = [json.loads(line) for path in spool.glob("*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(line["r"]["inference_id"] for line in lines if line["t"] == "GatewayAnalytics") == sorted(ids)

    own_clickhouse.start()
    second = gateway_factory(MODELS, settings=_settings(own_clickhouse.native_url(database), spool))
    more = _chat(second, 2)
    _all_arrived(own_clickhouse, database, ids + more)
    wait_for(lambda: not list(spool.glob("*.jsonl")) or second.request("GET", "/health").status != 200,
             what="an empty spool")


def test_http_interface(gateway_factory, clickhouse, database, tmp_path):
    gw = gateway_factory(MODELS, settings=_settings(clickhouse.http_url(database), tmp_path / "spool"))
    ids = _chat(gw, 3)
    _all_arrived(clickhouse, database, ids)


def test_spool_only_without_clickhouse_and_an_untrusted_peer(gateway_factory, tmp_path):
    spool = tmp_path / "spool"
    # Loopback is not a trusted proxy here: the forwarded-for header is the client's word, and ignored.
    gw = gateway_factory(MODELS, settings={**_settings(None, spool), "analytics.trusted_proxies": ["10.0.0.0/8"]})
    ids = []
    for _ in range(4):
        resp = gw.request("POST", "/v1/chat/completions", {"model": "free", "messages": MESSAGES},
                          headers={"X-Forwarded-For": "81.2.69.142"})
        ids.append(resp.headers["x-tensorzero-inference-id"])
    assert gw.request("GET", "/health").json() == {"gateway": "ok"}

    def spooled() -> list[dict]:
        lines = [json.loads(line) for path in spool.glob("*.jsonl") for line in path.read_text().splitlines()]
        return [line["r"] for line in lines if line["t"] == "GatewayAnalytics"]

    wait_for(lambda: sorted(r["inference_id"] for r in spooled()) == sorted(ids), what="spooled rows")
    assert {(r["client_ip"], r["proxy_chain"]) for r in spooled()} == {("127.0.0.1", None)}
