"""``POST /feedback``: TensorZero's feedback on an inference or an episode, checked and queued as a row.

The request is checked (``tensorzero.feedback``), its target looked up in ClickHouse
(``InferenceById`` / ``InferenceByEpisodeId``), and the row queued through the analytics writer, as
every other row is (so a ClickHouse outage spools it rather than losing it). Not an inference route:
it has no ``capability`` (the resolve stage leaves it alone), but it needs a key when auth is on.
"""

from __future__ import annotations

import time
from typing import Any

import falcon
import gevent
import gevent.lock
import ujson

from gateway.config.schema import Config
from gateway.errors import ServiceUnavailableError
from gateway.observe.clickhouse import ClickHouseError
from gateway.observe.lookups import Lookups
from gateway.observe.setup import Observers, clickhouse_url
from gateway.observe.tensorzero_tables import (
    CHAT_INFERENCES,
    INFERENCE_BY_EPISODE,
    INFERENCE_BY_ID,
    JSON_INFERENCES,
)
from gateway.outcome import new_inference_id
from gateway.pipeline.resolve import read_json_body
from gateway.resources.respond import json_response
from gateway.tensorzero.feedback import Feedback as FeedbackRequest
from gateway.tensorzero.feedback import demonstration, read, row
from gateway.tensorzero.functions import DEFAULT_FUNCTION
from gateway.tensorzero.inference import NotFoundError
from gateway.tensorzero.templates import Schema

__all__ = ["Feedback"]

NO_CLICKHOUSE = "feedback needs ClickHouse ([gateway.observability] clickhouse_url)"
class Feedback:
    path = "/feedback"
    error_format = "tensorzero"
    # No ``capability``: not an inference (no model to resolve, limit or guard). ``auth`` is left at
    # its default, so the auth stage asks for a key here as on /inference.

    def __init__(self, config: Config, observers: Observers) -> None:
        tensorzero = config.tensorzero  # None for a config built without TensorZero's tables
        self._metrics = tensorzero.metrics if tensorzero is not None else {}
        self._functions = tensorzero.functions if tensorzero is not None else {}
        self._max_body = config.gateway.max_body_bytes
        url = clickhouse_url(config)
        writer = observers.writer
        self._put = writer.put if writer is not None else None
        self._lookups = Lookups(url) if url is not None and writer is not None else None
        flush_s = config.gateway.observability.flush_interval_ms / 1000.0
        # A row is queued when its inference's answer is complete and written within a flush interval
        # (plus the insert): a feedback sent right after its inference may come before its row.
        self._wait_s = 2 * flush_s + 1.0
        self._poll_s = min(max(flush_s / 2, 0.05), 0.5)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        feedback = read(read_json_body(req, self._max_body), self._metrics)
        if self._lookups is None:
            raise ServiceUnavailableError(NO_CLICKHOUSE)
        function_name = self._find(feedback)
        value = self._demonstration(feedback, function_name) if feedback.kind == "demonstration" else None
        feedback_id = new_inference_id()
        if not feedback.dryrun:
            table, fields = row(feedback, feedback_id, time.time(), value)
            self._put(table, fields)
        json_response(resp, {"feedback_id": feedback_id})

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._lookups.query(sql)
        except ClickHouseError as e:
            raise ServiceUnavailableError(f"ClickHouse is unavailable ({e}): the feedback's target cannot be "
                                          f"looked up") from None

    def _find(self, feedback: FeedbackRequest) -> str | None:
        """Wait (boundedly) for the target's row; the inference's function name (None for an episode)."""
        db, target = self._lookups.database, feedback.target_id
        if feedback.level == "inference":
            # NOTE: hex(): the HTTP interface's TabSeparated escapes what a name may hold; hex reads alike on both.
            sql = f"SELECT hex(function_name) FROM `{db}`.`{INFERENCE_BY_ID.name}` WHERE id = '{target}' LIMIT 1"
        else:
            sql = f"SELECT 1 FROM `{db}`.`{INFERENCE_BY_EPISODE.name}` WHERE episode_id = '{target}' LIMIT 1"
        deadline = time.monotonic() + self._wait_s
        while True:
            rows = self._query(sql)
            if rows:
                return bytes.fromhex(rows[0][0]).decode() if feedback.level == "inference" else None
            if time.monotonic() >= deadline:
                raise NotFoundError(f"{feedback.level.capitalize()} not found: {target}")
            gevent.sleep(self._poll_s)

    def _demonstration(self, feedback: FeedbackRequest, function_name: str) -> str:
        """The demonstration checked against what its inference ran with: the tools it offered or the
        output schema it had (a request may add tools or replace the schema), else the config's."""
        if function_name == DEFAULT_FUNCTION:
            function_type, tools, schema = "chat", {}, None
        else:
            function = self._functions.get(function_name)
            if function is None:
                raise NotFoundError(f"Unknown function: {function_name} (the function of inference "
                                    f"{feedback.target_id} is no longer in the config)")
            function_type, schema = function.type, function.output_schema
            tools = {t.name: t.schema for t in function.tools}
        db, target = self._lookups.database, feedback.target_id
        if function_type == "json":
            rows = self._query(f"SELECT hex(output_schema) FROM `{db}`.`{JSON_INFERENCES.name}` "
                               f"WHERE id = '{target}' LIMIT 1")
            document = _stored(rows)
            if isinstance(document, dict):
                try:
                    schema = Schema(document)
                except ValueError:
                    pass  # not a schema (it was checked when the inference ran): keep the config's
        else:
            rows = self._query(f"SELECT hex(tool_params) FROM `{db}`.`{CHAT_INFERENCES.name}` "
                               f"WHERE id = '{target}' LIMIT 1")
            stored = _stored(rows)
            offered = stored.get("tools_available") if isinstance(stored, dict) else None
            if isinstance(offered, list):
                tools = _tools(offered, tools)
        return demonstration(feedback.value, function_type, tools, schema)


def _stored(rows: list[tuple[Any, ...]]) -> Any:
    """The JSON a lookup's one hex column holds, or None."""
    if not rows:
        return None
    try:
        return ujson.loads(bytes.fromhex(rows[0][0]).decode())
    except ValueError:
        return None


def _tools(offered: list, configured: dict[str, Schema]) -> dict[str, Schema]:
    """The tools an inference offered (its ``tool_params.tools_available``), name -> parameter schema."""
    tools = {}
    for tool in offered:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        name = tool["name"]
        try:
            tools[name] = Schema(tool.get("parameters") or {})
        except ValueError:
            if name in configured:
                tools[name] = configured[name]
    return tools
