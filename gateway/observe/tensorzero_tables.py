"""TensorZero's own tables (its data model page): inferences of functions, the lookups feedback needs,
the feedback itself, and batch state. Written by the same writer as the gateway's tables.

Where TensorZero stores ``UInt128`` ids for its lookups and ``Array(String)`` lists, these tables keep
the ``UUID`` and a JSON string: Debian's ClickHouse 18.16 has neither type.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.observe.tables import Column, Table

__all__ = ["BATCH_INFERENCES", "BATCH_REQUESTS", "CHAT_INFERENCES", "FEEDBACK", "INFERENCE_BY_EPISODE",
           "INFERENCE_BY_ID", "JSON_INFERENCES", "TENSORZERO_TABLES"]


def _c(name: str, kind: str = "str", nullable: bool = False) -> Column:
    return Column(name, kind, nullable)


def _table(name: str, columns: list[Column], order_by: str = "(timestamp, id)") -> Table:
    return Table(name, columns, order_by=order_by, time_column="timestamp")


CHAT_INFERENCES = _table("ChatInference", [
    _c("id", "uuid"), _c("function_name"), _c("variant_name"), _c("episode_id", "uuid"), _c("input"), _c("output"),
    _c("tool_params"), _c("inference_params"), _c("processing_time_ms", "int", True), _c("timestamp", "time"),
    _c("tags", "map"), _c("extra_body", nullable=True), _c("ttft_ms", "int", True), _c("dynamic_tools"),
    _c("allowed_tools", nullable=True), _c("tool_choice", nullable=True), _c("parallel_tool_calls", "bool", True),
])
JSON_INFERENCES = _table("JsonInference", [
    _c("id", "uuid"), _c("function_name"), _c("variant_name"), _c("episode_id", "uuid"), _c("input"), _c("output"),
    _c("output_schema"), _c("inference_params"), _c("processing_time_ms", "int", True), _c("timestamp", "time"),
    _c("tags", "map"), _c("extra_body", nullable=True), _c("auxiliary_content"), _c("ttft_ms", "int", True),
])
INFERENCE_BY_ID = _table("InferenceById", [
    _c("id", "uuid"), _c("function_name"), _c("variant_name"), _c("episode_id", "uuid"),
    _c("function_type", "lowstr"), _c("timestamp", "time"),
], order_by="(id)")
INFERENCE_BY_EPISODE = _table("InferenceByEpisodeId", [
    _c("episode_id", "uuid"), _c("id", "uuid"), _c("function_name"), _c("variant_name"),
    _c("function_type", "lowstr"), _c("timestamp", "time"),
], order_by="(episode_id, id)")

_FEEDBACK_TAIL = [_c("timestamp", "time"), _c("tags", "map")]
#: The feedback tables, by the kind of value they hold.
FEEDBACK: Mapping[str, Table] = {
    "boolean": _table("BooleanMetricFeedback", [_c("id", "uuid"), _c("target_id", "uuid"), _c("metric_name"),
                                                _c("value", "bool"), *_FEEDBACK_TAIL]),
    "float": _table("FloatMetricFeedback", [_c("id", "uuid"), _c("target_id", "uuid"), _c("metric_name"),
                                            _c("value", "float"), *_FEEDBACK_TAIL]),
    "comment": _table("CommentFeedback", [_c("id", "uuid"), _c("target_id", "uuid"), _c("target_type", "lowstr"),
                                          _c("value"), *_FEEDBACK_TAIL]),
    "demonstration": _table("DemonstrationFeedback", [_c("id", "uuid"), _c("inference_id", "uuid"), _c("value"),
                                                      *_FEEDBACK_TAIL]),
}

BATCH_REQUESTS = _table("BatchRequest", [
    _c("batch_id", "uuid"), _c("id", "uuid"), _c("batch_params"), _c("model_name"), _c("model_provider_name"),
    _c("status", "lowstr"), _c("errors"), _c("timestamp", "time"), _c("raw_request"), _c("raw_response"),
    _c("function_name"), _c("variant_name"),
], order_by="(batch_id, id)")
BATCH_INFERENCES = _table("BatchModelInference", [
    _c("inference_id", "uuid"), _c("batch_id", "uuid"), _c("function_name"), _c("variant_name"),
    _c("episode_id", "uuid"), _c("input"), _c("system", nullable=True), _c("input_messages"), _c("tool_params"),
    _c("inference_params"), _c("raw_request"), _c("model_name"), _c("model_provider_name"),
    _c("output_schema", nullable=True), _c("tags", "map"), _c("timestamp", "time"),
], order_by="(batch_id, inference_id)")

TENSORZERO_TABLES: Mapping[str, Table] = {t.name: t for t in (
    CHAT_INFERENCES, JSON_INFERENCES, INFERENCE_BY_ID, INFERENCE_BY_EPISODE, *FEEDBACK.values(),
    BATCH_REQUESTS, BATCH_INFERENCES)}
