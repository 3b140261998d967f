"""The processes a benchmark runs: nginx (mock and proxy), the streaming mock, Redis, gateways; their memory and CPU.

A gateway may run from another commit (``baseline``): a git worktree of it, served with this venv.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["API_KEY", "Procs", "cpu_seconds", "free_port", "rss_mb", "worker_pids"]

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 40.0

#: The fixed answer of the non-streaming mock: a small chat completion.
COMPLETION = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"mock",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},'
    '"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


#: The key the auth targets are called with (written to the bench's Redis in budapp's format).
API_KEY = "bud_bench_key_0123456789"


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU the processes have used, in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def worker_pids(pid: int) -> list[int]:
    """The gateway's serving processes: its children when it is a master, else itself."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(p) for p in f.read().split()]
    except FileNotFoundError:
        children = []
    return children or [pid]


def _wait_http(port: int, path: str, method: str = "GET", body: bytes | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            if conn.getresponse().status < 500:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {READY_TIMEOUT_S} s")


class Procs:
    """Starts processes in a scratch folder and stops them all at the end (a context manager)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="budgateway-bench-"))
        self._procs: list[subprocess.Popen] = []
        self._worktrees: list[Path] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc) -> None:
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self._procs):
            try:
                p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
        for path in self._worktrees:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, name: str, cmd: list[str], env: dict | None = None, cwd: Path = REPO) -> subprocess.Popen:
        log = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        self._procs.append(proc)
        return proc

    def nginx(self, mock_port: int, proxy_port: int) -> None:
        """nginx answering the fixed completion on mock_port, and proxying proxy_port to it."""
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"""
worker_processes 1;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 30000; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    keepalive_requests 1000000;
    upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{mock_port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{COMPLETION}';
        }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port} backlog=4096;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
        )
        self._spawn("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-e", str(self.dir / "nginx-stderr.log")])
        _wait_http(mock_port, "/v1/chat/completions", "POST", b"{}")
        _wait_http(proxy_port, "/v1/chat/completions", "POST", b"{}")

    def redis(self, port: int, models: list[str]) -> str:
        """A redis-server on loopback with the bench's API key in it, granted ``models``; its URL."""
        import redis

        self._spawn("redis", [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
                              "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--notify-keyspace-events", "KEA"])
        client = redis.Redis(port=port)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        key_hash = hashlib.sha256(("bud-" + API_KEY).encode()).hexdigest()
        grants = {m: {"endpoint_id": m, "model_id": f"model-{m}", "project_id": "project-bench"} for m in models}
        grants["__metadata__"] = {"api_key_id": "key-bench", "user_id": "user-bench"}
        client.set(f"api_key:{key_hash}", json.dumps(grants))
        return f"redis://127.0.0.1:{port}/0"

    def baseline(self, ref: str) -> Path:
        """A worktree of commit ``ref`` to serve a baseline gateway from (removed at exit)."""
        path = self.dir / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--force", str(path), ref],
                       check=True, capture_output=True)
        self._worktrees.append(path)
        return path

    def stream_mock(self, port: int) -> None:
        self._spawn("stream-mock", [sys.executable, str(REPO / "bench" / "mock_stream.py"), str(port)])
        _wait_http(port, "/v1/chat/completions", "POST", b'{"model":"stream-1-0"}')

    def gateway(
        self, name: str, port: int, mock_port: int, stream_port: int, stream_models: list[str], *, client: str,
        workers: int, redis_url: str | None = None, source: Path = REPO, settings: str = "",
        env: dict[str, str] | None = None,
    ) -> int:
        """A gateway serving ``chat`` (to nginx) and each stream model (to the streaming mock); returns its pid.

        A stream model is named as the mock's ``stream-N-D``, so one request body works both ways. With
        ``redis_url`` it authenticates (``API_KEY``) against the keys there; ``source`` is the code it runs;
        ``settings`` is more TOML for its ``[gateway]`` table, ``env`` more environment.
        """
        models = [("chat", mock_port)] + [(m, stream_port) for m in stream_models]
        text = f"""
[gateway]
bind_address = "127.0.0.1:{port}"
workers = {workers}
upstream_client = "{client}"
shutdown_timeout_s = 5
{settings}
"""
        for model, upstream in models:
            text += f"""
[models."{model}"]
routing = ["mock"]
[models."{model}".providers.mock]
type = "openai"
model_name = "{model}"
api_base = "http://127.0.0.1:{upstream}/v1"
api_key_location = "none"
"""
        conf = self.dir / f"{name}.toml"
        conf.write_text(text)
        env = dict(os.environ, PYTHONPATH=str(source), **(env or {}))
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if redis_url:
            env["TENSORZERO_REDIS_URL"] = redis_url
        proc = self._spawn(name, [sys.executable, "-m", "gateway", "--config-file", str(conf)], env, cwd=source)
        _wait_http(port, "/health")
        if workers > 1:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while len(worker_pids(proc.pid)) < workers and time.monotonic() < deadline:
                time.sleep(0.1)
        return proc.pid
