"""A real ``clickhouse-server`` (Debian's 18.16 or any later one) on free loopback ports, for tests and bench.

Its config and users files are written into a folder of the caller's; the data folder survives
``stop()``/``start()``, so a test can take ClickHouse away and bring it back with its rows. The user
``bud`` (password ``PASSWORD``) is what gateways connect as; ``query()`` runs SQL over HTTP as it.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from upstream import free_port

CLICKHOUSE_SERVER = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"
READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0
USER = "bud"
PASSWORD = "ch-test-secret"
_POLL_S = 0.05

_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{dir}/server.log</log><errorlog>{dir}/error.log</errorlog><console>0</console></logger>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""
_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
    <{user}><password>{password}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></{user}>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


class ClickHouseServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.tcp_port = free_port()
        self.proc: subprocess.Popen | None = None
        (workdir / "config.xml").write_text(_CONFIG.format(dir=workdir, http_port=self.http_port,
                                                           tcp_port=self.tcp_port))
        (workdir / "users.xml").write_text(_USERS.format(user=USER, password=PASSWORD))

    def native_url(self, database: str) -> str:
        return f"clickhouse://{USER}:{PASSWORD}@127.0.0.1:{self.tcp_port}/{database}"

    def http_url(self, database: str) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.http_port}/{database}"

    def start(self) -> ClickHouseServer:
        with open(self.workdir / "stdout.log", "ab") as log:
            self.proc = subprocess.Popen([CLICKHOUSE_SERVER, f"--config-file={self.workdir / 'config.xml'}"],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clickhouse-server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.query("SELECT 1").strip() == "1":
                    return self
            time.sleep(_POLL_S)
        self.stop()
        raise RuntimeError(f"clickhouse-server did not answer within {READY_TIMEOUT_S} s:\n{self.log()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (ClickHouse takes seconds to shut down), or with ``kill`` SIGKILL: a crash, which
        keeps every insert it has answered (each is a part on disk)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError("clickhouse-server did not exit on SIGTERM") from None

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def query(self, sql: str, timeout: float = 5.0) -> str:
        """Run ``sql`` over HTTP; the answer's text (TabSeparated unless the SQL says otherwise)."""
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        # NOTE: 64-bit integers as JSON numbers, not strings (the default of JSON formats).
        url = f"http://127.0.0.1:{self.http_port}/?output_format_json_quote_64bit_integers=0"
        request = urllib.request.Request(url, data=sql.encode(),
                                         headers={"Authorization": f"Basic {token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout) as answer:
                return answer.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"ClickHouse refused {sql!r}: {e.read().decode(errors='replace')}") from None

    def rows(self, sql: str) -> list[dict]:
        """``sql`` (a SELECT) as a list of dicts, one per row."""
        import json

        text = self.query(sql + " FORMAT JSONEachRow")
        return [json.loads(line) for line in text.splitlines() if line]
