"""The process model: workers replaced when they die or stop beating, the master's signals, reloads under load.

Load comes from threads that each send chat completions back to back on a keep-alive connection and
count what failed; a test that demands no failure means none, however the answer was cut.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time

import pytest
from configs import dummy_provider, model_toml, openai_provider
from rawhttp import StreamReader

MESSAGES = [{"role": "user", "content": "hi"}]
LOAD_THREADS = 4
# Bounds on a busy two-core machine.
REPLACED_WITHIN_S = 15.0
EXIT_WITHIN_S = 10.0
POLL_S = 0.05
STREAM_MODEL = "stream-delay-200-15"  # 3 s of events from the scripted upstream


def _models(extra: str = "") -> str:
    return model_toml("dummy", {"d": dummy_provider("hello")}) + extra


class _Load:
    """Threads sending requests back to back until stopped; what succeeded and what failed, by model."""

    def __init__(self, port: int, model: str = "dummy") -> None:
        self.port = port
        self.model = model
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(LOAD_THREADS)]

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _run(self) -> None:
        conn = None
        body = json.dumps({"model": self.model, "messages": MESSAGES})
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                outcome = None if resp.status == 200 else f"{resp.status} {data[:200]!r}"
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                outcome = repr(e)
                conn.close()
                conn = None
            with self._lock:
                if outcome is None:
                    self.ok += 1
                else:
                    self.failures.append(outcome)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < count and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert self.ok - start >= count, f"the load made {self.ok - start} requests; failures: {self.failures[:5]}"


def _workers(gw) -> set[int]:
    with open(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _wait_workers(gw, count: int, *, exclude: set[int] = frozenset()) -> set[int]:
    deadline = time.monotonic() + REPLACED_WITHIN_S
    while time.monotonic() < deadline:
        pids = _workers(gw) - exclude
        if len(pids) >= count and all(_serving(p) for p in pids):
            return pids
        time.sleep(POLL_S)
    pytest.fail(f"not {count} workers after {REPLACED_WITHIN_S} s: {_workers(gw)}\n{gw.log()[-3000:]}")


def _serving(pid: int) -> bool:
    """The process is alive and listening (its server has started)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/net/tcp") as f:
            listening = {line.split()[9] for line in f.read().splitlines()[1:] if line.split()[3] == "0A"}
        inodes = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        return bool(listening & inodes)
    except (FileNotFoundError, ProcessLookupError):
        return False


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _chat(gw, model: str = "dummy") -> int:
    return gw.request("POST", "/v1/chat/completions", {"model": model, "messages": MESSAGES}).status


class TestWorkers:
    def test_a_killed_worker_is_replaced_while_the_other_serves(self, gateway_factory):
        gw = gateway_factory(_models(), "--workers", "2")
        first = _wait_workers(gw, 2)
        victim = min(first)
        with _Load(gw.port) as load:
            load.wait_for(50)
            os.kill(victim, signal.SIGKILL)
            replaced = _wait_workers(gw, 2, exclude={victim})
            load.wait_for(100)
        assert victim not in replaced
        # Only requests in flight on the killed worker can fail: at most one per load connection.
        assert len(load.failures) <= LOAD_THREADS, load.failures
        print(f"\nSIGKILL of a worker under load: {load.ok} answered, {len(load.failures)} failed")

    def test_a_worker_that_dies_after_boot_does_not_stop_the_server(self, gateway_factory):
        gw = gateway_factory(_models())
        (worker,) = _wait_workers(gw, 1)
        os.kill(worker, signal.SIGKILL)
        _wait_workers(gw, 1, exclude={worker})
        assert _chat(gw) == 200
        assert gw.proc.poll() is None

    def test_a_worker_whose_hub_is_blocked_is_replaced(self, gateway_factory):
        gw = gateway_factory(_models(model_toml("blocker", {"d": dummy_provider("block-20000")})),
                             settings={"worker_timeout_s": 2})
        (worker,) = _wait_workers(gw, 1)
        try:
            gw.request("POST", "/v1/chat/completions", {"model": "blocker", "messages": MESSAGES}, timeout=1)
        except OSError:
            pass
        replaced = _wait_workers(gw, 1, exclude={worker})
        assert worker not in replaced
        assert _chat(gw) == 200
        assert "WORKER TIMEOUT" in gw.log()

    def test_ttin_and_ttou_add_and_remove_a_worker(self, gateway_factory):
        gw = gateway_factory(_models())
        _wait_workers(gw, 1)
        gw.signal(signal.SIGTTIN)
        _wait_workers(gw, 2)
        gw.signal(signal.SIGTTOU)
        deadline = time.monotonic() + REPLACED_WITHIN_S
        while len(_workers(gw)) != 1 and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert len(_workers(gw)) == 1, f"workers {_workers(gw)} after SIGTTOU:\n{gw.log()[-3000:]}"
        _wait_workers(gw, 1)  # the one left serves (it may be the new one, still booting)
        assert _chat(gw) == 200

    def test_a_dead_workers_counts_stay_in_the_metrics(self, gateway_factory):
        gw = gateway_factory(_models())
        (worker,) = _wait_workers(gw, 1)
        for _ in range(3):
            assert _chat(gw) == 200
        os.kill(worker, signal.SIGKILL)
        _wait_workers(gw, 1, exclude={worker})
        assert _chat(gw) == 200
        assert gw.metric_total("budgateway_requests_total", model="dummy", status="200") == 4


