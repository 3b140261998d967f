"""Rate limits checked in Redis: what they add to a request, and whether gateways sharing one Redis
admit exactly the limit.

Two figures (the rate-limits issue):
1. Latency: one worker with Redis on loopback serves the mock twice, as a model without limits and as
   one whose limits never refuse (so each request runs the check script and the token settlement);
   at 500 req/s (interleaved rounds, wrk2 uncorrected) the P99 of the limited model less the
   unlimited one's. Every check must have gone to Redis: ``budgateway_rate_limit_local_checks_total``
   stays 0, and Redis counts about two script calls a request.
2. Accuracy: two gateways of two workers each share the Redis and a model limited to ``LIMIT``
   requests a minute; ``SENT`` requests at once, half to each gateway, must get exactly ``LIMIT`` 200s.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path

import redis
from load import hey_rate, wrk2_rate, wrk_max
from procs import Procs, cpu_seconds, free_port, worker_pids

__all__ = ["LIMIT", "SENT", "limit_targets", "rate_limits", "with_section"]

_RATE = 500
_OFF, _ON = "chat", "chat-limited"
#: Limits no run comes near: every request is checked and settled, none is refused.
_NEVER_REFUSE = "{ requests_per_minute = 100000000, tokens_per_minute = 1000000000 }"
#: NOTE: an output cap makes the reserved estimate differ from the mock's usage (21 tokens), so each
#: request's settlement has a delta to write; without it this body's estimate would be exactly 21.
_MAX_TOKENS = 16
_ACCURATE = "chat-200"
#: NOTE: hey sends n // c requests on each connection: SENT is a multiple of the concurrency.
LIMIT, SENT = 200, 640
_CONCURRENCY = 32
_INSTANCES, _WORKERS = 2, 2
#: The accuracy run starts only with this much of Redis's minute left, so all of it falls in one
#: sliding window (a new window admits more as the old one's weight fades: that would not be "over").
_WINDOW_LEFT_S = 15.0
_WINDOW_S = 60
_HEY_TIMEOUT_S = 120
_LOCAL = "budgateway_rate_limit_local_checks_total"
_DENIED = "budgateway_limit_denials_total"


def _model(name: str, mock_port: int, limits: str) -> str:
    """One more model on the nginx mock, as TOML to end a gateway's ``settings`` with.

    NOTE: ``Procs.gateway`` writes ``settings`` right after its [gateway] keys and before its own model
    tables, so tables written last in ``settings`` stand beside them (keys after them would not)."""
    return f"""
[models."{name}"]
routing = ["mock"]
rate_limits = {limits}
[models."{name}".providers.mock]
type = "openai"
model_name = "{name}"
api_base = "http://127.0.0.1:{mock_port}/v1"
api_key_location = "none"
"""


def _body(body: str, model: str) -> str:
    return json.dumps({**json.loads(body), "model": model, "max_tokens": _MAX_TOKENS}, separators=(",", ":"))


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples on a gateway's /metrics (0 when it has none yet)."""
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
            f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


def _limit_header(url: str, body: str) -> str | None:
    """The ``x-ratelimit-limit-requests`` header of one answer (None: no limit applied)."""
    req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5) as answer:
        return answer.headers.get("x-ratelimit-limit-requests")


