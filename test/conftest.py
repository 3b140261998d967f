"""Fixtures: the scripted upstream, and the gateway started as a user starts it, on free loopback ports."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from configs import toml_value
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families
from upstream import Upstream, free_port
from upstream_anthropic import AnthropicUpstream
from upstream_azure import AzureUpstream
from upstream_raw import RawUpstream

from providers.http import CLIENT_KINDS

REPO_ROOT = Path(__file__).resolve().parent.parent

# Named timeouts (seconds). Generous: the suite must pass on a busy two-core machine.
GATEWAY_READY_TIMEOUT_S = 20.0  # from spawn until GET /health answers 200
GATEWAY_EXIT_TIMEOUT_S = 15.0  # from SIGTERM until the process is gone (test configs drain for 5 s at most)
GATEWAY_CLI_TIMEOUT_S = 30.0  # a one-shot run such as --check-config
TEST_SHUTDOWN_TIMEOUT_S = 5  # shutdown_timeout_s written into every test config unless a test overrides it
CLIENT_TIMEOUT_S = 15.0  # the openai SDK's and http.client's per-request timeout
_READY_POLL_S = 0.05
_LOG_TAIL_CHARS = 8000

_RUNNING = pytest.StashKey[list]()

# The fuzz suites: the same bounded set of cases on every run (CI must not pass one day and fail the
# next), no example database left behind, no per-case deadline on a busy machine.
settings.register_profile(
    "budgateway", derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
# ``BUDGATEWAY_FUZZ=explore`` runs new random cases, ten times as many, for a session spent hunting.
settings.register_profile("explore", parent=settings.get_profile("budgateway"), derandomize=False)
settings.load_profile(os.environ.get("BUDGATEWAY_FUZZ", "budgateway"))


class RawResponse:
    """A response read whole over http.client: status, headers and body bytes."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> object:
        return json.loads(self.body)

    def sse_data(self) -> list[str]:
        """The ``data:`` payloads of an event-stream body, in order."""
        return [line[5:].strip() for line in self.body.decode().split("\n") if line.startswith("data:")]

    def __repr__(self) -> str:
        return f"RawResponse({self.status}, {self.body[:300]!r})"


class Gateway:
    """One gateway process: ``python -m gateway --config-file PATH --bind 127.0.0.1:PORT ...``."""

    def __init__(self, workdir: Path, config_text: str, args: tuple[str, ...], env: dict[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "gateway.toml"
        self.log_path = workdir / "gateway.log"
        self.config_path.write_text(config_text)
        self._clients: list = []
        cmd = [sys.executable, "-m", "gateway", "--config-file", str(self.config_path),
               "--bind", f"127.0.0.1:{self.port}", *args]
        with open(self.log_path, "wb") as log:
            # A session of its own: a Ctrl-C in the terminal reaches pytest, not the gateway.
            self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = GATEWAY_READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode} before it was ready:\n{self.log()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/health", timeout=1.0).status == 200:
                    return
            time.sleep(_READY_POLL_S)
        pytest.fail(f"gateway did not answer GET /health with 200 within {timeout} s:\n{self.log()}")

    def openai(self, prefix: str = "/v1", timeout: float = CLIENT_TIMEOUT_S, **kwargs):
        """An official SDK client pointed at this gateway; closed when the gateway stops."""
        # trust_env=False: no proxy from the environment may sit between the tests and the loopback gateway.
        http_client = openai.DefaultHttpxClient(trust_env=False)
        client = openai.OpenAI(base_url=self.base_url + prefix, api_key="test-key", max_retries=0,
                               timeout=timeout, http_client=http_client, **kwargs)
        self._clients.append(client)
        return client

    def request(self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None,
                timeout: float = CLIENT_TIMEOUT_S) -> RawResponse:
        """One request on a new connection; ``body`` is sent as JSON unless it is already bytes."""
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        hdrs.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            return RawResponse(resp.status, resp.headers, resp.read())
        finally:
            conn.close()

    def metric_total(self, name: str, **labels: str) -> float:
        """GET /metrics and sum the samples called ``name`` whose labels include ``labels``."""
        resp = self.request("GET", "/metrics")
        assert resp.status == 200, resp
        total = 0.0
        for family in text_string_to_metric_families(resp.body.decode()):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    total += sample.value
        return total

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = GATEWAY_EXIT_TIMEOUT_S) -> int | None:
        """The exit code, or None if the process is still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM, then fail (after a SIGKILL of the process group) if it does not exit in time."""
        for client in self._clients:
            client.close()
        if self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        if self.wait_exit() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"gateway did not exit within {GATEWAY_EXIT_TIMEOUT_S} s of SIGTERM:\n{self.log()}")


