"""The benchmark's scenarios beyond fixed rates and maxima: streams relayed, streams held open, memory."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from load import hey_streams, wrk_max
from procs import rss_mb, worker_pids

__all__ = ["STREAM_SHAPE", "SLOW_STREAM", "memory", "open_streams", "stream_body", "streaming"]

STREAM_SHAPE = "stream-20-5"  # 20 events, 5 ms apart
SLOW_STREAM = "stream-20-1000"  # 20 events, 1 s apart: ~19 s open


def stream_body(shape: str) -> str:
    return json.dumps({"model": shape, "stream": True, "messages": [{"role": "user", "content": "Hi"}]})


class Sampler:
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

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def streaming(stream_port: int, gateways: dict[str, tuple[int, dict | None]]) -> dict:
    """Time to first token and the rest of each stream, straight from the mock and through each gateway
    (name -> port and request headers)."""
    count, concurrency = 200, 4
    body = stream_body(STREAM_SHAPE)
    chunks = int(STREAM_SHAPE.split("-")[1])
    results = []
    floor = None
    for name, (port, headers) in {"direct (floor)": (stream_port, None), **gateways}.items():
        r = hey_streams(name, f"http://127.0.0.1:{port}/v1/chat/completions", body, count, concurrency,
                        headers=headers)
        if floor is None:
            floor = r
        else:
            r["added_ttft_p50_ms"] = r["ttft_p50_ms"] - floor["ttft_p50_ms"]
            # The rest of the stream is chunks-1 events and [DONE]: spread the added time over them.
            r["added_chunk_ms"] = (r["read_p50_ms"] - floor["read_p50_ms"]) / chunks
        results.append(r)
        print(f"stream {name}: {r}", flush=True)
    return {"shape": STREAM_SHAPE, "streams": count, "concurrency": concurrency, "results": results}


def open_streams(port: int, pid: int, connections: int) -> dict:
    """``connections`` slow streams held open at once on one worker."""
    worker = worker_pids(pid)[0]
    before = rss_mb(worker)
    seconds = 25  # long enough for every connection to open and finish one whole stream
    with Sampler(worker) as sampler:
        r = wrk_max("open streams", f"http://127.0.0.1:{port}/v1/chat/completions", stream_body(SLOW_STREAM),
                    connections, seconds, timeout_s=30)
    return {"connections": connections, "stream": SLOW_STREAM, "completed": r.requests, "errors": r.errors,
            "rss_before_mb": before, "rss_peak_mb": sampler.peak_rss, "peak_fds": sampler.peak_fds}


def memory(port: int, pid: int, requests: int, body: str) -> dict:
    """One worker's resident memory idle, warm, and after ``requests`` more."""
    worker = worker_pids(pid)[0]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    requests -= requests % 16  # NOTE: hey sends n // c requests from each of its c workers
    time.sleep(1.0)
    idle = rss_mb(worker)
    subprocess.run(["hey", "-n", "1000", "-c", "8", "-m", "POST", "-T", "application/json", "-d", body, url],
                   capture_output=True, timeout=120, check=True)
    warm = rss_mb(worker)
    out = subprocess.run(["hey", "-n", str(requests), "-c", "16", "-m", "POST", "-T", "application/json",
                          "-d", body, url], capture_output=True, text=True, timeout=900, check=True).stdout
    ok = sum(int(line.split("]")[1].split()[0]) for line in out.splitlines() if line.strip().startswith("[200]"))
    after = rss_mb(worker)
    return {"idle_mb": idle, "warm_mb": warm, "after_mb": after, "requests": requests,
            "errors": requests - ok, "growth_pct": (after - warm) / warm * 100.0}