def _latency(gateway, redis_url: str, mock_port: int, chat_body: str, wrk2: str | None,
             rounds: int, seconds: float) -> dict:
    gw = gateway("gw limits 1w", redis_url=redis_url,
                 settings="authentication.enabled = false\n" + _model(_ON, mock_port, _NEVER_REFUSE))
    bodies = {_OFF: _body(chat_body, _OFF), _ON: _body(chat_body, _ON)}
    headers = {model: _limit_header(gw.url, body) for model, body in bodies.items()}
    client = redis.Redis.from_url(redis_url)
    pids = sorted({gw.pid, *worker_pids(gw.pid)})
    for model, body in bodies.items():
        wrk_max(f"{gw.name} {model}", gw.url, body, 4, 2)
    runs = []
    for round_ in range(rounds):
        for model, body in bodies.items():
            cpu, scripts = cpu_seconds(pids), _script_calls(client)
            if wrk2:
                r = wrk2_rate(wrk2, f"{gw.name} {model}", gw.url, body, _RATE, seconds)
            else:
                r = hey_rate(f"{gw.name} {model}", gw.url, body, _RATE, seconds)
            rec = {**r.as_dict(), "model": model, "round": round_ + 1}
            if r.requests:
                rec["cpu_us_per_request"] = (cpu_seconds(pids) - cpu) / r.requests * 1e6
                rec["redis_scripts_per_request"] = (_script_calls(client) - scripts) / r.requests
            runs.append(rec)
            print(f"{rec['target']:<26} {_RATE} req/s  P50 {r.p50_ms:.3f}  P99 {r.p99_ms:.3f}  "
                  f"P99.9 {r.p999_ms:.3f}  errors {r.errors}  cpu {rec.get('cpu_us_per_request', 0):.0f} us/req  "
                  f"redis scripts/req {rec.get('redis_scripts_per_request', 0):.2f}", flush=True)

    def median(model: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["model"] == model and r.get(key) is not None)

    out: dict = {"rate": _RATE, "rounds": rounds, "runs": runs, "generator": runs[0]["generator"],
                 "limit_header_off": headers[_OFF], "limit_header_on": headers[_ON]}
    for label, model in (("off", _OFF), ("on", _ON)):
        for pct in ("p50", "p99", "p999"):
            out[f"{pct}_{label}_ms"] = median(model, f"{pct}_ms")
        out[f"cpu_us_{label}"] = median(model, "cpu_us_per_request")
        out[f"redis_scripts_{label}"] = median(model, "redis_scripts_per_request")
        out[f"errors_{label}"] = sum(r["errors"] for r in runs if r["model"] == model)
    out["added_p50_ms"] = out["p50_on_ms"] - out["p50_off_ms"]
    out["added_p99_ms"] = out["p99_on_ms"] - out["p99_off_ms"]
    out["added_p99_by_round_ms"] = [on["p99_ms"] - off["p99_ms"] for off, on in zip(runs[::2], runs[1::2], strict=True)]
    out["added_cpu_us"] = out["cpu_us_on"] - out["cpu_us_off"]
    out["local_checks"] = _metric(gw.port, _LOCAL)
    return out


def _hey_statuses(url: str, body: str, count: int, concurrency: int) -> subprocess.Popen:
    return subprocess.Popen(["hey", "-o", "csv", "-n", str(count), "-c", str(concurrency), "-t", "30", "-m", "POST",
                             "-T", "application/json", "-d", body, url], stdout=subprocess.PIPE, text=True)


