"""The performance targets (issue 8: the front door; issue 9: the record), judged from one run's results."""

from __future__ import annotations

__all__ = ["judge"]

GW, AUTH = "gw 1w", "gw auth+metrics 1w"


def _fixed(data: dict, target: str, rate: int) -> dict | None:
    return next((r for r in data["summary"] if r["target"] == target and r["asked_rps"] == rate), None)


def _max(data: dict, target: str) -> dict | None:
    return next((r for r in data["runs"] if r["target"] == target and r["scenario"] == "max"), None)


def _rates(data: dict, target: str, label: str) -> list[dict]:
    out = []
    r500, r1000 = _fixed(data, target, 500), _fixed(data, target, 1000)
    if r500:
        out.append({"name": f"{label}: added P50 <= 0.25 ms and P99 <= 0.8 ms at 500 req/s",
                    "met": r500["added_p50_ms"] <= 0.25 and r500["added_p99_ms"] <= 0.8,
                    "measured": f"+{r500['added_p50_ms']:.2f} / +{r500['added_p99_ms']:.2f} ms"})
    if r1000:
        out.append({"name": f"{label}: added P99 <= 1.5 ms at 1,000 req/s with 0 errors",
                    "met": r1000["added_p99_ms"] <= 1.5 and r1000["errors"] == 0,
                    "measured": f"+{r1000['added_p99_ms']:.2f} ms, {r1000['errors']} errors, "
                                f"{r1000['achieved_rps']:.0f} req/s"})
        cpu = r1000.get("cpu_us_per_request")
        if cpu is not None:
            out.append({"name": f"{label}: CPU per proxied request <= 150 µs", "met": cpu <= 150,
                        "measured": f"{cpu:.0f} µs (all its processes, over the 1,000 req/s runs)"})
    rmax = _max(data, target)
    if rmax:
        out.append({"name": f"{label}: maximum >= 6,000 req/s per worker (wrk, 64 connections)",
                    "met": rmax["achieved_rps"] >= 6000 and rmax["errors"] == 0,
                    "measured": f"{rmax['achieved_rps']:.0f} req/s, {rmax['errors']} errors"})
    return out


def judge(data: dict) -> list[dict]:
    out = _rates(data, GW, "one worker") + _rates(data, AUTH, "with auth (Redis keys) and metrics")
    m = data["memory"]
    if m:
        out.append({"name": "idle RSS <= 50 MB per worker", "met": m["idle_mb"] <= 50,
                    "measured": f"{m['idle_mb']:.1f} MB (after 100,000 requests {m['after_mb']:.1f} MB, "
                                f"{m['growth_pct']:+.1f} %)"})
    c = data["concurrent_streams"]
    if c:
        out.append({"name": "10,000 concurrent open streams on one worker with no error",
                    "met": c["connections"] >= 10_000 and c["errors"] == 0,
                    "measured": f"{c['connections']:,} held, {c['errors']} errors, peak {c['peak_fds']} sockets, "
                                f"RSS {c['rss_peak_mb']:.0f} MB"})
    s = {r["target"]: r for r in data["streaming"]["results"]}.get(GW)
    if s:
        out.append({"name": "streamed chunk relayed with <= 0.2 ms added delay; TTFT adds <= 1 ms",
                    "met": s["added_chunk_ms"] <= 0.2 and s["added_ttft_p50_ms"] <= 1.0,
                    "measured": f"per chunk {s['added_chunk_ms']:.3f} ms, TTFT {s['added_ttft_p50_ms']:.3f} ms (P50)"})
    o = data.get("observability") or {}
    if "added_p99_ms" in o:
        out.append({"name": "metrics, analytics and traces on: added P99 <= 0.2 ms over off at 500 req/s",
                    "met": o["added_p99_ms"] <= 0.2,
                    "measured": f"{o['added_p99_ms']:+.3f} ms (P99 {o['p99_on_ms']:.3f} vs {o['p99_off_ms']:.3f} ms)"})
        out.append({"name": "the analytics queue stays bounded at the worker's maximum rate, no row dropped",
                    "met": o["rows_dropped"] == 0 and o["rows_written"] >= o["max_requests"],
                    "measured": f"depth at most {o['queue_depth_max']:.0f} over {o['queue_depth_samples']} samples at "
                                f"{o['max_rps']:.0f} req/s; {o['rows_written']:.0f} rows for {o['max_requests']} "
                                f"requests, {o['rows_dropped']:.0f} dropped"})
    return out
