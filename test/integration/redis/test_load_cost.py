"""MEASUREMENTS, not checks: what loading from Redis and authenticating cost; ``pytest -s`` shows them.

1. The time one gateway takes to load ``KEYS`` keys and ``MODELS`` models whose credentials are encrypted for
   a ``MEASURE_RSA_BITS``-bit key (production's size), from its log line
   ``loaded N keys and M models from redis in X ms``.
   Meanwhile ``/health`` is polled: how long it takes to answer shows what the load costs the clients.
2. The CPU time auth adds to a request: the gateway's CPU time over ``REQUESTS`` requests on one in-process
   dummy model, with auth and without, read from ``/proc/PID/stat`` (utime + stime, clock ticks) and, finer,
   from ``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU); reported in microseconds per request.

The assertions only check that the measurement ran (the load finished, every request answered 200).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import statistics
import time
import uuid
from pathlib import Path

import pytest
from budapp import grant, hash_key, key_entry, model_entry, new_raw_key, openai_section, session_key_pair
from configs import dummy_provider, model_toml

from .polling import wait_until

pytestmark = pytest.mark.measurement

KEYS, MODELS = 1000, 1000
MEASURE_RSA_BITS = 4096
REQUESTS = 3000
#: Requests are sent in this many alternating rounds (auth, then no auth) so drift hits both alike.
ROUNDS = 10
WARMUP_REQUESTS = 200
#: How long the 4096-bit load may take before the measurement gives up (about 10 ms per credential).
LOAD_TIMEOUT_S = 40.0
REQUEST_TIMEOUT_S = 10.0
#: No upstream is ever called: the models are only loaded.
UNUSED_API_BASE = "http://127.0.0.1:9/v1"
_LOADED = re.compile(r"loaded (\d+) keys and (\d+) models from redis in (\d+) ms")
_BODY = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hi"}]}).encode()


def _serving(pid: int) -> list[int]:
    """The gateway's processes: the master and its workers."""
    return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]


def _cpu_ticks(pid: int) -> int:
    """utime + stime of the master and its workers, in clock ticks (fields 14 and 15 of /proc/PID/stat)."""
    return sum(_process_ticks(p) for p in _serving(pid))


def _process_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _cpu_ns(pid: int) -> int:
    """Nanoseconds on a CPU of the master and its workers (schedstat)."""
    return sum(_process_ns(p) for p in _serving(pid))


