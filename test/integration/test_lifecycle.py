"""Process lifecycle: graceful SIGTERM/SIGINT, the drain and its bound, and several workers on one port."""

from __future__ import annotations

import http.client
import json
import signal
import time

import pytest
from configs import dummy_provider, model_toml, openai_provider
from rawhttp import StreamReader
from upstream import refused_base_url

MESSAGES = [{"role": "user", "content": "hi"}]
# A 2 s upstream stream (10 events, 200 ms apart), and a 10 s one that outlives a short drain.
STREAM_MODEL, STREAM_WORDS = "stream-delay-200-10", 10
LONG_STREAM_MODEL = "stream-delay-200-50"
STREAM_TIMEOUTS = {"streaming": {"ttft_ms": 5000, "total_ms": 30000}}
STREAM_READ_TIMEOUT_S = 10.0
# After SIGTERM, a new connection must stop being served within this.
STOP_ACCEPTING_WITHIN_S = 3.0
PROBE_TIMEOUT_S = 0.5
# A drain cut short by shutdown_timeout_s = DRAIN_TIMEOUT_S must end the process within it plus this margin.
DRAIN_TIMEOUT_S, DRAIN_EXIT_MARGIN_S = 1, 4.0
# An idle keep-alive connection must not hold the process for a shutdown_timeout_s this long.
LONG_SHUTDOWN_TIMEOUT_S, IDLE_EXIT_BOUND_S = 30, 5.0
WORKERS_DISCOVERY_S = 15.0
WORKER_EXIT_S = 10.0
REQUESTS_TOTAL = "budgateway_requests_total"
POLL_S = 0.05


def _models(api_base: str) -> str:
    text = model_toml("dummy", {"d": dummy_provider("hello")})
    for model, model_name in (("stream", STREAM_MODEL), ("long-stream", LONG_STREAM_MODEL)):
        text += model_toml(model, {"p": openai_provider(model_name, api_base, timeouts=STREAM_TIMEOUTS)})
    return text


def _serves_new_connections(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT_S)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _status_pid(gw) -> int:
    resp = gw.request("GET", "/status")
    assert resp.status == 200, resp
    return resp.json()["pid"]


def _worker_pids(gw, count: int) -> set[int]:
    """Pids seen in /status over new connections, until ``count`` distinct ones show up."""
    pids: set[int] = set()
    deadline = time.monotonic() + WORKERS_DISCOVERY_S
    while len(pids) < count and time.monotonic() < deadline:
        pids.add(_status_pid(gw))
    return pids


def _exited(pid: int) -> bool:
    """True once ``pid`` is gone or a zombie (exited, not yet reaped by its new parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class TestGracefulShutdown:
    def test_sigterm_lets_an_inflight_stream_finish_then_exits_0(self, gateway_factory, upstream):
        gw = gateway_factory(_models(upstream.url))
        stream = StreamReader(gw.port, "stream", STREAM_READ_TIMEOUT_S)
        try:
            assert stream.next_event() is not None
            gw.signal(signal.SIGTERM)
            events = stream.read_all()
        finally:
            stream.close()
        assert events[-1] == "[DONE]"
        content = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert content.split() == [f"word{i}" for i in range(STREAM_WORDS)]
        assert gw.wait_exit() == 0

    def test_sigterm_stops_serving_new_connections(self, gateway_factory, upstream):
        gw = gateway_factory(_models(upstream.url))
        stream = StreamReader(gw.port, "stream", STREAM_READ_TIMEOUT_S)
        try:
            assert stream.next_event() is not None
            gw.signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_ACCEPTING_WITHIN_S
            while _serves_new_connections(gw.port) and time.monotonic() < deadline:
                time.sleep(PROBE_TIMEOUT_S / 5)
            assert not _serves_new_connections(gw.port)
            assert stream.read_all()[-1] == "[DONE]", "the in-flight stream was cut"
        finally:
            stream.close()
        assert gw.wait_exit() == 0

    def test_drain_ends_at_shutdown_timeout(self, gateway_factory, upstream):
        gw = gateway_factory(_models(upstream.url), settings={"shutdown_timeout_s": DRAIN_TIMEOUT_S})
        stream = StreamReader(gw.port, "long-stream", STREAM_READ_TIMEOUT_S)
        try:
            assert stream.next_event() is not None
            signalled = time.monotonic()
            gw.signal(signal.SIGTERM)
            code = gw.wait_exit(DRAIN_TIMEOUT_S + DRAIN_EXIT_MARGIN_S)
            elapsed = time.monotonic() - signalled
        finally:
            stream.close()
        assert code == 0, f"exit code {code} after {elapsed:.1f} s"

    def test_idle_keepalive_connection_does_not_hold_shutdown(self, gateway_factory):
        gw = gateway_factory(_models(refused_base_url()),
                             settings={"shutdown_timeout_s": LONG_SHUTDOWN_TIMEOUT_S})
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=STREAM_READ_TIMEOUT_S)
        try:
            conn.request("GET", "/health")
            assert conn.getresponse().read()
            gw.signal(signal.SIGTERM)
            code = gw.wait_exit(IDLE_EXIT_BOUND_S)
        finally:
            conn.close()
        assert code == 0

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_idle_gateway_exits_0_on_signal(self, gateway_factory, sig):
        gw = gateway_factory(_models(refused_base_url()))
        gw.signal(sig)
        assert gw.wait_exit() == 0


@pytest.fixture(scope="module")
def two_workers(module_gateway_factory):
    return module_gateway_factory(_models(refused_base_url()), "--workers", "2")


class TestWorkers:
    def test_two_workers_serve_the_port(self, two_workers):
        assert len(_worker_pids(two_workers, 2)) == 2

    def test_metrics_are_summed_across_workers(self, two_workers):
        body = json.dumps({"model": "dummy", "messages": MESSAGES})
        served: dict[int, int] = {}
        deadline = time.monotonic() + WORKERS_DISCOVERY_S
        # Ask each new connection which worker holds it, then send a completion on that same connection.
        while (len(served) < 2 or min(served.values()) < 2) and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", two_workers.port, timeout=STREAM_READ_TIMEOUT_S)
            try:
                conn.request("GET", "/status")
                pid = json.loads(conn.getresponse().read())["pid"]
                conn.request("POST", "/v1/chat/completions", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
            finally:
                conn.close()
            served[pid] = served.get(pid, 0) + 1
        assert len(served) == 2, served
        expected = sum(served.values())
        for _ in range(4):  # new connections, so both workers get to answer /metrics
            assert two_workers.metric_total(REQUESTS_TOTAL, model="dummy", status="200") == expected

    def test_workers_exit_with_the_master_on_sigterm(self, gateway_factory):
        gw = gateway_factory(_models(refused_base_url()), "--workers", "2")
        pids = _worker_pids(gw, 2)
        assert len(pids) == 2
        gw.signal(signal.SIGTERM)
        assert gw.wait_exit() == 0
        deadline = time.monotonic() + WORKER_EXIT_S
        while not all(_exited(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert [p for p in pids if not _exited(p)] == []