def _accuracy(gateway, redis_url: str, mock_port: int, chat_body: str) -> dict:
    limits = f'{{ algorithm = "sliding_window", requests_per_minute = {LIMIT} }}'
    settings = ("authentication.enabled = false\nrate_limits.redis_timeout_ms = 1000\n"
                + _model(_ACCURATE, mock_port, limits))
    gws = [gateway(f"gw limits accuracy {i + 1} {_WORKERS}w", workers=_WORKERS, redis_url=redis_url, settings=settings)
           for i in range(_INSTANCES)]
    for gw in gws:  # warm the pools on the unlimited model: the limited one's window stays untouched
        wrk_max(gw.name, gw.url, _body(chat_body, _OFF), 4, 1)
    client = redis.Redis.from_url(redis_url)
    now = client.time()[0]
    left = _WINDOW_S - now % _WINDOW_S
    if left < _WINDOW_LEFT_S:
        time.sleep(left + 0.2)  # the next window: nothing is being polled, a clock is being waited out
    window = client.time()[0] // _WINDOW_S
    body = _body(chat_body, _ACCURATE)
    started = time.monotonic()
    heys = [_hey_statuses(gw.url, body, SENT // _INSTANCES, _CONCURRENCY // _INSTANCES) for gw in gws]
    statuses: dict[str, int] = {}
    for hey in heys:
        out, _ = hey.communicate(timeout=_HEY_TIMEOUT_S)
        for line in out.splitlines()[1:]:
            if line and line[0].isdigit():
                status = line.split(",")[6]
                statuses[status] = statuses.get(status, 0) + 1
    elapsed = time.monotonic() - started
    admitted = statuses.get("200", 0)
    result = {
        "limit": LIMIT, "algorithm": "sliding_window", "sent": SENT, "concurrency": _CONCURRENCY,
        "instances": _INSTANCES, "workers": _WORKERS, "seconds": elapsed, "statuses": statuses,
        "answered": sum(statuses.values()), "admitted": admitted, "refused": statuses.get("429", 0),
        "over": admitted - LIMIT,
        "one_window": client.time()[0] // _WINDOW_S == window,
        "local_checks": sum(_metric(gw.port, _LOCAL) for gw in gws),
        "denials": sum(_metric(gw.port, _DENIED) for gw in gws),
    }
    print(f"limits accuracy: {json.dumps(result)}", flush=True)
    return result


def rate_limits(procs: Procs, gateway, mock_port: int, chat_body: str, wrk2: str | None, *,
                rounds: int, seconds: float) -> dict:
    """``gateway(name, workers=, redis_url=, settings=)`` starts a gateway and returns its target
    (name, port, pid, url); ``chat_body`` asks the mock's model ``chat``."""
    if not shutil.which("redis-server") and not Path("/usr/bin/redis-server").exists():
        return {"skipped": "no redis-server"}
    redis_url = procs.redis(free_port(), [])
    result = _latency(gateway, redis_url, mock_port, chat_body, wrk2, rounds, seconds)
    result["accuracy"] = _accuracy(gateway, redis_url, mock_port, chat_body)
    print(f"limits: {json.dumps({k: v for k, v in result.items() if k not in ('runs', 'accuracy')})}", flush=True)
    return result


def limit_targets(data: dict) -> list[dict]:
    """The issue's two targets, judged from ``data["limits"]``."""
    r = data.get("limits") or {}
    if "added_p99_ms" not in r:
        return []
    a = r["accuracy"]
    return [
        {"name": f"rate limits on: added P99 <= 0.3 ms over off at {r['rate']} req/s, every check in Redis",
         "met": r["added_p99_ms"] <= 0.3 and r["local_checks"] == 0,
         "measured": f"{r['added_p99_ms']:+.3f} ms (P99 {r['p99_on_ms']:.3f} vs {r['p99_off_ms']:.3f} ms), "
                     f"{r['local_checks']:.0f} local checks"},
        {"name": f"rate limits exact across {a['instances']} gateways x {a['workers']} workers sharing Redis: "
                 "0 requests over the limit",
         "met": a["admitted"] == a["limit"] and a["local_checks"] == 0 and a["one_window"],
         "measured": f"{a['admitted']} admitted of {a['sent']} for a limit of {a['limit']} ({a['over']:+d}), "
                     f"{a['local_checks']:.0f} local checks, {'one window' if a['one_window'] else 'TWO windows'}"},
    ]


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or v != v else f"{v:.{digits}f}"


def with_section(path: Path, markdown: str, data: dict) -> str:
    """``markdown`` (the report written to ``path``) with the limits' table before its targets; rewritten."""
    r = data.get("limits") or {}
    if "added_p99_ms" not in r:
        return markdown
    a = r["accuracy"]
    lines = [f"## Rate limits in Redis on vs off, one worker at {r['rate']} req/s (median of {r['rounds']} "
             f"interleaved rounds, {r['generator']})", "",
             "| P50 off ms | P50 on ms | P99 off ms | P99 on ms | added P99 ms | P99.9 off ms | P99.9 on ms "
             "| CPU µs/request off | on | Redis scripts/request on | local checks | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|",
             f"| {_f(r['p50_off_ms'])} | {_f(r['p50_on_ms'])} | {_f(r['p99_off_ms'])} | {_f(r['p99_on_ms'])} "
             f"| {_f(r['added_p99_ms'])} | {_f(r['p999_off_ms'])} | {_f(r['p999_on_ms'])} | {_f(r['cpu_us_off'], 0)} "
             f"| {_f(r['cpu_us_on'], 0)} | {_f(r['redis_scripts_on'], 2)} | {r['local_checks']:.0f} "
             f"| {r['errors_off'] + r['errors_on']} |",
             "", f"Accuracy: {a['instances']} gateways x {a['workers']} workers, {a['sent']} requests "
             f"({a['concurrency']} at a time) for a {a['algorithm']} limit of {a['limit']} a minute:", "",
             "| admitted | refused (429) | other answers | no answer | over the limit | local checks "
             "| denials counted | seconds |",
             "|---|---|---|---|---|---|---|---|",
             f"| {a['admitted']} | {a['refused']} | {a['answered'] - a['admitted'] - a['refused']} "
             f"| {a['sent'] - a['answered']} | {a['over']} "
             f"| {a['local_checks']:.0f} | {a['denials']:.0f} | {a['seconds']:.2f} |", "", ""]
    head, sep, tail = markdown.partition("## Targets")
    text = head + "\n".join(lines) + sep + tail
    path.write_text(text)
    return text
