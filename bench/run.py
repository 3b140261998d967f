"""``make bench``: the gateway against the physical floor, every scenario in one run so ratios hold.

Targets: the nginx mock itself (the floor), nginx proxy_pass (a plain C reverse proxy), the gateway on
one worker, the same with Redis-backed auth and metrics, and (``--baseline REF``) the gateway as it was
at another commit, served from a worktree; maxima also for the urllib3 client and one worker per core.
Fixed rates use wrk2 (uncorrected latencies) when ``make bench`` could build it, else phase-spread hey;
rounds interleave every target, and each figure is the median over the rounds. Results go to
bench/results/. Traffic goes only to 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from limits import limit_targets, rate_limits, with_section  # noqa: E402
from load import hey_rate, wrk2_rate, wrk_max  # noqa: E402
from observe import observability  # noqa: E402
from procs import API_KEY, Procs, cpu_seconds, free_port, rss_mb, worker_pids  # noqa: E402
from report import write_chart, write_json, write_markdown  # noqa: E402
from scenarios import SLOW_STREAM, STREAM_SHAPE, memory, open_streams, streaming  # noqa: E402
from targets import AUTH, GW, judge  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHAT_BODY = '{"model":"chat","messages":[{"role":"user","content":"Hello! Say hi back."}]}'
RATES = (100, 500, 1000)
#: The wrk2 that ``make bench`` builds from ../shared/tools/wrk2, when that folder exists.
WRK2 = Path(sys.executable).with_name("wrk2")
#: The file descriptors a 10,000-stream run needs: a client and an upstream socket per stream, and slack.
NOFILE = 65536
#: Descriptors a worker holds besides streams (listener, pipes, logs, libraries, sockets still closing).
_FD_SLACK = 300
SCENARIOS = ("rates", "max", "stream", "open", "memory", "observe", "limits")


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
    import gunicorn
    import httptools
    import urllib3

    def tool(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"

    return {"python": platform.python_version(), "gevent": gevent.__version__, "falcon": falcon.__version__,
            "gunicorn": gunicorn.__version__, "httptools": httptools.__version__, "urllib3": urllib3.__version__,
            "geventhttpclient": geventhttpclient.__version__, "nginx": tool(["nginx", "-v"]),
            "wrk": tool(["wrk", "-v"]).split(" Copyright")[0], "kernel": platform.release()}


class _Target:
    """Something load is sent to: a port, and for gateways its pid (the master) and request headers."""

    def __init__(self, name: str, port: int, pid: int | None = None, headers: dict | None = None) -> None:
        self.name, self.port, self.pid, self.headers = name, port, pid, headers

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def pids(self) -> list[int]:
        return [] if self.pid is None else sorted({self.pid, *worker_pids(self.pid)})

    def rss_mb(self) -> float | None:
        return None if self.pid is None else sum(rss_mb(p) for p in worker_pids(self.pid))


def _fixed_rate(target: _Target, rate: int, seconds: float, wrk2: str | None) -> dict:
    pids = target.pids()
    before = cpu_seconds(pids) if pids else 0.0
    if wrk2:
        r = wrk2_rate(wrk2, target.name, target.url, CHAT_BODY, rate, seconds, headers=target.headers)
    else:
        r = hey_rate(target.name, target.url, CHAT_BODY, rate, seconds, headers=target.headers)
    rec = r.as_dict()
    if pids and r.requests:
        rec["cpu_us_per_request"] = (cpu_seconds(pids) - before) / r.requests * 1e6
    rec["rss_mb"] = target.rss_mb()
    return rec


def _summarise(runs: list[dict]) -> list[dict]:
    """Per target and rate: the median over rounds of each figure, and of each round's added latency."""
    out = []
    keys = dict.fromkeys((r["target"], r["asked_rps"]) for r in runs)
    for target, rate in keys:
        mine = [r for r in runs if (r["target"], r["asked_rps"]) == (target, rate)]
        row = {"target": target, "asked_rps": rate, "rounds": len(mine), "generator": mine[0]["generator"]}
        for key in ("achieved_rps", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "added_p50_ms", "added_p99_ms",
                    "cpu_us_per_request", "rss_mb"):
            values = [r[key] for r in mine if r.get(key) is not None]
            if values:
                row[key] = statistics.median(values)
        row["errors"] = sum(r["errors"] for r in mine)
        out.append(row)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=15.0, help="length of each fixed-rate run (wrk2: at least 15)")
    ap.add_argument("--rounds", type=int, default=2, help="fixed-rate rounds over every target, interleaved")
    ap.add_argument("--max-seconds", type=int, default=8, help="length of each maximum-throughput run")
    ap.add_argument("--baseline", metavar="REF", help="also run the gateway of this commit (a git worktree)")
    ap.add_argument("--streams", type=int, default=10000,
                    help="open streams held on one worker (capped by the open-file limit: two sockets a stream)")
    ap.add_argument("--leak-requests", type=int, default=100_000, help="requests between the memory readings")
    ap.add_argument("--only", choices=SCENARIOS, action="append", help="run only these scenarios (default: all)")
    args = ap.parse_args()
    only = set(args.only or SCENARIOS)
    nofile = _raise_nofile()
    wrk2 = str(WRK2) if WRK2.exists() else None
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data: dict = {
        "when": when,
        "machine": {"cpus": os.cpu_count(), "nofile": nofile, "versions": _versions()},
        "args": vars(args),
        "runs": [], "summary": [],
        "streaming": {"shape": STREAM_SHAPE, "streams": 0, "concurrency": 0, "results": []},
        "concurrent_streams": {}, "memory": {}, "observability": {}, "limits": {}, "checks": [], "targets": [],
    }
    data["checks"].append(f"fixed rates by {'wrk2 (uncorrected latencies)' if wrk2 else 'phase-spread hey (no wrk2 built)'}")
    print(f"budgateway bench {when}: {os.cpu_count()} CPUs, open-file limit {nofile}; {data['checks'][-1]}", flush=True)

    with Procs() as procs:
        mock, proxy, stream = free_port(), free_port(), free_port()
        procs.nginx(mock, proxy)
        procs.stream_mock(stream)
        streams = [STREAM_SHAPE, SLOW_STREAM]

        def gateway(name: str, **options) -> _Target:
            port = free_port()
            options.setdefault("client", "geventhttpclient")
            options.setdefault("workers", 1)
            pid = procs.gateway(name.replace(" ", "-"), port, mock, stream, streams, **options)
            return _Target(name, port, pid)

        fixed = [_Target("direct (floor)", mock), _Target("nginx proxy_pass", proxy), gateway(GW)]
        if shutil.which("redis-server"):
            auth = gateway(AUTH, redis_url=procs.redis(free_port(), ["chat", *streams]))
            auth.headers = {"Authorization": f"Bearer {API_KEY}"}
            fixed.append(auth)
        else:
            data["checks"].append("no redis-server: the auth target was not run")
        if args.baseline:
            fixed.append(gateway(f"gw {args.baseline} 1w", source=procs.baseline(args.baseline)))
        extra = [gateway("gw urllib3 1w", client="urllib3"), gateway(f"gw {os.cpu_count()}w", workers=os.cpu_count())]
        for t in fixed + extra:  # warm every pool and code path
            wrk_max(t.name, t.url, CHAT_BODY, 4, 1, headers=t.headers)

        if "rates" in only:
            for round_ in range(args.rounds):
                for rate in RATES:
                    floor = None
                    for t in fixed:
                        rec = {**_fixed_rate(t, rate, args.seconds, wrk2), "round": round_ + 1}
                        if floor is None:
                            floor = rec
                        else:
                            rec["added_p50_ms"] = rec["p50_ms"] - floor["p50_ms"]
                            rec["added_p99_ms"] = rec["p99_ms"] - floor["p99_ms"]
                        data["runs"].append(rec)
                        _print_run(rec)
            data["summary"] = _summarise([r for r in data["runs"] if r["scenario"] == "fixed-rate"])

        if "max" in only:
            for t in fixed + extra:
                r = wrk_max(t.name, t.url, CHAT_BODY, 64, args.max_seconds, headers=t.headers)
                data["runs"].append({**r.as_dict(), "rss_mb": t.rss_mb()})
                _print_run(data["runs"][-1])

        if "stream" in only:
            data["streaming"] = streaming(stream, {t.name: (t.port, t.headers) for t in fixed[2:]})

        if "open" in only:
            count = min(args.streams, (nofile - _FD_SLACK) // 2)
            if count < args.streams:
                data["checks"].append(
                    f"open streams: {args.streams} asked, {count} run: the open-file limit is {nofile} and "
                    "each stream holds a client and an upstream socket in the worker")
            data["concurrent_streams"] = open_streams(fixed[2].port, fixed[2].pid, count)
            print(f"open streams: {data['concurrent_streams']}", flush=True)

        if "observe" in only:
            data["observability"] = observability(gateway, CHAT_BODY, wrk2, rounds=max(args.rounds, 3),
                                                  seconds=args.seconds, max_seconds=args.max_seconds)

        if "limits" in only:
            data["limits"] = rate_limits(procs, gateway, mock, CHAT_BODY, wrk2, rounds=max(args.rounds, 3),
                                         seconds=args.seconds)

        if "memory" in only:
            t = gateway("gw memory")
            data["memory"] = memory(t.port, t.pid, args.leak_requests, CHAT_BODY)
            print(f"memory: {data['memory']}", flush=True)

    data["targets"] = judge(data) + limit_targets(data)
    RESULTS.mkdir(exist_ok=True)
    # A partial run must not pass for the record of a whole one.
    name = "latest" if args.only is None else "partial"
    stamp = when.replace(":", "").replace("-", "")
    md = with_section(RESULTS / f"{name}.md", write_markdown(RESULTS / f"{name}.md", data), data)
    write_json(RESULTS / f"{name}.json", data)
    if name == "latest":
        (RESULTS / f"{stamp}.json").write_text((RESULTS / "latest.json").read_text())
    chart = write_chart(RESULTS / f"{name}.png", data)
    print("\n" + md)
    print(f"wrote {RESULTS}/{name}.md, {name}.json" + (f", {name}.png" if chart else
          " (no chart: pip install matplotlib, or make bench installs it)"))
    return 0


def _print_run(rec: dict) -> None:
    added = f" added P50 {rec['added_p50_ms']:+.2f} P99 {rec['added_p99_ms']:+.2f}" if "added_p50_ms" in rec else ""
    cpu = f" cpu {rec['cpu_us_per_request']:.0f} us/req" if rec.get("cpu_us_per_request") else ""
    asked = f"{rec['asked_rps']:>5}" if rec["asked_rps"] else "  max"
    print(f"{rec['target']:<26} {asked} -> {rec['achieved_rps']:8.0f} req/s  P50 {rec['p50_ms']:7.3f}  "
          f"P99 {rec['p99_ms']:7.3f}  P99.9 {rec['p999_ms']:7.3f}  errors {rec['errors']}{added}{cpu}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
