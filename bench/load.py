"""Load generators, driven as subprocesses: wrk2 (fixed rates), hey (fixed rates without wrk2; streams), wrk (maximum).

wrk2 holds a constant total rate across its connections (an open loop) and records each request from
send to answer in C: its uncorrected percentiles are the figures to compare at sub-millisecond
latencies (its corrected ones add its ~1 ms timer granularity to every target alike).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Result", "hey_rate", "hey_streams", "percentile", "wrk2_rate", "wrk_max"]

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"
#: One hey process (one worker) paces at this many requests per second; a rate takes rate/this processes.
HEY_WORKER_QPS = 100


@dataclass
class Result:
    """One load run against one target."""

    target: str
    scenario: str
    asked_rps: float | None
    achieved_rps: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    generator: str

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (sorted or not)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _hey_csv(args: list[str], timeout: float) -> list[list[str]]:
    out = subprocess.run(["hey", "-o", "csv", *args], capture_output=True, text=True, timeout=timeout, check=True).stdout
    return [line.split(",") for line in out.splitlines()[1:] if line and line[0].isdigit()]


def _hey_headers(headers: dict[str, str] | None) -> list[str]:
    return [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]


def _wrk_env(body: str, headers: dict[str, str] | None) -> dict[str, str]:
    auth = (headers or {}).get("Authorization", "")
    return dict(os.environ, BENCH_BODY=body, BENCH_AUTH=auth)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk2_percentile(section: str, label: str) -> float:
    m = re.search(r"^\s*" + re.escape(label) + r"\s+([\d.]+)(us|ms|s)\b", section, re.M)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else math.nan


def wrk2_rate(wrk2: str, target: str, url: str, body: str, rate: int, seconds: float, *,
              connections: int = 16, headers: dict[str, str] | None = None) -> Result:
    """``rate`` requests a second for ``seconds`` (its first ~10 s calibrate), uncorrected percentiles."""
    seconds = max(int(seconds), 15)
    proc = subprocess.run(
        [wrk2, "-t2", f"-c{connections}", f"-d{seconds}s", f"-R{rate}", "-U", "--latency", "-s", str(WRK_SCRIPT), url],
        capture_output=True, text=True, timeout=seconds + 120, env=_wrk_env(body, headers),
    )
    out = proc.stdout
    if "Uncorrected Latency" not in out:
        raise RuntimeError(f"wrk2 printed no uncorrected latencies: {out}\n{proc.stderr}")
    section = out.split("Uncorrected Latency", 1)[1].split("----------", 1)[0]
    total = re.search(r"(\d+) requests in", out)
    achieved = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return Result(target, "fixed-rate", rate, float(achieved.group(1)) if achieved else 0.0,
                  int(total.group(1)) if total else 0, errors,
                  _wrk2_percentile(section, "50.000%"), _wrk2_percentile(section, "90.000%"),
                  _wrk2_percentile(section, "99.000%"), _wrk2_percentile(section, "99.900%"),
                  f"wrk2 -t2 -c{connections} -R{rate} -U (uncorrected)")


def hey_rate(target: str, url: str, body: str, rate: int, seconds: float, *,
             headers: dict[str, str] | None = None) -> Result:
    """Fixed-rate load from rate/100 hey processes of one worker each, paced at 100 req/s, started with
    their phases spread evenly over the 10 ms period so arrivals are uniform rather than in bursts.

    Each worker is a closed loop: an answer slower than 10 ms costs that worker its next tick, so the
    achieved rate falling short of the asked one shows the target did not keep up.
    """
    processes = max(1, rate // HEY_WORKER_QPS)
    qps = rate / processes
    per_process = max(1, int(qps * seconds))
    args = ["-n", str(per_process), "-c", "1", "-q", f"{qps:g}", "-t", "10", "-m", "POST",
            "-T", "application/json", *_hey_headers(headers), "-d", body, url]
    period = 1.0 / qps
    procs = []
    for _ in range(processes):
        procs.append(subprocess.Popen(["hey", "-o", "csv", *args], stdout=subprocess.PIPE, text=True))
        time.sleep(period / processes)
    rows = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds * 4 + 60)
        rows += [line.split(",") for line in out.splitlines()[1:] if line and line[0].isdigit()]
    total = per_process * processes
    ok = [r for r in rows if r[6] == "200"]
    lat = [float(r[0]) * 1000.0 for r in ok]
    span = max((float(r[7]) + float(r[0]) for r in rows), default=seconds)
    return Result(target, "fixed-rate", rate, len(ok) / span if span else 0.0, total, total - len(ok),
                  percentile(lat, 50), percentile(lat, 90), percentile(lat, 99), percentile(lat, 99.9),
                  f"{processes} x hey -c1 -q {qps:g}, phases spread (paced)")


def hey_streams(target: str, url: str, body: str, count: int, concurrency: int, *,
                headers: dict[str, str] | None = None) -> dict:
    """Streams at low concurrency: time to first byte (the head goes out with the first event) and the
    time to read the rest, per stream, in milliseconds."""
    rows = _hey_csv(
        ["-n", str(count), "-c", str(concurrency), "-t", "60", "-m", "POST", "-T", "application/json",
         *_hey_headers(headers), "-d", body, url],
        timeout=600,
    )
    ok = [r for r in rows if r[6] == "200"]
    ttfb = [float(r[4]) * 1000.0 for r in ok]
    read = [float(r[5]) * 1000.0 for r in ok]
    return {
        "target": target,
        "streams": len(ok),
        "errors": count - len(ok),
        "ttft_p50_ms": percentile(ttfb, 50),
        "ttft_p99_ms": percentile(ttfb, 99),
        "read_p50_ms": percentile(read, 50),
        "read_p99_ms": percentile(read, 99),
    }


def wrk_max(target: str, url: str, body: str, connections: int, seconds: int, *, threads: int = 2,
            timeout_s: int = 10, headers: dict[str, str] | None = None) -> Result:
    """Closed-loop maximum: wrk keeps ``connections`` requests in flight for ``seconds``."""
    env = _wrk_env(body, headers)
    proc = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", f"{timeout_s}s",
         "-s", str(WRK_SCRIPT), url],
        capture_output=True, text=True, timeout=seconds + timeout_s + 60, env=env,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {proc.stdout}\n{proc.stderr}")
    d = json.loads(line[len("BENCH_JSON "):])
    duration = d["duration_us"] / 1e6
    errors = d["errors"] + d["status_errors"]
    return Result(target, "max", None, d["requests"] / duration, d["requests"], errors,
                  d["p50_us"] / 1000, d["p90_us"] / 1000, d["p99_us"] / 1000, d["p999_us"] / 1000,
                  f"wrk -t{threads} -c{connections} (closed loop)")
