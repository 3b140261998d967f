"""The pieces of a request's record: ids, usage, cost, client address, user agent, GeoIP, tables, spool, writer."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from gateway.config.schema import Pricing
from gateway.observe.clientip import ClientAddress
from gateway.observe.geoip import GeoIP, GeoIPError, check
from gateway.observe.spool import Spool
from gateway.observe.tables import ANALYTICS, Dialect
from gateway.observe.useragent import parse_agent
from gateway.observe.writer import AnalyticsWriter
from gateway.outcome import Outcome, Usage, new_inference_id

GEOIP = Path(__file__).resolve().parents[1] / "data" / "geoip"
LOOPBACK_AND_PRIVATE = ("127.0.0.0/8", "10.0.0.0/8")


def test_inference_ids_are_uuid7_in_time_order():
    ids = [new_inference_id() for _ in range(50)]
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert len(set(ids)) == 50
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the millisecond prefix never goes back


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 6},
      "completion_tokens_details": {"reasoning_tokens": 2}}, (10, 4, 6, 2)),
    ({"input_tokens": 9, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 1}}, (9, 3, 1, None)),
    ({"prompt_tokens": 5, "total_tokens": 5}, (5, None, None, None)),
])
def test_usage_in_each_shape(usage, expected):
    found = Usage.parse(usage)
    assert (found.input_tokens, found.output_tokens, found.cached_input_tokens, found.reasoning_tokens) == expected


@pytest.mark.parametrize("usage", [None, "7", {}, {"prompt_tokens": "7"}, {"prompt_tokens": -1}, {"prompt_tokens": True}])
def test_usage_that_is_not_usage(usage):
    assert Usage.parse(usage) is None


def test_cost_and_cached_tokens():
    pricing = Pricing(input_cost=3.0, output_cost=15.0, per_tokens=1_000_000)
    assert pricing.cost(1000, 100) == pytest.approx((1000 * 3 + 100 * 15) / 1e6)
    cached = Pricing(input_cost=3.0, output_cost=15.0, cached_input_cost=0.3)
    assert cached.cost(1000, 100, 800) == pytest.approx((200 * 3 + 800 * 0.3 + 100 * 15) / 1e6)
    outcome = Outcome("i", 0.0, 0.0)
    outcome.set_usage(Usage(10, 5), None)
    assert outcome.cost is None and outcome.usage.input_tokens == 10


def test_finish_hooks_run_once_and_survive_a_failing_one():
    seen = []

    def bad(outcome):
        raise RuntimeError("boom")

    outcome = Outcome("i", 0.0, 0.0, [bad, seen.append])
    outcome.finish()
    outcome.finish()
    assert seen == [outcome]
    outcome.on_finish(seen.append)  # a hook added after the end runs at once
    assert seen == [outcome, outcome]


def _headers(**values: str) -> dict[str, str]:
    """A WSGI environ holding these request headers."""
    return {"HTTP_" + k.upper(): v for k, v in values.items()}


def test_client_address_behind_trusted_proxies():
    clients = ClientAddress(LOOPBACK_AND_PRIVATE)
    assert clients.resolve("203.0.113.9", _headers(x_forwarded_for="1.2.3.4")) == ("203.0.113.9", "")
    assert clients.resolve("127.0.0.1", _headers(x_forwarded_for="6.6.6.6, 81.2.69.142, 10.0.0.7")) == (
        "81.2.69.142", "6.6.6.6, 81.2.69.142, 10.0.0.7, 127.0.0.1")
    assert clients.resolve("127.0.0.1", _headers(x_playground_client_ip="216.160.83.56",
                                                 x_forwarded_for="1.2.3.4"))[0] == "216.160.83.56"
    assert clients.resolve("10.1.1.1", _headers(x_real_ip="not an address", cf_connecting_ip="2001:218::"))[0] == (
        "2001:218::")
    assert clients.resolve("127.0.0.1", _headers()) == ("127.0.0.1", "127.0.0.1")
    assert clients.resolve("::ffff:127.0.0.1", _headers(true_client_ip="[2001:db8::1]:443"))[0] == "2001:db8::1"


@pytest.mark.parametrize(("agent", "expected"), [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
     "Safari/537.36", ("desktop", "Chrome", "120.0", "Windows", False)),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile "
     "Safari/537.36", ("mobile", "Chrome Mobile", "120.0", "Android", False)),
    ("Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 "
     "Mobile/15E148 Safari/604.1", ("tablet", "Mobile Safari", "16.6", "iOS", False)),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", ("bot", "bingbot", "2.0", None, True)),
    ("my-scraper/1.0", ("bot", "my-scraper", "1.0", None, True)),
])
def test_user_agents(agent, expected):
    found = parse_agent(agent)
    assert (found.device_type, found.browser_name, found.browser_version, found.os_name, found.is_bot) == expected


@pytest.mark.parametrize(("ip", "country", "city"), [
    ("81.2.69.142", "GB", "London"), ("216.160.83.56", "US", "Milton"), ("2001:218::", "JP", None),
    ("127.0.0.1", None, None), ("10.1.2.3", None, None), ("nonsense", None, None),
])
def test_geoip_lookups(ip, country, city):
    geo = GeoIP(str(GEOIP / "GeoIP2-City-Test.mmdb"), str(GEOIP / "GeoLite2-ASN-Test.mmdb"))
    place = geo.lookup(ip)
    assert (place.country_code, place.city) == (country, city)
    geo.close()


def test_country_database_and_bad_files(tmp_path):
    geo = GeoIP(str(GEOIP / "GeoIP2-Country-Test.mmdb"), None)
    assert geo.lookup("81.2.69.142").country_name == "United Kingdom"
    with pytest.raises(GeoIPError, match="no such file"):
        check(str(tmp_path / "missing.mmdb"), None)
    (tmp_path / "junk.mmdb").write_bytes(b"not a database" * 100)
    with pytest.raises(GeoIPError, match="not a readable MaxMind database"):
        check(str(tmp_path / "junk.mmdb"), None)
    with pytest.raises(GeoIPError, match="expected one of"):
        check(str(GEOIP / "GeoLite2-ASN-Test.mmdb"), None)


def test_portable_types_on_old_servers():
    old, new = Dialect((18, 16, 1)), Dialect((24, 8, 1))
    columns = {c.name: c for c in ANALYTICS.columns}
    assert old.column_type(columns["request_timestamp"]) == "DateTime('UTC')"
    assert new.column_type(columns["request_timestamp"]) == "DateTime64(3, 'UTC')"
    assert (old.column_type(columns["is_bot"]), new.column_type(columns["is_bot"])) == ("UInt8", "Bool")
    assert (old.column_type(columns["tags"]), new.column_type(columns["tags"])) == ("String", "Map(String, String)")
    assert old.column_type(columns["country_code"]) == "Nullable(String)"
    assert new.column_type(columns["country_code"]) == "LowCardinality(Nullable(String))"
    row = {"request_timestamp": 1_700_000_000.25, "is_bot": True, "tags": {"a": "b"}}
    assert old.encoder(ANALYTICS, native=False)(row)["request_timestamp"] == "2023-11-14 22:13:20"
    assert new.encoder(ANALYTICS, native=False)(row)["request_timestamp"] == "2023-11-14 22:13:20.250"
    assert old.encoder(ANALYTICS, native=False)(row)["tags"] == '{"a":"b"}'
    assert old.encoder(ANALYTICS, native=False)(row)["body_size"] == 0  # a missing non-nullable value


def test_spool_replays_in_order_and_resumes(tmp_path):
    spool = Spool(str(tmp_path), 1 << 20)
    spool.append([("T", {"n": i}) for i in range(5)])
    spool.rotate()
    spool.append([("T", {"n": i}) for i in range(5, 8)])
    got: list[int] = []

    def insert(rows):
        if len(got) >= 4 and not getattr(insert, "failed", False):
            insert.failed = True
            raise OSError("ClickHouse went away")
        got.extend(r["n"] for _, r in rows)

    with pytest.raises(OSError):
        spool.replay(insert, 2)
    assert got == [0, 1, 2, 3]
    spool.replay(insert, 2)
    assert got == list(range(8)) and not spool.pending()


def test_spool_is_bounded(tmp_path):
    spool = Spool(str(tmp_path), 200)
    spooled, dropped = spool.append([("T", {"pad": "x" * 40})] * 10)
    assert spooled >= 1 and dropped == 10 - spooled
    assert sum(p.stat().st_size for p in tmp_path.glob("*.jsonl")) <= 200


class _Client:
    """A ClickHouse stand-in for the writer's logic (the real server is in the integration tests)."""

    database = "db"

    def __init__(self):
        self.up = True
        self.rows: list[dict] = []

    def describe(self):
        return "test"

    def version(self):
        return (18, 16, 1)

    def query(self, sql):
        if not self.up:
            from gateway.observe.clickhouse import ClickHouseError

            raise ClickHouseError("NetworkError")
        return []

    def insert(self, table, dialect, rows):
        self.query("")
        self.rows.extend(rows)

    def close(self):
        pass


