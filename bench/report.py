"""Benchmark output: the Markdown table, the JSON record and the latency-against-rate chart."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_chart", "write_json", "write_markdown"]


def _f(v, digits: int = 2) -> str:
    if v is None or v != v:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_markdown(path: Path, data: dict) -> str:
    lines = [f"# budgateway benchmark, {data['when']}", ""]
    m = data["machine"]
    lines.append(f"Machine: {m['cpus']} CPUs; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    lines += ["", "Load generator, mock upstream and gateway share the same cores; compare ratios within this run.", ""]
    rounds = max((r["rounds"] for r in data["summary"]), default=0)
    lines += [f"## Non-streaming: fixed rates (the median of {rounds} interleaved rounds)", ""]
    lines.append("| target | asked req/s | achieved req/s | P50 ms | P90 ms | P99 ms | P99.9 ms | added P50 ms "
                 "| added P99 ms | CPU µs/request | errors | gateway RSS MB | generator |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in data["summary"]:
        lines.append(
            f"| {r['target']} | {_f(r['asked_rps'], 0)} | {_f(r.get('achieved_rps'), 0)} | {_f(r.get('p50_ms'), 3)} "
            f"| {_f(r.get('p90_ms'), 3)} | {_f(r.get('p99_ms'), 3)} | {_f(r.get('p999_ms'), 3)} "
            f"| {_f(r.get('added_p50_ms'), 3)} | {_f(r.get('added_p99_ms'), 3)} | {_f(r.get('cpu_us_per_request'), 0)} "
            f"| {r['errors']} | {_f(r.get('rss_mb'), 1)} | {r['generator']} |"
        )
    lines += ["", "## Non-streaming: maximum", ""]
    lines.append("| target | achieved req/s | P50 ms | P99 ms | errors | gateway RSS MB | generator |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in (r for r in data["runs"] if r["scenario"] == "max"):
        lines.append(f"| {r['target']} | {_f(r['achieved_rps'], 0)} | {_f(r['p50_ms'])} | {_f(r['p99_ms'])} "
                     f"| {r['errors']} | {_f(r.get('rss_mb'), 1)} | {r['generator']} |")
    s = data["streaming"]
    lines += ["", f"## Streaming: {s['shape']} ({s['streams']} streams per target, {s['concurrency']} at a time)", ""]
    lines.append("| target | TTFT P50 ms | TTFT P99 ms | rest of stream P50 ms | added TTFT P50 ms "
                 "| added per-chunk delay ms | errors |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in s["results"]:
        lines.append(
            f"| {r['target']} | {_f(r['ttft_p50_ms'])} | {_f(r['ttft_p99_ms'])} | {_f(r['read_p50_ms'])} "
            f"| {_f(r.get('added_ttft_p50_ms'), 3)} | {_f(r.get('added_chunk_ms'), 3)} | {r['errors']} |"
        )
    c = data["concurrent_streams"] or {k: None for k in
                                       ("connections", "peak_fds", "completed", "errors", "rss_before_mb", "rss_peak_mb")}
    lines += ["", "## Open streams on one worker", ""]
    lines.append("| connections asked | peak open sockets in the worker | streams completed | errors "
                 "| worker RSS before MB | worker RSS peak MB |")
    lines.append("|---|---|---|---|---|---|")
    lines.append(f"| {c['connections']} | {c['peak_fds']} | {c['completed']} | {c['errors']} "
                 f"| {_f(c['rss_before_mb'], 1)} | {_f(c['rss_peak_mb'], 1)} |")
    mem = data["memory"] or {k: None for k in ("idle_mb", "warm_mb", "after_mb", "growth_pct", "errors")}
    lines += ["", "## Memory of one worker", ""]
    lines.append("| idle after start MB | after 1,000 requests MB | after 100,000 more MB | growth | errors |")
    lines.append("|---|---|---|---|---|")
    lines.append(f"| {_f(mem['idle_mb'], 1)} | {_f(mem['warm_mb'], 1)} | {_f(mem['after_mb'], 1)} "
                 f"| {_f(mem['growth_pct'], 1)} % | {mem['errors']} |")
    o = data.get("observability") or {}
    if "p99_on_ms" in o:
        lines += ["", f"## Metrics, analytics (ClickHouse) and traces (OTLP) on vs off, one worker at {o['rate']} req/s "
                  f"(median of {o['rounds']} interleaved rounds)", ""]
        lines.append("| P50 off ms | P50 on ms | P99 off ms | P99 on ms | added P99 ms | max req/s (on) | "
                     "analytics queue depth, max | rows written / requests | rows dropped | OTLP exports received |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        lines.append(f"| {_f(o['p50_off_ms'], 3)} | {_f(o['p50_on_ms'], 3)} | {_f(o['p99_off_ms'], 3)} "
                     f"| {_f(o['p99_on_ms'], 3)} | {_f(o['added_p99_ms'], 3)} | {_f(o['max_rps'], 0)} "
                     f"| {_f(o['queue_depth_max'], 0)} | {_f(o['rows_written'], 0)} / {o['max_requests']} "
                     f"| {_f(o['rows_dropped'], 0)} | {o['exports_received']} |")
    lines += ["", "## Targets", ""]
    for t in data["targets"]:
        lines.append(f"- {'met' if t['met'] else 'NOT met'}: {t['name']} — {t['measured']}")
    lines += ["", "## Checks", ""]
    lines += [f"- {c}" for c in data["checks"]]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def write_chart(path: Path, data: dict) -> bool:
    """Latency percentiles against asked rate, one line per target; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), sharex=True)
    runs = data["summary"]
    for target in dict.fromkeys(r["target"] for r in runs):
        mine = sorted((r for r in runs if r["target"] == target), key=lambda r: r["asked_rps"])
        rates = [r["asked_rps"] for r in mine]
        for ax, key in zip(axes, ("p50_ms", "p99_ms", "p999_ms"), strict=True):
            ax.plot(rates, [r.get(key) for r in mine], marker="o", label=target)
    for ax, title in zip(axes, ("P50", "P99", "P99.9"), strict=True):
        ax.set_title(f"{title} latency")
        ax.set_xlabel("asked rate, req/s")
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"budgateway, non-streaming chat completion ({data['when']}, {data['machine']['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