class TestMaster:
    def test_workers_exit_when_the_master_is_killed(self, gateway_factory):
        gw = gateway_factory(_models(), "--workers", "2")
        workers = _wait_workers(gw, 2)
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        deadline = time.monotonic() + EXIT_WITHIN_S
        while not all(_gone(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert [p for p in workers if not _gone(p)] == []

    def test_a_second_instance_on_the_port_fails_to_start(self, gateway_factory, gateway_cli):
        gw = gateway_factory(_models())
        result = gateway_cli(_models(), "--bind", f"127.0.0.1:{gw.port}")
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"cannot listen on 127.0.0.1:{gw.port}" in result.stderr
        assert _chat(gw) == 200

    def test_sigterm_lets_open_streams_finish_on_every_worker(self, gateway_factory, upstream):
        extra = model_toml("stream", {"p": openai_provider(STREAM_MODEL, upstream.url)})
        gw = gateway_factory(_models(extra), "--workers", "2")
        _wait_workers(gw, 2)
        streams = [StreamReader(gw.port, "stream") for _ in range(4)]
        for s in streams:
            assert s.next_event() is not None
        gw.signal(signal.SIGTERM)
        for s in streams:
            assert s.read_all()[-1] == "[DONE]"
        assert gw.wait_exit() == 0

    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_a_signal_to_the_whole_group_still_drains(self, gateway_factory, upstream, sig):
        # Ctrl-C, or systemd stopping the unit, signals the workers too; the master then signals them again.
        extra = model_toml("stream", {"p": openai_provider(STREAM_MODEL, upstream.url)})
        gw = gateway_factory(_models(extra), "--workers", "2")
        _wait_workers(gw, 2)
        stream = StreamReader(gw.port, "stream")
        assert stream.next_event() is not None
        os.killpg(gw.proc.pid, sig)
        assert stream.read_all()[-1] == "[DONE]", "the drain was cut short"
        assert gw.wait_exit() == 0

    def test_a_second_sigint_stops_at_once(self, gateway_factory, upstream):
        extra = model_toml("stream", {"p": openai_provider("stream-delay-500-60", upstream.url)})
        gw = gateway_factory(_models(extra), settings={"shutdown_timeout_s": 60})
        stream = StreamReader(gw.port, "stream")
        assert stream.next_event() is not None
        gw.signal(signal.SIGINT)
        time.sleep(1.0)
        assert gw.proc.poll() is None, "the first SIGINT drains: the stream is still open"
        signalled = time.monotonic()
        gw.signal(signal.SIGINT)
        assert gw.wait_exit(EXIT_WITHIN_S) is not None
        assert time.monotonic() - signalled < EXIT_WITHIN_S
        stream.close()


class TestReload:
    def test_sighup_with_a_valid_config_serves_it_and_fails_no_request(self, gateway_factory):
        gw = gateway_factory(_models(), "--workers", "2")
        old = _wait_workers(gw, 2)
        assert _chat(gw, "added") == 404
        text = gw.config_path.read_text()
        gw.config_path.write_text(text + model_toml("added", {"d": dummy_provider("hello")}))
        with _Load(gw.port) as load:
            load.wait_for(50)
            gw.signal(signal.SIGHUP)
            _wait_workers(gw, 2, exclude=old)
            deadline = time.monotonic() + REPLACED_WITHIN_S
            while any(_serving(p) for p in old) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            load.wait_for(50)
        assert load.failures == [], load.failures[:5]
        assert _chat(gw, "added") == 200
        print(f"\nSIGHUP under load: {load.ok} answered, 0 failed")

    def test_sighup_with_a_config_that_is_not_utf8_keeps_the_old_one_serving(self, gateway_factory):
        gw = gateway_factory(_models())
        (worker,) = _wait_workers(gw, 1)
        gw.config_path.write_bytes(gw.config_path.read_bytes() + b"\n# \xff\xfe\n")
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "keeps serving" not in gw.log() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert "not UTF-8" in gw.log()
        assert gw.proc.poll() is None and _workers(gw) == {worker}
        assert _chat(gw) == 200

    def test_sighup_with_an_invalid_config_keeps_the_old_one_serving(self, gateway_factory):
        gw = gateway_factory(_models())
        (worker,) = _wait_workers(gw, 1)
        gw.config_path.write_text(gw.config_path.read_text() + '\n[models."broken"]\nrouting = ["nowhere"]\n')
        with _Load(gw.port) as load:
            load.wait_for(20)
            gw.signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "keeps serving" not in gw.log() and time.monotonic() < deadline:
                time.sleep(POLL_S)
            load.wait_for(20)
        assert load.failures == []
        assert "the config is invalid" in gw.log() and 'provider "nowhere"' in gw.log()
        assert _workers(gw) == {worker}, "an invalid config must not even restart the workers"
        assert _chat(gw) == 200
