"""Log output: ``pretty`` lines for people, ``json`` lines for collectors, each with the request's id.

The context stage sets ``request_id`` for the greenlet serving a request (greenlets keep their own
context variables), so any line logged while it runs names the request, with no argument passed down.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextvars import ContextVar

import ujson

__all__ = ["Throttled", "configure_logging", "request_id"]

#: The id of the request the current greenlet serves ("" outside a request).
request_id: ContextVar[str] = ContextVar("request_id", default="")

_PRETTY = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


class _PrettyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = request_id.get()
        return f"{line} [request {rid}]" if rid else line


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return ujson.dumps(entry, escape_forward_slashes=False, ensure_ascii=False)


class Throttled:
    """A logger's warnings at most once every ``every_s`` seconds (an outage must not flood the log)."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._logger = logger
        self._every_s = every_s
        self._last = float("-inf")

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last >= self._every_s:
            self._last = now
            self._logger.warning(message, *args)


def configure_logging(fmt: str = "pretty", *, debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if fmt == "json" else _PrettyFormatter(_PRETTY))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug or os.environ.get("BUDGATEWAY_DEBUG") else logging.INFO)
    # urllib3 warns per discarded connection under bursts; the pool size is ours to tune, not a log line's.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
