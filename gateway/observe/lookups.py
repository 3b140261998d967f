"""Reads of ClickHouse on the request path (``/feedback`` targets, ``/batch_inference`` state), on
clients of their own: a clickhouse-driver client runs one query at a time, and the writer's may be in
the middle of an insert."""

from __future__ import annotations

import re
from typing import Any

import gevent.lock

from gateway.observe.clickhouse import ClickHouseError, connect

__all__ = ["Lookups"]

#: ClickHouse clients a worker's requests may query on at once.
_READERS = 4
#: A table or database missing (codes 60 and 81) is a target not written yet: the writer creates
#: them when it first inserts.
_NOT_YET = re.compile(r"\(code (60|81)\)")


class Lookups:
    """A few clients (``_READERS``) shared by a worker's requests."""

    def __init__(self, url: str) -> None:
        self._url = url
        first = connect(url)  # no connection yet: each client connects on its first query
        self.database = first.database
        self._idle: list[Any] = [first]
        self._slots = gevent.lock.BoundedSemaphore(_READERS)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql``; ``ClickHouseError`` when ClickHouse fails (a missing table is no rows)."""
        with self._slots:
            client = self._idle.pop() if self._idle else connect(self._url)
            try:
                rows = client.query(sql)
            except ClickHouseError as e:
                self._idle.append(client)  # it reconnects on its next query
                if _NOT_YET.search(str(e)):
                    return []
                raise
            except BaseException:
                # A greenlet killed mid-query leaves the connection in an unknown state: not reused.
                client.close()
                raise
            self._idle.append(client)
            return rows