def render_config(models: str, settings: dict[str, object] | None = None) -> str:
    """A config file: a ``[gateway]`` table with test defaults and ``settings``, then the ``models`` TOML."""
    table = {"shutdown_timeout_s": TEST_SHUTDOWN_TIMEOUT_S, **(settings or {})}
    lines = ["[gateway]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n\n" + models


def gateway_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without OPENAI_* (no real key can leak upstream), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def _gateways(config: pytest.Config, mkdir: Callable[[], Path]) -> Iterator[Callable[..., Gateway]]:
    running: list[Gateway] = config.stash.setdefault(_RUNNING, [])
    started: list[Gateway] = []

    def start(models: str, *args: str, settings: dict[str, object] | None = None,
              env: dict[str, str] | None = None) -> Gateway:
        gw = Gateway(mkdir(), render_config(models, settings), args, gateway_env(env))
        started.append(gw)
        running.append(gw)
        gw.wait_ready()
        return gw

    try:
        yield start
    finally:
        failures = []
        for gw in started:
            try:
                gw.stop()
            except pytest.fail.Exception as e:
                failures.append(str(e))
            finally:
                running.remove(gw)
        if failures:
            pytest.fail("\n".join(failures))


@pytest.fixture
def gateway_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``start(models_toml, *cli_args, settings=None, env=None)``: a gateway stopped after the test."""
    with _gateways(request.config, lambda: tmp_path_factory.mktemp("gw")) as start:
        yield start


@pytest.fixture(scope="module")
def module_gateway_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """As ``gateway_factory``, for one gateway shared by a module's tests (it costs a process start)."""
    with _gateways(request.config, lambda: tmp_path_factory.mktemp("gw")) as start:
        yield start


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream_records(request: pytest.FixtureRequest) -> None:
    """Each test that uses the upstream sees only its own requests."""
    if "upstream" in request.fixturenames:
        request.getfixturevalue("upstream").clear()


@pytest.fixture(scope="session")
def azure_upstream() -> Iterator[AzureUpstream]:
    """An Azure OpenAI resource on loopback: deployment paths, ``api-version`` and ``api-key`` checked."""
    server = AzureUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def anthropic_upstream() -> Iterator[AnthropicUpstream]:
    """Anthropic's Messages API on loopback: ``x-api-key`` and ``anthropic-version`` checked."""
    server = AnthropicUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def raw_upstream() -> Iterator[RawUpstream]:
    """An upstream whose answers, per model name, are bytes a test scripts (faulty, oversized, ill-typed)."""
    server = RawUpstream().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_provider_upstream_records(request: pytest.FixtureRequest) -> None:
    """As ``_fresh_upstream_records``, for the Azure, Anthropic and raw upstreams."""
    for name in ("azure_upstream", "anthropic_upstream", "raw_upstream"):
        if name in request.fixturenames:
            request.getfixturevalue(name).clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and report.when in ("setup", "call"):
        for gw in item.config.stash.get(_RUNNING, []):
            report.sections.append((f"gateway {gw.base_url} log (tail)", gw.log()[-_LOG_TAIL_CHARS:]))
    return report


@pytest.fixture
def gateway_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run(models_toml, *cli_args)``: one ``python -m gateway --config-file PATH ...`` run to completion."""

    def run(models: str, *args: str) -> subprocess.CompletedProcess:
        path = tmp_path / "gateway.toml"
        path.write_text(render_config(models))
        return subprocess.run([sys.executable, "-m", "gateway", *args, "--config-file", str(path)],
                              cwd=REPO_ROOT, env=gateway_env(), capture_output=True, text=True,
                              timeout=GATEWAY_CLI_TIMEOUT_S)

    return run


@pytest.fixture(scope="module", params=CLIENT_KINDS)
def upstream_client(request: pytest.FixtureRequest) -> str:
    """Each upstream HTTP library the gateway can use: the modules that talk to upstreams run once per library."""
    return request.param
