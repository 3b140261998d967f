"""``make bench``: the gateway against the physical floor, every scenario in one run so ratios hold.

Targets: the nginx mock itself (the floor), nginx proxy_pass (a plain C reverse proxy), and the gateway
with each upstream client on one worker, and with one worker per core. Results go to bench/results/.
Traffic goes only to 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import hey_rate, hey_streams, wrk_max  # noqa: E402
from procs import Procs, free_port, rss_mb, worker_pids  # noqa: E402
from report import write_chart, write_json, write_markdown  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHAT_BODY = '{"model":"chat","messages":[{"role":"user","content":"Hello! Say hi back."}]}'
RATES = (100, 500, 1000, 2000)
STREAM_SHAPE = "stream-20-5"  # 20 events, 5 ms apart
SLOW_STREAM = "stream-20-1000"  # 20 events, 1 s apart: ~19 s open
CLIENTS = ("urllib3", "geventhttpclient")
#: The file descriptors a 10,000-stream run needs: a client and an upstream socket per stream, and slack.
NOFILE = 65536
#: Descriptors a worker holds besides streams (listener, pipes, logs, libraries, sockets still
#: closing); at 100 a run touched the limit and one connection failed with EMFILE.
_FD_SLACK = 300


def _stream_body(shape: str) -> str:
    return json.dumps({"model": shape, "stream": True, "messages": [{"role": "user", "content": "Hi"}]})


def _raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (NOFILE, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _versions() -> dict:
    import falcon
    import gevent
    import geventhttpclient
    import urllib3

    def tool(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    return {
        "python": platform.python_version(),
        "gevent": gevent.__version__,
        "falcon": falcon.__version__,
        "urllib3": urllib3.__version__,
        "geventhttpclient": geventhttpclient.__version__,
        "nginx": tool(["nginx", "-v"]),
        "wrk": tool(["wrk", "-v"]).split(" Copyright")[0],
        "kernel": platform.release(),
    }


class _Sampler:
    """Samples a process's RSS and open file count in the background; keeps the peaks."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid, self.every = pid, every_s
        self.peak_rss = 0.0
        self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, rss_mb(self.pid))
                self.peak_fds = max(self.peak_fds, len(os.listdir(f"/proc/{self.pid}/fd")))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.every)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each fixed-rate run")
    ap.add_argument("--max-seconds", type=int, default=8, help="length of each maximum-throughput run")
    ap.add_argument("--streams", type=int, default=10000,
                    help="open streams held on one worker (capped by the open-file limit: two sockets a stream)")
    ap.add_argument("--leak-requests", type=int, default=100_000, help="requests between the memory readings")
    ap.add_argument("--only", choices=("rates", "max", "stream", "open", "memory"), action="append",
                    help="run only these scenarios (default: all)")
    ap.add_argument("--target", action="append", help="only targets whose name contains this (default: all)")
    args = ap.parse_args()
    only = set(args.only or ("rates", "max", "stream", "open", "memory"))
    nofile = _raise_nofile()
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data: dict = {
        "when": when,
        "machine": {"cpus": os.cpu_count(), "nofile": nofile, "versions": _versions()},
        "runs": [],
        "streaming": {"shape": STREAM_SHAPE, "streams": 0, "concurrency": 0, "results": []},
        "concurrent_streams": {},
        "memory": {},
        "checks": [],
        "targets": [],
    }
    print(f"budgateway bench {when}: {os.cpu_count()} CPUs, open-file limit {nofile}", flush=True)

    with Procs() as procs:
        mock, proxy, stream = free_port(), free_port(), free_port()
        procs.nginx(mock, proxy)
        procs.stream_mock(stream)
        gateways = {}
        for client in CLIENTS:
            port = free_port()
            pid = procs.gateway(f"gw-{client}", port, mock, stream, [STREAM_SHAPE, SLOW_STREAM], client=client, workers=1)
            gateways[f"gw {client} 1w"] = (port, pid)
        port = free_port()
        pid = procs.gateway("gw-2w", port, mock, stream, [STREAM_SHAPE], client=_default_client(), workers=2)
        gateways[f"gw {_default_client()} {os.cpu_count()}w"] = (port, pid)

        targets = {"direct (floor)": mock, "nginx proxy_pass": proxy} | {k: v[0] for k, v in gateways.items()}
        if args.target:
            targets = {n: p for n, p in targets.items() if n.startswith("direct") or any(t in n for t in args.target)}
        urls = {name: f"http://127.0.0.1:{p}/v1/chat/completions" for name, p in targets.items()}
        for name, url in urls.items():  # warm every pool and code path
            hey_rate(name, url, CHAT_BODY, 200, 1.0)

        if "max" in only or "rates" in only:
            floor = wrk_max("direct (floor)", urls["direct (floor)"], CHAT_BODY, 32, args.max_seconds)
            need = 2 * max(RATES)
            data["checks"].append(
                f"mock alone: {floor.achieved_rps:.0f} req/s with wrk -c32, "
                f"{'at least' if floor.achieved_rps >= need else 'BELOW'} twice the highest rate asked ({need})"
            )
            print(data["checks"][-1], flush=True)

        if "rates" in only:
            for rate in RATES:
                floor_run = None
                for name, url in urls.items():
                    r = hey_rate(name, url, CHAT_BODY, rate, args.seconds)
                    rec = r.as_dict()
                    rec["rss_mb"] = _gateway_rss(gateways, name)
                    if name.startswith("direct"):
                        floor_run = r
                    elif floor_run is not None:
                        rec["added_p50_ms"] = r.p50_ms - floor_run.p50_ms
                        rec["added_p99_ms"] = r.p99_ms - floor_run.p99_ms
                    data["runs"].append(rec)
                    _print_run(rec)

        if "max" in only:
            for name, url in urls.items():
                r = wrk_max(name, url, CHAT_BODY, 64, args.max_seconds)
                data["runs"].append({**r.as_dict(), "rss_mb": _gateway_rss(gateways, name)})
                _print_run(data["runs"][-1])

        if "stream" in only:
            data["streaming"] = _streaming(procs, stream, gateways)

        if "open" in only:
            name = f"gw {_default_client()} 1w"
            streams = min(args.streams, (nofile - _FD_SLACK) // 2)
            if streams < args.streams:
                data["checks"].append(
                    f"open streams: {args.streams} asked, {streams} run: the open-file limit is {nofile} and "
                    "each stream holds a client and an upstream socket in the worker"
                )
            data["concurrent_streams"] = _open_streams(gateways[name], streams)
            print(f"open streams: {data['concurrent_streams']}", flush=True)

        if "memory" in only:
            port = free_port()
            pid = procs.gateway("gw-mem", port, mock, stream, [], client=_default_client(), workers=1)
            data["memory"] = _memory(port, pid, args.leak_requests)
            print(f"memory: {data['memory']}", flush=True)

    data["targets"] = _targets(data)
    RESULTS.mkdir(exist_ok=True)
    # A partial run (--only, --target) must not pass for the record of a whole one.
    name = "latest" if args.only is None and args.target is None else "partial"
    stamp = when.replace(":", "").replace("-", "")
    md = write_markdown(RESULTS / f"{name}.md", data)
    write_json(RESULTS / f"{name}.json", data)
    if name == "latest":
        (RESULTS / f"{stamp}.json").write_text((RESULTS / "latest.json").read_text())
    chart = write_chart(RESULTS / f"{name}.png", data)
    print("\n" + md)
    print(f"wrote {RESULTS}/{name}.md, {name}.json" + (f", {name}.png" if chart else
          " (no chart: pip install matplotlib, or make bench installs it)"))
    return 0


def _gateway_rss(gateways: dict, name: str) -> float | None:
    """The resident memory of a gateway target's serving processes, summed (None for nginx)."""
    if name not in gateways:
        return None
    return sum(rss_mb(pid) for pid in worker_pids(gateways[name][1]))


def _default_client() -> str:
    from providers.http import DEFAULT_CLIENT

    return DEFAULT_CLIENT


def _print_run(rec: dict) -> None:
    added = f" added P50 {rec['added_p50_ms']:+.2f} P99 {rec['added_p99_ms']:+.2f}" if "added_p50_ms" in rec else ""
    asked = f"{rec['asked_rps']:>5}" if rec["asked_rps"] else "  max"
    print(f"{rec['target']:<26} {asked} -> {rec['achieved_rps']:8.0f} req/s  P50 {rec['p50_ms']:7.2f}  "
          f"P99 {rec['p99_ms']:7.2f}  P99.9 {rec['p999_ms']:7.2f}  errors {rec['errors']}{added}", flush=True)


def _streaming(procs: Procs, stream_port: int, gateways: dict) -> dict:
    count, concurrency = 200, 4
    body = _stream_body(STREAM_SHAPE)
    chunks = int(STREAM_SHAPE.split("-")[1])
    targets = {"direct (floor)": stream_port} | {k: v[0] for k, v in gateways.items() if k.endswith(" 1w")}
    results = []
    floor = None
    for name, port in targets.items():
        r = hey_streams(name, f"http://127.0.0.1:{port}/v1/chat/completions", body, count, concurrency)
        if floor is None:
            floor = r
        else:
            r["added_ttft_p50_ms"] = r["ttft_p50_ms"] - floor["ttft_p50_ms"]
            # The rest of the stream is chunks-1 events and [DONE]: spread the added time over them.
            r["added_chunk_ms"] = (r["read_p50_ms"] - floor["read_p50_ms"]) / chunks
        results.append(r)
        print(f"stream {name}: {r}", flush=True)
    return {"shape": STREAM_SHAPE, "streams": count, "concurrency": concurrency, "results": results}


def _open_streams(gateway: tuple[int, int], connections: int) -> dict:
    port, pid = gateway
    worker = worker_pids(pid)[0]
    before = rss_mb(worker)
    # Long enough for every connection to open and finish one whole stream.
    seconds = 25
    with _Sampler(worker) as sampler:
        r = wrk_max("open streams", f"http://127.0.0.1:{port}/v1/chat/completions", _stream_body(SLOW_STREAM),
                    connections, seconds, timeout_s=30)
    return {
        "connections": connections,
        "stream": SLOW_STREAM,
        "completed": r.requests,
        "errors": r.errors,
        "rss_before_mb": before,
        "rss_peak_mb": sampler.peak_rss,
        "peak_fds": sampler.peak_fds,
    }


def _memory(port: int, pid: int, requests: int) -> dict:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    time.sleep(1.0)
    idle = rss_mb(pid)
    subprocess.run(["hey", "-n", "1000", "-c", "8", "-m", "POST", "-T", "application/json", "-d", CHAT_BODY, url],
                   capture_output=True, timeout=120, check=True)
    warm = rss_mb(pid)
    out = subprocess.run(["hey", "-n", str(requests), "-c", "16", "-m", "POST", "-T", "application/json",
                          "-d", CHAT_BODY, url], capture_output=True, text=True, timeout=900, check=True).stdout
    ok = sum(int(line.split("]")[1].split()[0]) for line in out.splitlines() if line.strip().startswith("[200]"))
    after = rss_mb(pid)
    return {"idle_mb": idle, "warm_mb": warm, "after_mb": after, "requests": requests,
            "errors": requests - ok, "growth_pct": (after - warm) / warm * 100.0}


def _targets(data: dict) -> list[dict]:
    """The performance targets of issue 3, judged from this run."""
    out = []
    runs = data["runs"]
    default = f"gw {_default_client()} 1w"

    def run(target: str, scenario: str, rate: int | None = None) -> dict | None:
        return next((r for r in runs if r["target"] == target and r["scenario"] == scenario
                     and (rate is None or r["asked_rps"] == rate)), None)

    r500 = run(default, "fixed-rate", 500)
    if r500:
        out.append({"name": "added latency at 500 req/s, one worker: P50 <= 0.3 ms, P99 <= 1 ms",
                    "met": r500["added_p50_ms"] <= 0.3 and r500["added_p99_ms"] <= 1.0,
                    "measured": f"added P50 {r500['added_p50_ms']:.2f} ms, P99 {r500['added_p99_ms']:.2f} ms"})
    r1000 = run(default, "fixed-rate", 1000)
    if r1000:
        out.append({"name": "1,000 req/s sustained with 0 errors and added P99 <= 2 ms",
                    "met": r1000["errors"] == 0 and r1000["achieved_rps"] >= 950 and r1000["added_p99_ms"] <= 2.0,
                    "measured": f"{r1000['achieved_rps']:.0f} req/s, {r1000['errors']} errors, "
                                f"added P99 {r1000['added_p99_ms']:.2f} ms"})
    rmax = run(default, "max")
    if rmax:
        out.append({"name": "maximum throughput >= 2,500 req/s per worker",
                    "met": rmax["achieved_rps"] >= 2500 and rmax["errors"] == 0,
                    "measured": f"{rmax['achieved_rps']:.0f} req/s, {rmax['errors']} errors"})
    streams = {r["target"]: r for r in data["streaming"]["results"]}
    s = streams.get(default)
    if s:
        out.append({"name": "streamed chunk relayed with <= 0.2 ms added delay; TTFT adds <= 1 ms",
                    "met": s["added_chunk_ms"] <= 0.2 and s["added_ttft_p50_ms"] <= 1.0,
                    "measured": f"per chunk {s['added_chunk_ms']:.3f} ms, TTFT {s['added_ttft_p50_ms']:.3f} ms (P50)"})
    c = data["concurrent_streams"]
    if c:
        out.append({"name": f"{c['connections']:,} concurrent streams on one worker, no error, RSS <= 500 MB",
                    "met": c["errors"] == 0 and c["rss_peak_mb"] <= 500 and c["peak_fds"] >= c["connections"],
                    "measured": f"{c['errors']} errors, peak {c['peak_fds']} sockets, RSS {c['rss_peak_mb']:.0f} MB"})
    m = data["memory"]
    if m:
        out.append({"name": "idle RSS <= 50 MB per worker; growth after 100,000 requests <= 10 %",
                    "met": m["idle_mb"] <= 50 and m["growth_pct"] <= 10,
                    "measured": f"idle {m['idle_mb']:.1f} MB, {m['warm_mb']:.1f} -> {m['after_mb']:.1f} MB "
                                f"({m['growth_pct']:+.1f} %)"})
    return out


if __name__ == "__main__":
    sys.exit(main())
