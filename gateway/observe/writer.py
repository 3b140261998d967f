"""The analytics writer: a bounded in-memory queue per worker and a greenlet that inserts it in batches.

A request only appends its rows to the queue (no I/O). Every ``flush_interval_ms``, or as soon as
``batch_rows`` are waiting, the writer greenlet brings the schema up to date (once), replays the spool,
then inserts the queue a batch at a time. When ClickHouse is down, slow, or the queue is full, rows go
to the spool instead, and come back from it in order once ClickHouse answers. Rows are only dropped
(and counted) when there is no spool and the queue is full, or when the spool itself is full.
On shutdown the queue is inserted if ClickHouse answers at once, and spooled otherwise.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

import gevent
import gevent.event

from gateway.observe.clickhouse import ClickHouseError
from gateway.observe.migrations import migrate
from gateway.observe.spool import PartlySent, Row, Spool
from gateway.observe.tables import TABLES as GATEWAY_TABLES
from gateway.observe.tables import Dialect
from gateway.observe.tensorzero_tables import TENSORZERO_TABLES

__all__ = ["AnalyticsWriter"]

log = logging.getLogger(__name__)

#: Every table a row may be queued for, by name.
TABLES = {**GATEWAY_TABLES, **TENSORZERO_TABLES}

#: Once ClickHouse has failed, how long before it is tried again (doubling up to the maximum).
_RETRY_S = 1.0
_RETRY_MAX_S = 10.0


class AnalyticsWriter:
    """``count(table, result, n)`` counts rows written, spooled or dropped; ``depth(n)`` shows the queue."""

    def __init__(self, client, spool: Spool | None, *, batch_rows: int, flush_interval_s: float, queue_rows: int,
                 count: Callable[[str, str, int], None], depth: Callable[[int], None]) -> None:
        self._client = client
        self._spool = spool
        self._batch = batch_rows
        self._interval = flush_interval_s
        self._max = queue_rows
        self._count = count
        self._depth = depth
        self._queue: deque[Row] = deque()
        self._wake = gevent.event.Event()
        self._dialect: Dialect | None = None
        self._retry_at = 0.0
        self._retry_s = _RETRY_S
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False
        #: "ok" once ClickHouse has taken rows (or while untried), "error" while it fails; None: no ClickHouse.
        self.status: str | None = "ok" if client is not None else None

    def put(self, table: str, row: dict) -> None:
        queue = self._queue
        if len(queue) >= self._max:
            self._overflow([(table, row)])
            return
        queue.append((table, row))
        if len(queue) >= self._batch:
            self._wake.set()

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopping:
                break
            try:
                self.flush()
            except Exception:
                log.exception("the analytics writer failed; it goes on")

    def flush(self) -> None:
        """Send what can be sent now: the spool first, then the queue."""
        self._depth(len(self._queue))
        if not self._queue and (self._spool is None or not self._spool.pending()):
            return
        if self._client is None:
            self._to_spool(self._take(len(self._queue)))
            return
        if time.monotonic() < self._retry_at or not self._ready():
            self._away()
            return
        try:
            if self._spool is not None and self._spool.pending():
                written = self._spool.replay(self._replay_batch, self._batch)
                if written:
                    log.info("analytics: %d spooled rows written to ClickHouse", written)
            while self._queue:
                batch = self._take(self._batch)
                try:
                    self._insert_rows(batch)
                except BaseException as e:  # a ClickHouseError, or the shutdown's timeout
                    # Only the rows not yet in ClickHouse go back: none may be written twice.
                    self._queue.extendleft(reversed(getattr(e, "unsent", batch)))
                    raise
        except ClickHouseError as e:
            self._failed(e)
            self._away()
            return
        self._depth(len(self._queue))

    def _ready(self) -> bool:
        if self._dialect is not None:
            return True
        try:
            self._dialect = migrate(self._client)
        except ClickHouseError as e:
            self._failed(e)
            return False
        log.info("analytics: writing to ClickHouse, %s", self._client.describe())
        return True

    def _insert_rows(self, rows: list[Row]) -> None:
        """Insert ``rows``, a table at a time. What it raises carries ``unsent``: the rows of the tables
        not inserted (those before it are in ClickHouse, and must not be sent again)."""
        by_table: dict[str, list[dict]] = {}
        for table, row in rows:
            by_table.setdefault(table, []).append(row)
        sent: set[str] = set()
        for name, table_rows in by_table.items():
            table = TABLES.get(name)
            try:
                if table is not None:
                    self._client.insert(table, self._dialect, table_rows)
            except BaseException as e:
                e.unsent = [(t, r) for t, r in rows if t not in sent]
                raise
            sent.add(name)
            self._count(name, "written", len(table_rows))
        if self.status != "ok":
            log.info("analytics: ClickHouse answers again")
        self.status = "ok"
        self._retry_s = _RETRY_S

    def _replay_batch(self, rows: list[Row]) -> None:
        try:
            self._insert_rows(rows)
        except BaseException as e:
            unsent = getattr(e, "unsent", rows)
            if len(unsent) < len(rows):
                raise PartlySent(unsent) from e  # the spool keeps the rest, and moves past the batch
            raise

    def _failed(self, error: ClickHouseError) -> None:
        if self.status != "error":
            log.warning("analytics: ClickHouse (%s) is unavailable (%s); rows are %s", self._client.describe(),
                        error, "spooled" if self._spool is not None else "kept in memory")
        self.status = "error"
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, _RETRY_MAX_S)

    def _away(self) -> None:
        """ClickHouse cannot take rows now: spool the queue (or keep it, bounded, with no spool)."""
        if self._spool is not None:
            self._to_spool(self._take(len(self._queue)))
        self._depth(len(self._queue))

    def _take(self, n: int) -> list[Row]:
        queue = self._queue
        return [queue.popleft() for _ in range(min(n, len(queue)))]

    def _overflow(self, rows: list[Row]) -> None:
        if self._spool is None:
            self._counted(rows, "dropped")
            log.warning("analytics: the queue is full and there is no spool; %d rows dropped", len(rows))
            return
        self._to_spool(rows)

    def _to_spool(self, rows: list[Row]) -> None:
        if not rows:
            return
        if self._spool is None:
            self._counted(rows, "dropped")
            return
        spooled, dropped = self._spool.append(rows)
        self._counted(rows[:spooled], "spooled")
        if dropped:
            self._counted(rows[spooled:], "dropped")
            log.warning("analytics: the spool is full; %d rows dropped", dropped)

    def _counted(self, rows: Iterable[Row], result: str) -> None:
        tally: dict[str, int] = {}
        for table, _row in rows:
            tally[table] = tally.get(table, 0) + 1
        for table, n in tally.items():
            self._count(table, result, n)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the greenlet; insert the queue if ClickHouse takes it within ``timeout``, else spool it."""
        deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout / 2)  # a batch in flight finishes, or is cut short below
            self._greenlet.kill(block=True, timeout=0.1)
        if self._queue:
            self._retry_at = 0.0
            with gevent.Timeout(max(deadline - time.monotonic(), 0.01), False):
                self.flush()
        if self._queue:
            rows = self._take(len(self._queue))
            if self._spool is not None:
                self._to_spool(rows)
            else:
                self._counted(rows, "dropped")
                log.warning("analytics: %d rows could not be written before the worker stopped", len(rows))
        if self._spool is not None:
            self._spool.close()
        if self._client is not None:
            self._client.close()
        self._depth(0)
