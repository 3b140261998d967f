"""Talking to ClickHouse: the native protocol (clickhouse-driver) or the HTTP interface, one interface.

``clickhouse://user:pass@host:9000/db`` uses the native protocol; TensorZero's
``http(s)://user:pass@host:8123/db`` form uses the HTTP interface (JSONEachRow inserts). Both run
on gevent's sockets in a worker. Neither the URL nor a driver's message is ever logged (they name the
server and may hold the password): ``describe()`` and ``failure()`` say what may be said.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

import ujson

from gateway.loop import yield_to_loop
from gateway.observe.tables import Dialect, Table

__all__ = ["ClickHouseError", "connect", "failure"]

#: Rows encoded between two yields to the hub, so a batch never holds it for long. A native block also
#: costs about a millisecond of clickhouse-driver's column set-up: 20-row blocks take 91 µs of CPU a row,
#: 50-row ones 50 µs, but the longer stalls of the larger ones cost more in P99 (make bench: 16-26 ms
#: against 24-56 ms with everything on at 500 req/s), so the blocks stay small.
_SLICE = 20
_NATIVE_BLOCK = 20
_CONNECT_TIMEOUT_S = 2.0
_TIMEOUT_S = 10.0
_IDENT = re.compile(r"^[A-Za-z0-9_]+$")


class ClickHouseError(Exception):
    """ClickHouse could not be reached or refused a statement; the message is safe to log."""


def failure(error: BaseException) -> str:
    """What may be logged of a failure: its kind and, for a server's refusal, its code."""
    code = getattr(error, "code", None)
    return f"{type(error).__name__}" + (f" (code {code})" if isinstance(code, int) else "")


class _URL:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.user = unquote(parts.username) if parts.username else "default"
        self.password = unquote(parts.password) if parts.password else ""
        default_port = {"clickhouse": 9000, "http": 8123, "https": 8443}[self.scheme]
        self.port = parts.port or default_port
        self.database = parts.path.strip("/") or "default"
        if not _IDENT.match(self.database):
            raise ValueError("the database name may hold only letters, digits and _")


class _Client:
    def __init__(self, url: _URL) -> None:
        self.database = url.database
        # NOTE: no host or port: a log names the protocol and the database, never an internal address.
        self._where = f"database {url.database} ({'native protocol' if url.scheme == 'clickhouse' else url.scheme})"

    def describe(self) -> str:
        return self._where

    def version(self) -> tuple[int, ...]:
        text = self.query("SELECT version()")[0][0]
        return tuple(int(p) for p in re.findall(r"\d+", text)[:3])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def insert(self, table: Table, dialect: Dialect, rows: Sequence[dict]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Native(_Client):
    def __init__(self, url: _URL) -> None:
        super().__init__(url)
        from clickhouse_driver import Client

        self._client = Client(
            url.host, port=url.port, user=url.user, password=url.password, database="default",
            connect_timeout=_CONNECT_TIMEOUT_S, send_receive_timeout=_TIMEOUT_S, sync_request_timeout=_TIMEOUT_S,
            # NOTE: blocks of _NATIVE_BLOCK rows: each is encoded, then sent; the row iterator yields between.
            settings={"insert_block_size": _NATIVE_BLOCK},
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        return self._run(sql)

    def insert(self, table: Table, dialect: Dialect, rows: Sequence[dict]) -> None:
        columns = table.columns
        names = ", ".join(f"`{c.name}`" for c in columns)

        def values() -> Iterator[tuple]:
            encode = dialect.encoder(table, native=True)
            for i, row in enumerate(rows):
                if i and not i % _NATIVE_BLOCK:
                    yield_to_loop()
                yield encode(row)

        self._run(f"INSERT INTO `{self.database}`.`{table.name}` ({names}) VALUES", values())

    def _run(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        from clickhouse_driver import errors

        try:
            return self._client.execute(sql, params) if params is not None else self._client.execute(sql)
        except (errors.Error, OSError, EOFError) as e:
            self._client.disconnect()
            raise ClickHouseError(failure(e)) from None

    def close(self) -> None:
        self._client.disconnect()


class _HTTP(_Client):
    def __init__(self, url: _URL) -> None:
        super().__init__(url)
        import urllib3

        cls = urllib3.HTTPSConnectionPool if url.scheme == "https" else urllib3.HTTPConnectionPool
        self._pool = cls(url.host, url.port, maxsize=2, retries=False,
                         timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT_S, read=_TIMEOUT_S))
        token = base64.b64encode(f"{url.user}:{url.password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        text = self._post(sql.encode(), {})
        return [tuple(line.split("\t")) for line in text.splitlines() if line]

    def insert(self, table: Table, dialect: Dialect, rows: Sequence[dict]) -> None:
        columns = table.columns
        names = ", ".join(f"`{c.name}`" for c in columns)
        encode = dialect.encoder(table, native=False)
        lines = []
        for i, row in enumerate(rows):
            if i and not i % _SLICE:
                yield_to_loop()
            lines.append(ujson.dumps(encode(row), ensure_ascii=False))
        query = f"INSERT INTO `{self.database}`.`{table.name}` ({names}) FORMAT JSONEachRow"
        self._post("\n".join(lines).encode(), {"query": query})

    def _post(self, body: bytes, fields: dict[str, str]) -> str:
        import urllib3

        path = "/?" + urlencode(fields) if fields else "/"
        try:
            answer = self._pool.urlopen("POST", path, body=body, headers=self._headers)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ClickHouseError(failure(e)) from None
        if answer.status != 200:
            code = re.search(rb"Code: (\d+)", answer.data or b"")
            raise ClickHouseError(f"HTTP {answer.status}" + (f" (code {int(code.group(1))})" if code else ""))
        return answer.data.decode("utf-8", "replace")

    def close(self) -> None:
        self._pool.close()


def connect(url: str) -> _Client:
    """A client for ``url`` (no connection is made yet); ``ValueError`` if the URL cannot be one."""
    parsed = _URL(url)
    return _Native(parsed) if parsed.scheme == "clickhouse" else _HTTP(parsed)
