"""Fixtures: a real redis-server on a free loopback port (budapp's Redis), and the gateway pointed at it.

redis-server runs with keyspace notifications on (``KEA``: the gateway's live sync listens to them) and
without persistence. It is started, polled with PING until it answers, and stopped with SIGTERM at
teardown, failing the test if it does not exit in time. ``stop()`` then ``start()`` reuses the port, so
a gateway can watch its Redis go away and come back (empty: nothing is persisted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import redis
from budapp import BudApp, KeyPair, session_key_pair
from redis.backoff import NoBackoff
from redis.retry import Retry
from upstream import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/sbin/redis-server"
REDIS_READY_TIMEOUT_S = 10.0  # from spawn until PING answers
REDIS_EXIT_TIMEOUT_S = 10.0  # from SIGTERM until the process is gone
REDIS_CLIENT_TIMEOUT_S = 5.0  # the test's own redis client: connect and per-command timeout
SDK_TIMEOUT_S = 15.0  # the openai SDK's per-request timeout
REFUSAL_TIMEOUT_S = 20.0  # a gateway that must refuse to start has exited within this
REPO_ROOT = Path(__file__).resolve().parents[3]
_PING_TIMEOUT_S = 0.5
_POLL_S = 0.02

#: The environment variables the gateway reads for Redis and RSA; unset ones are passed empty so none leaks
#: in from the environment pytest runs in.
GATEWAY_STORE_ENV = ("TENSORZERO_REDIS_URL", "TENSORZERO_RSA_PRIVATE_KEY", "TENSORZERO_RSA_PRIVATE_KEY_PATH",
                     "TENSORZERO_RSA_PRIVATE_KEY_PASSWORD")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "measurement: prints costs to read; asserts only that it ran")


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1:``port``, with ``password`` required when one is given."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        self.workdir = workdir
        self.log_path = workdir / "redis.log"
        self.proc: subprocess.Popen | None = None
        self._clients: list[redis.Redis] = []

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no",
               "--notify-keyspace-events", "KEA", "--save", "", "--appendonly", "no",
               "--dir", str(self.workdir)]
        if self.password:
            cmd += ["--requirepass", self.password]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        probe = redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                            socket_timeout=_PING_TIMEOUT_S, socket_connect_timeout=_PING_TIMEOUT_S,
                            retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + REDIS_READY_TIMEOUT_S
        try:
            while True:
                if self.proc.poll() is not None:
                    pytest.fail(f"redis-server exited with {self.proc.returncode}:\n{self.log()}")
                with contextlib.suppress(redis.RedisError):
                    if probe.ping():
                        return self
                if time.monotonic() >= deadline:
                    self._kill()
                    pytest.fail(f"no PONG from redis-server in {REDIS_READY_TIMEOUT_S} s:\n{self.log()}")
                time.sleep(_POLL_S)
        finally:
            probe.close()

    def stop(self) -> None:
        """SIGTERM, then fail (after a SIGKILL) if the process does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(REDIS_EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._kill()
            pytest.fail(f"redis-server did not exit {REDIS_EXIT_TIMEOUT_S} s after SIGTERM:\n{self.log()}")

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()

    def client(self, db: int = 0) -> redis.Redis:
        """A client of database ``db``; a connection left stale by a restart is retried once, at once."""
        client = redis.Redis(host="127.0.0.1", port=self.port, db=db, password=self.password,
                             socket_timeout=REDIS_CLIENT_TIMEOUT_S,
                             socket_connect_timeout=REDIS_CLIENT_TIMEOUT_S, retry=Retry(NoBackoff(), 1))
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def _servers(mkdir: Callable[[], Path]) -> Iterator[Callable[..., RedisServer]]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("these tests run a real redis-server: apt-get install redis-server (or make test-deps)")
    started: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        server = RedisServer(mkdir(), password)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        failures = []
        for server in started:
            try:
                server.close()
            except pytest.fail.Exception as e:
                failures.append(str(e))
        if failures:
            pytest.fail("\n".join(failures))


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory):
    """``start(password=None)``: a redis-server of the test's own (to stop and restart), stopped after it."""
    with _servers(lambda: tmp_path_factory.mktemp("redis")) as start:
        yield start


@pytest.fixture(scope="module")
def module_redis_factory(tmp_path_factory: pytest.TempPathFactory):
    """As ``redis_factory``, for a server a module's tests share."""
    with _servers(lambda: tmp_path_factory.mktemp("redis")) as start:
        yield start


@pytest.fixture(scope="module")
def redis_server(module_redis_factory) -> RedisServer:
    """One redis-server for a module's tests (each gateway on its own database where they must not mix)."""
    return module_redis_factory()


@pytest.fixture(scope="session")
def key_pair() -> KeyPair:
    """The RSA key pair budapp encrypts with and the gateways decrypt with."""
    return session_key_pair("main")


@pytest.fixture(scope="session")
def other_key_pair() -> KeyPair:
    """A key pair the gateways do not have: what it encrypts cannot be decrypted."""
    return session_key_pair("other")


def _store_env(redis_url: str = "", *, private_key: str = "", private_key_path: str = "",
               password: str = "") -> dict[str, str]:
    values = (redis_url, private_key, private_key_path, password)
    return dict(zip(GATEWAY_STORE_ENV, values, strict=True))


@pytest.fixture(scope="session")
def store_env() -> Callable[..., dict[str, str]]:
    """``env(redis_url="", *, private_key="", private_key_path="", password="")``: the gateway's Redis and
    RSA variables (``private_key`` is the inline PEM); the empty ones are unset as far as it is concerned."""
    return _store_env


@pytest.fixture(scope="module")
def budapp_factory() -> Callable[..., BudApp]:
    """``writer(server, db=0, key_pair=None)``: a ``BudApp`` writing to one database of ``server``."""

    def make(server: RedisServer, db: int = 0, key_pair: KeyPair | None = None) -> BudApp:
        return BudApp(server.client(db), key_pair)

    return make


@pytest.fixture(scope="module")
def sdk() -> Iterator[Callable[..., openai.OpenAI]]:
    """``client(gateway, api_key)``: the official SDK sending ``api_key`` to ``gateway`` (no retries)."""
    clients: list[openai.OpenAI] = []

    def make(gateway, api_key: str) -> openai.OpenAI:
        # trust_env=False: no proxy from the environment may sit between the tests and the loopback gateway.
        client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=api_key, max_retries=0,
                               timeout=SDK_TIMEOUT_S, http_client=openai.DefaultHttpxClient(trust_env=False))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def gateway_run(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """``run(config_text, env)``: ``python -m gateway`` serving ``config_text``, expected to exit by itself
    (a refusal to start); raises ``TimeoutExpired`` (killing it) if it is still running after the timeout."""

    def run(config_text: str, env: dict[str, str]) -> subprocess.CompletedProcess:
        path = tmp_path / "gateway.toml"
        path.write_text(config_text)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        full_env.update(env)
        cmd = [sys.executable, "-m", "gateway", "--config-file", str(path),
               "--bind", f"127.0.0.1:{free_port()}"]
        return subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
                              timeout=REFUSAL_TIMEOUT_S)

    return run
