"""The analytics tables: their columns, each column's type on old and new ClickHouse servers, and the
conversion of a row's plain values (as queued and spooled: JSON types) to what a column takes.

Debian bookworm ships ClickHouse 18.16, which has no DateTime64, Bool or Map, and LowCardinality only
behind a setting; ``Dialect`` picks the portable forms there (DateTime, UInt8, a JSON String) and the
better ones on current servers. Times are held as Unix seconds (floats) until written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ujson

__all__ = ["ANALYTICS", "BLOCKING_EVENTS", "GUARDRAILS", "INFERENCES", "TABLES", "Column", "Dialect", "Table"]

#: ClickHouse releases since which the better types exist (DateTime64: 20.1, Bool: 21.12, Map: 21.8).
_NEW_TYPES = (21, 12)


class Column:
    """``kind``: one of uuid, str, lowstr, int, bigint, float, bool, time, map; ``nullable`` as said."""

    __slots__ = ("name", "kind", "nullable")

    def __init__(self, name: str, kind: str, nullable: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.nullable = nullable


class Table:
    __slots__ = ("name", "columns", "order_by", "time_column")

    def __init__(self, name: str, columns: Sequence[Column], order_by: str, time_column: str) -> None:
        self.name = name
        self.columns = tuple(columns)
        self.order_by = order_by
        self.time_column = time_column


def _c(name: str, kind: str = "str", nullable: bool = True) -> Column:
    return Column(name, kind, nullable)


ANALYTICS = Table(
    "GatewayAnalytics",
    [
        _c("id", "uuid", False), _c("inference_id", "uuid"),
        _c("client_ip", "str", False), _c("proxy_chain"),
        _c("country_code", "lowstr"), _c("country_name"), _c("region"), _c("city"),
        _c("latitude", "float"), _c("longitude", "float"), _c("timezone"), _c("asn", "int"), _c("isp"),
        _c("user_agent"), _c("device_type", "lowstr"), _c("browser_name"), _c("browser_version"),
        _c("os_name"), _c("os_version"), _c("is_bot", "bool", False),
        _c("method", "lowstr", False), _c("path", "str", False), _c("body_size", "bigint", False),
        _c("api_key_id"), _c("user_id"), _c("project_id"), _c("endpoint_id"), _c("model_id"),
        _c("request_timestamp", "time", False), _c("response_timestamp", "time", False),
        _c("gateway_processing_ms", "float", False), _c("total_duration_ms", "float", False),
        _c("model_name"), _c("model_provider", "lowstr"), _c("status_code", "int", False),
        _c("response_size", "bigint", False), _c("is_stream", "bool", False), _c("stream_cut", "bool", False),
        _c("error_type"), _c("error_message"),
        _c("is_blocked", "bool", False), _c("block_reason"), _c("block_rule_id"),
        _c("tags", "map", False),
    ],
    order_by="(request_timestamp, id)",
    time_column="request_timestamp",
)

INFERENCES = Table(
    "ModelInference",
    [
        _c("id", "uuid", False), _c("inference_id", "uuid", False), _c("attempt", "int", False),
        _c("model_name", "str", False), _c("model_provider_name", "lowstr", False),
        _c("endpoint_type", "lowstr", False),
        _c("input_tokens", "int"), _c("output_tokens", "int"), _c("cached_input_tokens", "int"),
        _c("reasoning_tokens", "int"),
        _c("response_time_ms", "float", False), _c("ttft_ms", "float"),
        _c("status_code", "int"), _c("result", "lowstr", False), _c("error"),
        _c("cost", "float"), _c("currency", "lowstr"), _c("is_stream", "bool", False),
        _c("timestamp", "time", False),
        _c("raw_request"), _c("raw_response"),
        _c("api_key_id"), _c("user_id"), _c("project_id"), _c("endpoint_id"),
    ],
    order_by="(timestamp, id)",
    time_column="timestamp",
)

BLOCKING_EVENTS = Table(
    "GatewayBlockingEvents",
    [
        _c("id", "uuid", False), _c("rule_id", "str", False), _c("client_ip", "str", False),
        _c("country_code", "lowstr"), _c("user_agent"), _c("request_path", "str", False),
        _c("request_method", "lowstr", False), _c("api_key_id"), _c("project_id"), _c("endpoint_id"),
        _c("model_name"), _c("rule_type", "lowstr", False), _c("rule_name", "str", False),
        _c("rule_priority", "int", False), _c("block_reason"), _c("action_taken", "lowstr", False),
        _c("blocked_at", "time", False),
    ],
    order_by="(blocked_at, id)",
    time_column="blocked_at",
)

GUARDRAILS = Table(
    "GuardrailInference",
    [
        _c("id", "uuid", False), _c("inference_id", "uuid", False), _c("guardrail_profile", "str", False),
        _c("guard_type", "lowstr", False), _c("flagged", "bool", False), _c("confidence_score", "float", False),
        _c("provider_results", "str", False), _c("action_taken", "lowstr", False),
        _c("scan_latency_ms", "float", False), _c("scan_started_at", "time", False),
    ],
    order_by="(scan_started_at, id)",
    time_column="scan_started_at",
)

TABLES: Mapping[str, Table] = {t.name: t for t in (ANALYTICS, INFERENCES, BLOCKING_EVENTS, GUARDRAILS)}


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)


class Dialect:
    """Column types and value conversions for one server version."""

    def __init__(self, version: tuple[int, ...]) -> None:
        self.version = version
        self.new = version >= _NEW_TYPES
        self._encoders: dict[tuple[str, bool], Callable[[dict], Any]] = {}

    def column_type(self, column: Column) -> str:
        base = {
            "uuid": "UUID",
            "str": "String",
            "lowstr": "LowCardinality(String)" if self.new else "String",
            "int": "Int64",
            "bigint": "Int64",
            "float": "Float64",
            "bool": "Bool" if self.new else "UInt8",
            "time": "DateTime64(3, 'UTC')" if self.new else "DateTime('UTC')",
            "map": "Map(String, String)" if self.new else "String",
        }[column.kind]
        if column.nullable and column.kind != "map":
            # NOTE: LowCardinality wraps Nullable, never the reverse.
            if base.startswith("LowCardinality("):
                return "LowCardinality(Nullable(String))"
            return f"Nullable({base})"
        return base

    def create(self, database: str, table: Table) -> str:
        columns = ",\n  ".join(f"`{c.name}` {self.column_type(c)}" for c in table.columns)
        return (
            f"CREATE TABLE IF NOT EXISTS `{database}`.`{table.name}` (\n  {columns}\n) ENGINE = MergeTree() "
            f"PARTITION BY toYYYYMM({table.time_column}) ORDER BY {table.order_by}"
        )

    def encoder(self, table: Table, *, native: bool) -> Callable[[dict], Any]:
        """A function from a row (a dict of plain values) to what the transport sends: a tuple in column
        order for clickhouse-driver (``native``), else a dict for a JSONEachRow line.

        PERF: only the columns whose values need converting (times, bools, maps, missing non-nullable
        values) cost a call; the others are taken as they are.
        """
        key = (table.name, native)
        if key not in self._encoders:
            self._encoders[key] = self._make_encoder(table, native)
        return self._encoders[key]

    def _make_encoder(self, table: Table, native: bool) -> Callable[[dict], Any]:
        plan = []
        for column in table.columns:
            convert = self._converter(column, native)
            default = None if column.nullable else _EMPTY[column.kind]
            if convert is not None and default is not None:
                default = convert(default)
            plan.append((column.name, convert, default))
        names = tuple(name for name, _, _ in plan)

        def values(row: dict) -> list:
            out = []
            for name, convert, default in plan:
                value = row.get(name)
                if value is None:
                    out.append(default)
                elif convert is None:
                    out.append(value)
                else:
                    out.append(convert(value))
            return out

        if native:
            return lambda row: tuple(values(row))
        return lambda row: dict(zip(names, values(row), strict=True))

    def _converter(self, column: Column, native: bool) -> Callable[[Any], Any] | None:
        kind = column.kind
        if kind == "time":
            if native:
                return _utc
            return _json_time_ms if self.new else _json_time
        if kind == "bool":
            return bool if self.new else _flag
        if kind == "map":
            return dict if self.new else ujson.dumps
        return None


def _flag(value: Any) -> int:
    return 1 if value else 0


def _json_time(seconds: float) -> str:
    return _utc(seconds).strftime("%Y-%m-%d %H:%M:%S")


def _json_time_ms(seconds: float) -> str:
    stamp = _utc(seconds)
    return f"{stamp.strftime('%Y-%m-%d %H:%M:%S')}.{stamp.microsecond // 1000:03d}"


_EMPTY = {"uuid": "00000000-0000-0000-0000-000000000000", "str": "", "lowstr": "", "int": 0, "bigint": 0,
          "float": 0.0, "bool": False, "time": 0.0, "map": {}}
