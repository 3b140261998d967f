"""The cost of what a request leaves behind: metrics, analytics (a real ClickHouse) and traces (a local
OTLP receiver) all on, against the same gateway with analytics and traces off, in one run.

Two figures (issue 9): at 500 req/s on one worker, the P99 with everything on less the P99 with it off
(interleaved rounds, wrk2 uncorrected); and at the worker's maximum rate (wrk, 64 connections), how deep
the analytics queue grows (sampled from /metrics) and whether any row was dropped.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

TEST = Path(__file__).resolve().parent.parent / "test"
sys.path.insert(0, str(TEST))

from clickhouse_server import ClickHouseServer  # noqa: E402
from load import wrk2_rate, wrk_max  # noqa: E402
from otlp_receiver import OTLPReceiver  # noqa: E402

__all__ = ["everything_on", "observability"]

OFF, ON = "gw observe off 1w", "gw observe on 1w"
_RATE = 500
_DATABASE = "bench"


def _metric(port: int, name: str) -> float:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def everything_on(clickhouse: ClickHouseServer, receiver: OTLPReceiver, work: Path) -> dict:
    """The gateway options (``settings``, ``env``) that turn analytics and traces on."""
    return {"settings": f'observability.clickhouse_url = "{clickhouse.native_url(_DATABASE)}"\n'
                        f'observability.spool_dir = "{work / "spool"}"\n'
                        "export.otlp.traces.enabled = true\n",
            "env": {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint}}


def observability(gateway, body: str, wrk2: str | None, *, rounds: int, seconds: float, max_seconds: int) -> dict:
    """``gateway(name, settings=..., env=...)`` starts a gateway and returns its target (port, pid)."""
    if not shutil.which("clickhouse-server") and not Path("/usr/sbin/clickhouse-server").exists():
        return {"skipped": "no clickhouse-server"}
    work = Path(tempfile.mkdtemp(prefix="budgateway-bench-ch-"))
    clickhouse = ClickHouseServer(work).start()
    receiver = OTLPReceiver(decode=False).start()
    try:
        off = gateway(OFF)
        on = gateway(ON, **everything_on(clickhouse, receiver, work))
        for t in (off, on):
            wrk_max(t.name, t.url, body, 4, 2)
        runs = []
        for _ in range(rounds):
            for t in (off, on):
                r = wrk2_rate(wrk2, t.name, t.url, body, _RATE, seconds) if wrk2 else None
                if r is not None:
                    runs.append(r.as_dict())
                    print(f"{t.name:<26} {_RATE} req/s  P50 {r.p50_ms:.3f}  P99 {r.p99_ms:.3f}  errors {r.errors}",
                          flush=True)
        p99 = {name: statistics.median(r["p99_ms"] for r in runs if r["target"] == name) for name in (OFF, ON)}
        p50 = {name: statistics.median(r["p50_ms"] for r in runs if r["target"] == name) for name in (OFF, ON)}

        depths: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.25):
                try:
                    depths.append(_metric(on.port, "budgateway_analytics_queue_depth"))
                except OSError:
                    pass

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        top = wrk_max(on.name, on.url, body, 64, max_seconds)
        stop.set()
        sampler.join()
        sent = top.requests
        deadline = time.monotonic() + 30
        written = 0.0
        while time.monotonic() < deadline:
            written = float(clickhouse.query(f"SELECT count() FROM {_DATABASE}.GatewayAnalytics") or 0)
            if written >= sent:
                break
            time.sleep(0.5)
        result = {
            "rate": _RATE, "rounds": rounds, "runs": runs,
            "p50_off_ms": p50[OFF], "p50_on_ms": p50[ON], "p99_off_ms": p99[OFF], "p99_on_ms": p99[ON],
            "added_p99_ms": p99[ON] - p99[OFF],
            "max_rps": top.achieved_rps, "max_requests": sent, "max_errors": top.errors,
            "queue_depth_max": max(depths, default=0.0), "queue_depth_samples": len(depths),
            "rows_written": written,
            "rows_dropped": _metric(on.port, 'budgateway_analytics_rows_total{result="dropped"'),
            "exports_received": receiver.requests, "export_bytes": receiver.bytes,
            "spans_dropped": _metric(on.port, "budgateway_trace_spans_dropped_total"),
        }
        print(f"observability: {json.dumps({k: v for k, v in result.items() if k != 'runs'})}", flush=True)
        return result
    finally:
        receiver.stop()
        clickhouse.stop(kill=True)
        shutil.rmtree(work, ignore_errors=True)
