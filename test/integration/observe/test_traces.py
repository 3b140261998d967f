"""OTLP traces to a local receiver: a server span per request, a client span per attempt, GenAI attributes,
the caller's ``traceparent`` continued and each attempt's sent upstream; a dead collector costs nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from configs import model_toml, openai_provider
from conftest import REPO_ROOT, gateway_env, render_config
from otlp_receiver import OTLPReceiver
from upstream_endpoints import USAGE
from upstream_wire import free_port

from .conftest import wait_for

MESSAGES = [{"role": "user", "content": "hi"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _models(api: str) -> str:
    return (model_toml("traced", {"up": openai_provider("ok", api)},
                       pricing={"input_cost": 1.0, "output_cost": 1.0, "per_tokens": 1000})
            + model_toml("traced-failover", {"bad": openai_provider("status-503", api),
                                             "good": openai_provider("ok", api)}))


@pytest.fixture(scope="module")
def receiver():
    server = OTLPReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(module_gateway_factory, upstream, receiver):
    return module_gateway_factory(_models(upstream.url), settings={"export.otlp.traces.enabled": True},
                                  env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint})


def _trace(receiver: OTLPReceiver, trace_id: str, count: int):
    return receiver.wait_for(lambda spans: len([s for s in spans if s.trace_id == trace_id]) >= count)


def test_spans_continue_the_callers_trace(gw, upstream, receiver):
    resp = gw.request("POST", "/v1/chat/completions", {"model": "traced", "messages": MESSAGES},
                      headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"})
    assert resp.status == 200, resp
    spans = [s for s in _trace(receiver, TRACE_ID, 2) if s.trace_id == TRACE_ID]
    [server] = [s for s in spans if s.kind == "server"]
    [client] = [s for s in spans if s.kind == "client"]
    assert server.parent_span_id == CALLER_SPAN and client.parent_span_id == server.span_id
    assert server.name == "POST /v1/chat/completions" and client.name == "chat traced"
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "traced"
    assert server.attributes["gen_ai.response.model"] == "traced"
    assert server.attributes["gen_ai.usage.input_tokens"] == USAGE["prompt_tokens"]
    assert server.attributes["gen_ai.usage.output_tokens"] == USAGE["completion_tokens"]
    assert server.attributes["tensorzero.inference_id"] == resp.headers["x-tensorzero-inference-id"]
    assert server.attributes["bud.cost"] == pytest.approx((USAGE["prompt_tokens"] + USAGE["completion_tokens"]) / 1000)
    assert server.attributes["http.response.status_code"] == 200
    assert client.attributes["gen_ai.system"] == "openai"
    assert client.attributes["gen_ai.usage.input_tokens"] == USAGE["prompt_tokens"]
    assert server.start_ns <= client.start_ns <= client.end_ns <= server.end_ns
    assert server.resource["service.name"] == "budgateway"

    [sent] = upstream.requests
    assert sent.headers["traceparent"] == f"00-{TRACE_ID}-{client.span_id}-01"


def test_a_failed_attempt_is_a_span_too(gw, upstream, receiver):
    trace_id = "1" * 32
    resp = gw.request("POST", "/v1/chat/completions", {"model": "traced-failover", "messages": MESSAGES},
                      headers={"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"})
    assert resp.status == 200, resp
    spans = [s for s in _trace(receiver, trace_id, 3) if s.trace_id == trace_id]
    clients = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start_ns)
    assert [c.attributes["gen_ai.provider.name"] for c in clients] == ["bad", "good"]
    assert clients[0].attributes["error.type"] == "http_503" and clients[0].status_code == 2  # ERROR
    assert "error.type" not in clients[1].attributes
    sent = {r.body["model"]: r.headers["traceparent"] for r in upstream.requests}
    assert sent["status-503"].split("-")[2] == clients[0].span_id
    assert sent["ok"].split("-")[2] == clients[1].span_id


def test_without_traceparent_a_new_trace_begins(gw, receiver):
    resp = gw.request("POST", "/v1/chat/completions", {"model": "traced", "messages": MESSAGES})
    inference_id = resp.headers["x-tensorzero-inference-id"]
    spans = receiver.wait_for(lambda spans: any(s.attributes.get("tensorzero.inference_id") == inference_id
                                                and s.kind == "server" for s in spans))
    [server] = [s for s in spans if s.attributes.get("tensorzero.inference_id") == inference_id and s.kind == "server"]
    assert server.parent_span_id == "" and len(server.trace_id) == 32


def test_a_dead_collector_costs_only_spans(gateway_factory, upstream):
    dead = f"http://127.0.0.1:{free_port()}/v1/traces"
    gw = gateway_factory(_models(upstream.url), settings={"export.otlp.traces.enabled": True},
                         env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": dead})
    for _ in range(5):
        assert gw.request("POST", "/v1/chat/completions", {"model": "traced", "messages": MESSAGES}).status == 200
    wait_for(lambda: gw.metric_total("budgateway_trace_spans_dropped_total") >= 10, what="dropped spans")


def test_traces_need_an_endpoint(upstream, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(render_config(_models(upstream.url), {"export.otlp.traces.enabled": True}))
    env = gateway_env()
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    done = subprocess.run([sys.executable, "-m", "gateway", "--config-file", str(config), "--check-config"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in done.stderr