def test_writer_spools_while_clickhouse_is_away_then_sends_all(tmp_path):
    counts: dict[tuple[str, str], int] = {}

    def count(table, result, n):
        counts[table, result] = counts.get((table, result), 0) + n

    client = _Client()
    writer = AnalyticsWriter(client, Spool(str(tmp_path), 1 << 20), batch_rows=3, flush_interval_s=60,
                             queue_rows=4, count=count, depth=lambda n: None)
    client.up = False
    for i in range(6):  # the queue takes 4; the other 2 go to the spool at once
        writer.put("GatewayAnalytics", {"n": i})
    writer.flush()  # ClickHouse is away: the queue goes to the spool too
    assert writer.status == "error" and counts["GatewayAnalytics", "spooled"] == 6
    client.up = True
    writer._retry_at = 0.0
    writer.put("GatewayAnalytics", {"n": 6})
    writer.flush()
    assert sorted(r["n"] for r in client.rows) == list(range(7))
    assert writer.status == "ok" and counts["GatewayAnalytics", "written"] == 7


def test_writer_without_a_spool_drops_and_counts(tmp_path):
    counts: dict[tuple[str, str], int] = {}
    writer = AnalyticsWriter(None, None, batch_rows=10, flush_interval_s=60, queue_rows=2,
                             count=lambda t, r, n: counts.__setitem__((t, r), counts.get((t, r), 0) + n),
                             depth=lambda n: None)
    for i in range(3):
        writer.put("ModelInference", {"n": i})
    assert counts == {("ModelInference", "dropped"): 1}
    writer.close(0.1)
    assert counts == {("ModelInference", "dropped"): 3}


