"""HTTP/1.1 request-head parsing and the Date header, faster than pywsgi's defaults.

pywsgi parses request headers with the email package (http.client.parse_headers), the largest
single cost of its request path, and formats a Date header for every response. The server's
handler uses these instead.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.utils import formatdate

__all__ = ["RequestHeaders", "http_date", "read_headers"]

#: Longest header line, and most header lines, accepted (http.client's limits).
MAX_LINE = 65536
MAX_HEADERS = 100
_END = (b"\r\n", b"\n", b"")


class RequestHeaders:
    """Request headers in the interface pywsgi's handler reads (``get``, ``status``, ``headers``, ...).

    ``status`` is empty for a valid head, else the reason the request is refused with 400.
    """

    __slots__ = ("items", "_map", "status")

    def __init__(self, items: list[tuple[str, str]], status: str = "") -> None:
        self.items = items
        self.status = status
        lookup: dict[str, str] = {}
        for name, value in items:
            lookup.setdefault(name.lower(), value)
        self._map = lookup

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._map.get(name.lower(), default)

    getheader = get

    def __delitem__(self, name: str) -> None:
        lower = name.lower()
        self._map.pop(lower, None)
        self.items = [(n, v) for n, v in self.items if n.lower() != lower]

    @property
    def typeheader(self) -> str | None:
        return self._map.get("content-type")

    @property
    def headers(self) -> Iterator[str]:
        for name, value in self.items:
            yield f"{name}: {value}\r\n"


def read_headers(rfile) -> RequestHeaders:
    """Read header lines up to the blank line that ends the head (RFC 9112, section 5)."""
    items: list[tuple[str, str]] = []
    readline = rfile.readline
    while True:
        line = readline(MAX_LINE + 1)
        if line in _END:
            return RequestHeaders(items)
        if len(line) > MAX_LINE:
            return RequestHeaders([], "header line too long")
        if len(items) >= MAX_HEADERS:
            return RequestHeaders([], "too many headers")
        name, sep, value = line.partition(b":")
        # NOTE: RFC 9112 5.1: no whitespace between name and colon; 5.2: obs-fold may be rejected.
        if not sep or not name or name[-1:] in b" \t" or name[:1] in b" \t":
            return RequestHeaders([], "invalid header line")
        items.append((name.decode("latin-1"), value.strip().decode("latin-1")))


_date_second = -1
_date_value = b""


def http_date() -> bytes:
    """The Date header value (RFC 9110, section 6.6.1), formatted once per second."""
    global _date_second, _date_value
    now = int(time.time())
    if now != _date_second:
        _date_value = formatdate(now, usegmt=True).encode("latin-1")
        _date_second = now
    return _date_value