def _process_ns(pid: int) -> int:
    """Nanoseconds the process's threads have spent on a CPU (first field of each task's schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended since the listing
            total += int((task / "schedstat").read_text().split()[0])
    return total


def _send(port: int, count: int, key: str) -> None:
    """``count`` chat requests on one keep-alive connection; each must answer 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    try:
        for _ in range(count):
            conn.request("POST", "/v1/chat/completions", body=_BODY, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
    finally:
        conn.close()


def _write_world(client, pair, bench_key: str) -> None:
    """``KEYS`` keys and ``MODELS`` models with encrypted credentials (one pipeline), and the bench key."""
    pipe = client.pipeline(transaction=False)
    endpoints = [str(uuid.uuid4()) for _ in range(MODELS)]
    for endpoint in endpoints:
        entry = model_entry(endpoint, {"p": openai_section(UNUSED_API_BASE, "m")},
                            api_key=pair.encrypt(f"sk-{uuid.uuid4().hex}"))
        pipe.set(f"model_table:{endpoint}", json.dumps(entry))
    for i in range(KEYS - 1):
        models = {f"model-{j}": grant(endpoints[(i + j) % MODELS]) for j in range(3)}
        pipe.set(f"api_key:{uuid.uuid4().hex}{uuid.uuid4().hex}", json.dumps(key_entry(models)))
    pipe.set(f"api_key:{hash_key(bench_key)}", json.dumps(key_entry({"bench": grant("bench")})))
    pipe.execute()


def _cpu_per_request(gateways: dict, key: str) -> tuple[dict[str, tuple[float, float]], list[float]]:
    """Per gateway, microseconds of CPU per request by /proc/PID/stat and by schedstat; and per round,
    what the first gateway spent more than the second (schedstat). Rounds alternate: drift hits both."""
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    per_round = REQUESTS // ROUNDS
    ticks = dict.fromkeys(gateways, 0)
    rounds: dict[str, list[float]] = {name: [] for name in gateways}
    for gw in gateways.values():
        _send(gw.port, WARMUP_REQUESTS, key)
    for _ in range(ROUNDS):
        for name, gw in gateways.items():
            pid = gw.proc.pid
            t0, n0 = _cpu_ticks(pid), _cpu_ns(pid)
            _send(gw.port, per_round, key)
            ticks[name] += _cpu_ticks(pid) - t0
            rounds[name].append((_cpu_ns(pid) - n0) / 1000 / per_round)
    count = per_round * ROUNDS
    first, second = gateways
    differences = [a - b for a, b in zip(rounds[first], rounds[second], strict=True)]
    cpu = {name: (ticks[name] * tick_us / count, sum(rounds[name]) / ROUNDS) for name in gateways}
    return cpu, differences


def test_load_time_and_auth_cpu_cost(gateway_factory, redis_server, store_env):
    pair = session_key_pair("measure", MEASURE_RSA_BITS)
    bench_key = new_raw_key()
    written = time.monotonic()
    _write_world(redis_server.client(0), pair, bench_key)
    write_s = time.monotonic() - written
    models = model_toml("bench", {"d": dummy_provider("hello")})
    authed = gateway_factory(models, env=store_env(redis_server.url(0), private_key=pair.pkcs1_pem()))
    stalls: list[float] = []

    def loaded() -> bool:
        """Also times one /health meanwhile: how long a client waits while the worker decrypts."""
        started = time.monotonic()
        assert authed.request("GET", "/health", timeout=LOAD_TIMEOUT_S).status == 200
        stalls.append(time.monotonic() - started)
        return _LOADED.search(authed.log()) is not None

    assert wait_until(loaded, LOAD_TIMEOUT_S) is not None, authed.log()
    keys, loaded_models, load_ms = (int(g) for g in _LOADED.search(authed.log()).groups())
    assert (keys, loaded_models) == (KEYS, MODELS)
    # The same model with auth off (Redis on an empty database: nothing to decrypt).
    open_gw = gateway_factory(models, settings={"authentication": {"enabled": False}},
                              env=store_env(redis_server.url(1)))
    cpu, differences = _cpu_per_request({"auth": authed, "no auth": open_gw}, bench_key)

    print(f"\n[measurement] wrote {KEYS} keys and {MODELS} models ({MEASURE_RSA_BITS}-bit RSA credentials) "
          f"to redis in {write_s:.2f} s")
    print(f"[measurement] gateway log: loaded {keys} keys and {loaded_models} models from redis "
          f"in {load_ms} ms ({load_ms * 1000 / MODELS:.0f} us per model)")
    print(f"[measurement] GET /health during the load: median {statistics.median(stalls):.2f} s, "
          f"longest {max(stalls):.2f} s ({len(stalls)} requests)")
    for name, (stat_us, sched_us) in cpu.items():
        print(f"[measurement] CPU per request, {name:7}: {stat_us:6.1f} us (/proc/PID/stat), "
              f"{sched_us:6.1f} us (schedstat)")
    (a_stat, a_sched), (b_stat, b_sched) = cpu["auth"], cpu["no auth"]
    quartiles = statistics.quantiles(differences, n=4)
    print(f"[measurement] auth adds {a_stat - b_stat:+.1f} us (/proc/PID/stat), {a_sched - b_sched:+.1f} us "
          f"(schedstat) of CPU per request over {REQUESTS} requests each; per round of {REQUESTS // ROUNDS}: "
          f"median {statistics.median(differences):+.1f} us, "
          f"quartiles {quartiles[0]:+.1f} .. {quartiles[2]:+.1f} us")