def test_rows_never_hold_an_unserialisable_value(tmp_path):
    spool = Spool(str(tmp_path), 1 << 20)
    spool.append([("T", {"tags": {"k": "v"}, "n": None, "f": 1.5})])
    spool.close()
    [path] = tmp_path.glob("*.jsonl")
    assert json.loads(path.read_text()) == {"t": "T", "r": {"tags": {"k": "v"}, "n": None, "f": 1.5}}


def test_otlp_encoding_decodes_with_the_official_messages():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from gateway.observe.otlp import CLIENT, encode_request, encode_span

    span = encode_span(0xABC << 64, 0x1234, None, "chat m", CLIENT, 1_700_000_000_000_000_001, 1_700_000_000_500_000_000,
                       {"s": "ünï", "t": True, "f": False, "i": 7, "neg": -3, "d": 0.25, "none": None}, "http_503", 1)
    request = ExportTraceServiceRequest()
    request.ParseFromString(encode_request({"service.name": "budgateway"}, ("budgateway", "1"), [span, span]))
    [resource_spans] = request.resource_spans
    assert resource_spans.resource.attributes[0].value.string_value == "budgateway"
    [scope_spans] = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version, len(scope_spans.spans)) == ("budgateway", "1", 2)
    got = scope_spans.spans[0]
    assert got.trace_id == (0xABC << 64).to_bytes(16, "big") and got.span_id == (0x1234).to_bytes(8, "big")
    assert got.parent_span_id == b"" and got.name == "chat m" and got.kind == CLIENT
    assert (got.start_time_unix_nano, got.end_time_unix_nano) == (1_700_000_000_000_000_001, 1_700_000_000_500_000_000)
    values = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in got.attributes}
    assert values == {"s": "ünï", "t": True, "f": False, "i": 7, "neg": -3, "d": 0.25}
    assert (got.status.code, got.status.message) == (2, "http_503")
    assert got.flags & 0xFF == 1


class _HalfBroken(_Client):
    """Takes GatewayAnalytics rows; refuses ModelInference rows until ``fixed``."""

    fixed = False

    def insert(self, table, dialect, rows):
        if table.name == "ModelInference" and not self.fixed:
            from gateway.observe.clickhouse import ClickHouseError

            raise ClickHouseError("code 16")
        self.rows.extend((table.name, r["n"]) for r in rows)


@pytest.mark.parametrize("through_spool", [False, True])
def test_a_table_that_fails_never_makes_the_other_twice(tmp_path, through_spool):
    client = _HalfBroken()
    spool = Spool(str(tmp_path), 1 << 20)
    writer = AnalyticsWriter(client, spool, batch_rows=10, flush_interval_s=60, queue_rows=100,
                             count=lambda t, r, n: None, depth=lambda n: None)
    rows = [("GatewayAnalytics", {"n": i}) for i in range(3)] + [("ModelInference", {"n": i}) for i in range(3)]
    if through_spool:
        spool.append(rows)
    else:
        for table, row in rows:
            writer.put(table, row)
    for _ in range(3):  # ClickHouse refuses one table, again and again
        writer._retry_at = 0.0
        writer.flush()
    client.fixed = True
    writer._retry_at = 0.0
    writer.flush()
    assert sorted(client.rows) == sorted((t, r["n"]) for t, r in rows), "a row is missing or came twice"
    assert not spool.pending()
