"""The analytics schema, brought up to date whenever a writer first reaches ClickHouse.

Each migration makes sure one table exists with every column this gateway writes: it creates the
table if it is missing, and adds the columns an older table lacks (so a table made by an earlier
release, or by the seed's own migrations, keeps its rows and gains the new columns). Every step is
idempotent, so every worker of every instance may run them at once; each migration applied is
recorded in ``BudgatewayMigrations``.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.observe.tables import ANALYTICS, BLOCKING_EVENTS, GUARDRAILS, INFERENCES, Dialect, Table
from gateway.observe.tensorzero_tables import TENSORZERO_TABLES

__all__ = ["MIGRATIONS", "MIGRATIONS_TABLE", "migrate"]

log = logging.getLogger(__name__)

MIGRATIONS_TABLE = "BudgatewayMigrations"
#: (number, name, the table it brings up to date)
MIGRATIONS: tuple[tuple[int, str, Table], ...] = (
    (1, "create GatewayAnalytics", ANALYTICS),
    (2, "create ModelInference", INFERENCES),
    (3, "create GatewayBlockingEvents", BLOCKING_EVENTS),
    (4, "create GuardrailInference", GUARDRAILS),
    *((number, f"create {name}", TENSORZERO_TABLES[name]) for number, name in (
        (5, "ChatInference"), (6, "JsonInference"), (7, "InferenceById"), (8, "InferenceByEpisodeId"),
        (9, "BooleanMetricFeedback"), (10, "FloatMetricFeedback"), (11, "CommentFeedback"),
        (12, "DemonstrationFeedback"), (13, "BatchRequest"), (14, "BatchModelInference"))),
)


def _ensure(client: Any, dialect: Dialect, table: Table) -> list[str]:
    """Create ``table`` or add the columns it lacks; the names of the columns added."""
    db = client.database
    client.query(dialect.create(db, table))
    have = {row[0] for row in client.query(
        f"SELECT name FROM system.columns WHERE database = '{db}' AND table = '{table.name}'"
    )}
    added = []
    for column in table.columns:
        if column.name not in have:
            client.query(f"ALTER TABLE `{db}`.`{table.name}` ADD COLUMN `{column.name}` {dialect.column_type(column)}")
            added.append(column.name)
    return added


def migrate(client: Any) -> Dialect:
    """Bring the database up to date; the dialect of its server. Raises ``ClickHouseError``."""
    dialect = Dialect(client.version())
    db = client.database
    client.query(f"CREATE DATABASE IF NOT EXISTS `{db}`")
    client.query(
        f"CREATE TABLE IF NOT EXISTS `{db}`.`{MIGRATIONS_TABLE}` (`number` UInt32, `name` String, "
        f"`applied_at` DateTime) ENGINE = MergeTree() ORDER BY number"
    )
    applied = {int(row[0]) for row in client.query(f"SELECT number FROM `{db}`.`{MIGRATIONS_TABLE}`")}
    for number, name, table in MIGRATIONS:
        added = _ensure(client, dialect, table)
        if number not in applied:
            client.query(f"INSERT INTO `{db}`.`{MIGRATIONS_TABLE}` SELECT {number}, '{name}', now()")
            log.info("ClickHouse migration %d applied: %s", number, name)
        elif added:
            log.info("ClickHouse table %s: added columns %s", table.name, ", ".join(added))
    return dialect
