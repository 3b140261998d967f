"""Fixtures: a real clickhouse-server on free loopback ports, a database of its own per test, and waiting for rows.

One server serves the session (a start costs about a second); tests that stop and restart ClickHouse
get a server of their own. Each test writes into a database named after it, so tests never see each
other's rows.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from clickhouse_server import ClickHouseServer

ROWS_TIMEOUT_S = 20.0  # rows are written within flush_interval_ms; generous for a busy machine
_POLL_S = 0.1


@pytest.fixture(scope="session")
def clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    yield server
    server.stop()


@pytest.fixture
def own_clickhouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """A server for one test alone, which it may stop and start."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:40]
    return f"t_{name}_{uuid.uuid4().hex[:6]}"


def wait_for(predicate: Callable[[], object], timeout: float = ROWS_TIMEOUT_S, what: str = "rows") -> object:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except RuntimeError:  # the table does not exist yet
            last = None
        if last:
            return last
        time.sleep(_POLL_S)
    pytest.fail(f"no {what} within {timeout} s (last: {last!r})")


def wait_rows(server: ClickHouseServer, sql: str, count: int, timeout: float = ROWS_TIMEOUT_S) -> list[dict]:
    """Poll ``sql`` until it returns ``count`` rows (and fail if it returns more)."""
    rows: list[dict] = []

    def enough() -> bool:
        nonlocal rows
        rows = server.rows(sql)
        assert len(rows) <= count, f"more rows than expected: {len(rows)} > {count}"
        return len(rows) == count

    wait_for(enough, timeout, f"{count} rows for {sql!r} (got {len(rows)})")
    return rows
