"""OTLP trace export over HTTP/protobuf: spans encoded straight to protobuf wire bytes, and posted.

Only what the gateway sends is encoded: spans with ids, name, kind, times, status and scalar attributes,
under one resource and one instrumentation scope (the messages of opentelemetry-proto's
``collector/trace/v1``, ``trace/v1``, ``common/v1``, ``resource/v1``; field numbers below). Encoding here
costs a few microseconds a span; the SDK's ReadableSpan and encoder cost about 30 µs to make and
110 µs to encode each (measured; see the closing note of issue 9), which the request path cannot carry.
The test receiver decodes what this writes with opentelemetry-proto itself.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = ["SERVER", "CLIENT", "Exporter", "encode_request", "encode_span"]

SERVER, CLIENT = 2, 3  # Span.SpanKind
_STATUS_ERROR = 2  # Status.StatusCode
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_key_cache: dict[str, bytes] = {}
_encoded: dict[tuple, bytes] = {}
_CACHE = 8192
#: Attributes whose values are new on every request: never cached.
_UNIQUE = frozenset({"tensorzero.inference_id"})
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _field(field: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes, or an embedded message)."""
    return _tag(field, _LEN) + _varint(len(payload)) + payload


def _attribute(key: str, value: Any) -> bytes:
    """A ``KeyValue`` message: key (1), value (2, an ``AnyValue``)."""
    prefix = _key_cache.get(key)
    if prefix is None:
        prefix = _key_cache[key] = _field(1, key.encode())
    if isinstance(value, str):
        any_value = _field(1, value.encode())  # string_value
    elif isinstance(value, bool):
        any_value = b"\x10" + (b"\x01" if value else b"\x00")  # bool_value (2)
    elif isinstance(value, int):
        any_value = b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int_value (3), two's complement
    else:
        any_value = b"\x21" + _pack_double(float(value))  # double_value (4)
    return prefix + _field(2, any_value)


def _attributes(field: int, attributes: Mapping[str, Any]) -> bytes:
    # PERF: most attributes repeat (routes, models, providers, statuses): each encoded once, until the
    # cache fills (then it starts again); floats (costs) and per-request ids are not kept.
    cache = _encoded
    parts = []
    for key, value in attributes.items():
        if value is None:
            continue
        kind = type(value)
        if kind is float or key in _UNIQUE:
            parts.append(_field(field, _attribute(key, value)))
            continue
        cache_key = (field, key, kind, value)
        encoded = cache.get(cache_key)
        if encoded is None:
            if len(cache) >= _CACHE:
                cache.clear()
            encoded = cache[cache_key] = _field(field, _attribute(key, value))
        parts.append(encoded)
    return b"".join(parts)


def encode_span(trace_id: int, span_id: int, parent_id: int | None, name: str, kind: int, start_ns: int,
                end_ns: int, attributes: Mapping[str, Any], error: str | None = None, flags: int = 1) -> bytes:
    """One ``Span`` message's bytes."""
    parts = [
        _field(1, trace_id.to_bytes(16, "big")),
        _field(2, span_id.to_bytes(8, "big")),
    ]
    if parent_id:
        parts.append(_field(4, parent_id.to_bytes(8, "big")))
    parts += [
        _field(5, name.encode()),
        _tag(6, _VARINT) + _varint(kind),
        _tag(7, _I64) + _pack_fixed64(start_ns),
        _tag(8, _I64) + _pack_fixed64(end_ns),
        _attributes(9, attributes),
    ]
    if error:
        parts.append(_field(15, _field(2, error.encode()) + _tag(3, _VARINT) + _varint(_STATUS_ERROR)))
    parts.append(_tag(16, _I32) + struct.pack("<I", flags & 0xFF | 0x100))  # W3C flags, "has is_remote" bit
    return b"".join(parts)


def encode_request(resource: Mapping[str, Any], scope: tuple[str, str], spans: list[bytes]) -> bytes:
    """An ``ExportTraceServiceRequest``: one ``ResourceSpans`` (1) with one ``ScopeSpans`` (2)."""
    scope_message = _field(1, scope[0].encode()) + _field(2, scope[1].encode())
    scope_spans = _field(1, scope_message) + b"".join(_field(2, span) for span in spans)
    resource_spans = _field(1, _attributes(1, resource)) + _field(2, scope_spans)
    return _field(1, resource_spans)


def _env_headers() -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` (else ``OTEL_EXPORTER_OTLP_HEADERS``): ``k=v,k2=v2``, URL-encoded."""
    raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    headers = {}
    for item in raw.split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            headers[unquote(name.strip())] = unquote(value.strip())
    return headers


def endpoint() -> str | None:
    """Where traces go: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


class Exporter:
    """Posts encoded requests to the collector (urllib3, on gevent's sockets in a worker)."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        import urllib3

        self._url = url
        self._headers = {**_env_headers(), **headers, "Content-Type": "application/x-protobuf"}
        self._http = urllib3.PoolManager(num_pools=1, maxsize=1, retries=False,
                                         timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))

    def export(self, body: bytes) -> bool:
        """Whether the collector took it (any 2xx)."""
        import urllib3

        try:
            answer = self._http.request("POST", self._url, body=body, headers=self._headers, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError):
            return False
        return 200 <= answer.status < 300

    def shutdown(self) -> None:
        self._http.clear()
