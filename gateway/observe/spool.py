"""The analytics spool: rows ClickHouse could not take yet, in JSONL files, replayed in order later.

Each worker appends to a segment of its own, ``<creation ns>-<pid>.jsonl``, holding an exclusive
``flock`` on it while it is open; a line is ``{"t": table, "r": row}``. Replaying takes the segments
oldest first, skipping any another live process holds, so several workers (and a restarted gateway
finding a dead one's files) share one folder without sending a row twice. Progress through a
segment is kept in ``<segment>.done`` (bytes consumed) after each batch, so a crash mid-replay
repeats at most the batch in flight. The folder as a whole is kept under ``max_bytes``: a row that
would cross it is dropped, and counted by the caller.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable

import gevent
import ujson

from gateway.loop import yield_to_loop

__all__ = ["PartlySent", "Spool"]

log = logging.getLogger(__name__)

_SUFFIX = ".jsonl"
_DONE = ".done"
#: A segment is closed (and so replayable) once it holds this much.
_SEGMENT_BYTES = 16 * 1024 * 1024
#: Rows encoded between two yields to the hub.
_SLICE = 50
#: How stale the folder size may be before it is measured again (other workers write to it too).
_RESCAN_S = 1.0

Row = tuple[str, dict]


class PartlySent(Exception):
    """Raised by a replay's ``insert`` when only part of a batch went in: ``rows`` are the rest. The
    spool writes them anew and moves past the batch (so the part sent is not sent twice), then stops
    the replay with the cause."""

    def __init__(self, rows: list[Row]) -> None:
        super().__init__(f"{len(rows)} rows not sent")
        self.rows = rows


class Spool:
    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        os.makedirs(directory, exist_ok=True)
        self._file = None
        self._path: str | None = None
        self._written = 0
        self._bytes = 0
        self._scanned = 0.0
        self._rescan()

    # --- writing ---------------------------------------------------------------------------------

    def append(self, rows: Iterable[Row]) -> tuple[int, int]:
        """Write ``rows``; ``(spooled, dropped)``: from the first row that would overfill the folder on,
        the rows are dropped."""
        if time.monotonic() - self._scanned > _RESCAN_S:
            self._rescan()
        lines = []
        size = 0
        rows = list(rows)
        for i, (table, row) in enumerate(rows):
            if i and not i % _SLICE:
                yield_to_loop()
            line = ujson.dumps({"t": table, "r": row}, ensure_ascii=False).encode() + b"\n"
            if self._bytes + size + len(line) > self.max_bytes:
                break
            lines.append(line)
            size += len(line)
        dropped = len(rows) - len(lines)
        if lines:
            f = self._segment()
            _blocking(_write, f, b"".join(lines))
            self._written += size
            self._bytes += size
            if self._written >= _SEGMENT_BYTES:
                self.rotate()
        return len(lines), dropped

    def _segment(self):
        if self._file is None:
            path = os.path.join(self.directory, f"{time.time_ns():020d}-{os.getpid()}{_SUFFIX}")
            f = open(path, "ab")
            fcntl.flock(f, fcntl.LOCK_EX)
            self._file, self._path, self._written = f, path, 0
        return self._file

    def rotate(self) -> None:
        """Close the open segment, so it can be replayed."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()  # releases the lock
            self._file = self._path = None

    def close(self) -> None:
        self.rotate()

    # --- reading back ----------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether any segment, closed or open, is in the folder (cheap: one listdir)."""
        return any(name.endswith(_SUFFIX) for name in os.listdir(self.directory))

    def replay(self, insert: Callable[[list[Row]], None], batch_rows: int) -> int:
        """Insert every segment no one else holds, oldest first, ``batch_rows`` at a time; the rows sent.
        An exception from ``insert`` stops the replay where it is (the batch is retried next time)."""
        self.rotate()
        sent = 0
        for name in sorted(n for n in os.listdir(self.directory) if n.endswith(_SUFFIX)):
            sent += self._replay_segment(os.path.join(self.directory, name), insert, batch_rows)
        self._rescan()
        return sent

    def _replay_segment(self, path: str, insert: Callable[[list[Row]], None], batch_rows: int) -> int:
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            return 0  # replayed and removed by another worker meanwhile
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live worker is writing or replaying it
            if not os.path.exists(path):
                return 0
            done_path = path + _DONE
            offset = _read_offset(done_path)
            f.seek(offset)
            sent = 0
            batch: list[Row] = []
            for line in f:
                offset += len(line)
                row = _parse(line, path)
                if row is not None:
                    batch.append(row)
                if len(batch) >= batch_rows:
                    sent += self._send(batch, insert, done_path, offset)
                    batch = []
                    _write_offset(done_path, offset)
            if batch:
                sent += self._send(batch, insert, done_path, offset)
            os.unlink(path)
            if os.path.exists(done_path):
                os.unlink(done_path)
            return sent

    def _send(self, batch: list[Row], insert: Callable[[list[Row]], None], done_path: str, offset: int) -> int:
        try:
            insert(batch)
        except PartlySent as e:
            self.append(e.rows)
            _write_offset(done_path, offset)
            raise (e.__cause__ or e) from None
        return len(batch)

    def _rescan(self) -> None:
        total = 0
        for name in os.listdir(self.directory):
            if name.endswith(_SUFFIX):
                try:
                    total += os.stat(os.path.join(self.directory, name)).st_size
                except FileNotFoundError:
                    pass
        self._bytes = total
        self._scanned = time.monotonic()


def _write(f, data: bytes) -> None:
    f.write(data)
    f.flush()


def _blocking(fn, *args):
    """Run file I/O in gevent's thread pool, so a slow disk holds this greenlet, not the hub; plainly
    outside a worker (no hub running, as in tests and tools)."""
    hub = gevent.get_hub() if gevent.getcurrent() is not gevent.get_hub() else None
    if hub is None or not _patched():
        return fn(*args)
    return hub.threadpool.apply(fn, args)


def _patched() -> bool:
    from gevent import monkey

    return monkey.is_module_patched("socket")


def _parse(line: bytes, path: str) -> Row | None:
    try:
        item = ujson.loads(line)
        return item["t"], item["r"]
    except (ValueError, KeyError, TypeError):
        # A line cut short by a crash mid-write: nothing of it can be sent.
        log.warning("spool %s: skipped a line that is not a whole row", os.path.basename(path))
        return None


def _read_offset(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_offset(path: str, offset: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(str(offset).encode())
    os.replace(tmp, path)
