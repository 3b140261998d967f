"""What a request leaves behind: Prometheus metrics, ClickHouse analytics rows (client address, GeoIP,
user agent; the writer, its spool and migrations) and OTLP traces, each a finish hook on the outcome."""
