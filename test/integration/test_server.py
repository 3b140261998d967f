"""Server surface: health, status, models, metrics, keep-alive latency, and ``--check-config``."""

from __future__ import annotations

import http.client
import json
import statistics
import time

import openai
import pytest
from configs import dummy_provider, model_toml
from prometheus_client.parser import text_string_to_metric_families

MESSAGES = [{"role": "user", "content": "hi"}]
MODEL_IDS = {"gpt", "metered", "broken", "embedder"}
# One keep-alive connection, many small requests to a dummy model: each should take a few milliseconds.
# Without TCP_NODELAY on the gateway's socket a response written in two pieces stalls ~40 ms on delayed ACK.
KEEPALIVE_REQUESTS, KEEPALIVE_WARMUP = 20, 3
KEEPALIVE_MEDIAN_BOUND_S = 0.020
KEEPALIVE_TIMEOUT_S = 10.0
REQUESTS_TOTAL = "budgateway_requests_total"

MODELS = "".join([
    model_toml("gpt", {"d": dummy_provider("hello")}),
    model_toml("metered", {"d": dummy_provider("hello")}),
    model_toml("broken", {"d": dummy_provider("error")}),
    model_toml("embedder", {"d": dummy_provider("hello")}, endpoints=["embedding"]),
])


@pytest.fixture(scope="module")
def gw(module_gateway_factory):
    return module_gateway_factory(MODELS)


class TestHealthAndStatus:
    def test_health_is_200_gateway_ok(self, gw):
        resp = gw.request("GET", "/health")
        assert resp.status == 200
        assert resp.json() == {"gateway": "ok"}

    def test_status_reports_ok_version_and_worker_pid(self, gw):
        resp = gw.request("GET", "/status")
        assert resp.status == 200
        body = resp.json()
        assert body["status"] == "ok"
        assert isinstance(body["version"], str) and body["version"]
        pid = body["pid"]
        assert isinstance(pid, int)
        # The worker is the gateway process itself or one of its children.
        assert pid == gw.proc.pid or _parent_pid(pid) == gw.proc.pid


class TestModels:
    def test_list_has_one_entry_per_config_model(self, gw):
        resp = gw.request("GET", "/v1/models")
        assert resp.status == 200
        body = resp.json()
        assert body["object"] == "list"
        assert {m["id"] for m in body["data"]} == MODEL_IDS
        assert len(body["data"]) == len(MODEL_IDS)
        for m in body["data"]:
            assert m["object"] == "model"
            assert isinstance(m["created"], int)
            assert isinstance(m["owned_by"], str)

    def test_sdk_lists_the_models(self, gw):
        assert {m.id for m in gw.openai().models.list()} == MODEL_IDS

    def test_single_model_is_served_by_id(self, gw):
        model = gw.openai().models.retrieve("metered")
        assert (model.id, model.object) == ("metered", "model")

    def test_unknown_model_id_is_404_model_not_found(self, gw):
        resp = gw.request("GET", "/v1/models/no-such-model")
        assert resp.status == 404
        assert resp.json()["error"]["code"] == "model_not_found"


class TestMetrics:
    def test_requests_are_counted_by_model_and_status(self, gw):
        client = gw.openai()
        before = gw.metric_total(REQUESTS_TOTAL, model="metered", status="200")
        for _ in range(3):
            client.chat.completions.create(model="metered", messages=MESSAGES)
        assert gw.metric_total(REQUESTS_TOTAL, model="metered", status="200") - before == 3

    def test_failed_requests_are_counted_with_their_status(self, gw):
        before = gw.metric_total(REQUESTS_TOTAL, model="broken", status="502")
        with pytest.raises(openai.APIStatusError):
            gw.openai().chat.completions.create(model="broken", messages=MESSAGES)
        assert gw.metric_total(REQUESTS_TOTAL, model="broken", status="502") - before == 1

    def test_metrics_are_prometheus_text_with_the_duration_histogram(self, gw):
        gw.openai().chat.completions.create(model="gpt", messages=MESSAGES)
        resp = gw.request("GET", "/metrics")
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(resp.body.decode())}
        histogram = families["budgateway_request_duration_seconds"]
        assert histogram.type == "histogram"
        names = {s.name for s in histogram.samples}
        assert {"budgateway_request_duration_seconds_bucket", "budgateway_request_duration_seconds_count",
                "budgateway_request_duration_seconds_sum"} <= names


class TestKeepAlive:
    def test_many_requests_on_one_connection_are_each_fast(self, gw):
        body = json.dumps({"model": "gpt", "messages": MESSAGES}).encode()
        headers = {"Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=KEEPALIVE_TIMEOUT_S)
        durations, sockets = [], set()
        try:
            for i in range(KEEPALIVE_WARMUP + KEEPALIVE_REQUESTS):
                started = time.perf_counter()
                conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                elapsed = time.perf_counter() - started
                assert resp.status == 200
                sockets.add(conn.sock.getsockname())
                if i >= KEEPALIVE_WARMUP:
                    durations.append(elapsed)
        finally:
            conn.close()
        assert len(sockets) == 1, "the gateway closed the keep-alive connection"
        milliseconds = [round(d * 1000, 1) for d in durations]
        assert statistics.median(durations) < KEEPALIVE_MEDIAN_BOUND_S, milliseconds


class TestCheckConfig:
    def test_good_config_exits_0(self, gateway_cli):
        result = gateway_cli(MODELS, "--check-config")
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize("models", [
        '[models."x"]\nrouting = ["missing"]\n',
        '[models."x"\nrouting = ["d"]\n',
    ], ids=["unknown-provider", "toml-syntax"])
    def test_bad_config_exits_1(self, gateway_cli, models):
        result = gateway_cli(models, "--check-config")
        assert result.returncode == 1, result.stdout + result.stderr


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None

