"""Log output: ``pretty`` lines for people, ``json`` lines for collectors."""

from __future__ import annotations

import logging
import os
import sys
import time

import ujson

__all__ = ["configure_logging"]


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return ujson.dumps(entry, escape_forward_slashes=False, ensure_ascii=False)


def configure_logging(fmt: str = "pretty", *, debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug or os.environ.get("BUDGATEWAY_DEBUG") else logging.INFO)
    # urllib3 warns per discarded connection under bursts; the pool size is ours to tune, not a log line's.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
