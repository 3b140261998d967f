"""The analytics rows of a request, made by a finish hook from its outcome and queued for the writer.

``GatewayAnalytics``: one row per request (blocked and failed ones too), enriched with GeoIP and the
user agent. ``ModelInference``: one row per provider attempt, failed ones too; usage and cost on the
one that answered. No credential and no client header other than the User-Agent goes into a row.
"""

from __future__ import annotations

from typing import Any

from gateway.observe.geoip import NOWHERE, GeoIP
from gateway.observe.tables import ANALYTICS, BLOCKING_EVENTS, GUARDRAILS, INFERENCES
from gateway.observe.tensorzero_tables import (
    CHAT_INFERENCES,
    INFERENCE_BY_EPISODE,
    INFERENCE_BY_ID,
    JSON_INFERENCES,
)
from gateway.observe.useragent import parse_agent
from gateway.outcome import Outcome, new_inference_id
from providers.jsonio import dumps

__all__ = ["AnalyticsRecorder"]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    try:
        return dumps(value).decode()
    except (TypeError, ValueError):
        return None


class AnalyticsRecorder:
    """``put(table, row)`` queues a row (the writer's); ``analytics`` says whether to make the
    ``GatewayAnalytics`` row; ``store_content`` whether bodies go into ``ModelInference``."""

    def __init__(self, put, geoip: GeoIP | None, *, analytics: bool, store_content: bool) -> None:
        self._put = put
        self._geoip = geoip if geoip is not None and geoip.enabled else None
        self._analytics = analytics
        self._store_content = store_content

    def finished(self, outcome: Outcome) -> None:
        ctx = outcome.context  # the context stage's RequestContext: who asked
        if self._analytics and outcome.recorded:
            self._put(ANALYTICS.name, self._analytics_row(outcome, ctx))
        if outcome.blocks:
            place = self._geoip.lookup(ctx.client_ip) if self._geoip is not None and ctx.client_ip else NOWHERE
            for match in outcome.blocks:
                self._put(BLOCKING_EVENTS.name, self._blocking_row(outcome, ctx, match, place.country_code))
        for scan in outcome.guardrail_scans or ():
            self._put(GUARDRAILS.name, {
                "id": new_inference_id(), "inference_id": outcome.inference_id, "guardrail_profile": scan.profile,
                "guard_type": scan.guard_type, "flagged": scan.flagged, "confidence_score": scan.score,
                "provider_results": dumps({"found": scan.kinds}).decode(), "action_taken": scan.action,
                "scan_latency_ms": scan.latency_ms, "scan_started_at": scan.started_at,
            })
        if outcome.inference is not None and 0 < outcome.status < 400:
            for table, row in _tensorzero_rows(outcome):
                self._put(table, row)
        attempts = outcome.attempts
        if attempts:
            request = _text(outcome.request_body) if self._store_content else None
            last = len(attempts) - 1
            for i, attempt in enumerate(attempts):
                self._put(INFERENCES.name, self._inference_row(outcome, ctx, attempt, i, i == last, request))

    def _analytics_row(self, o: Outcome, ctx: Any) -> dict:
        client_ip = ctx.client_ip
        place = self._geoip.lookup(client_ip) if self._geoip is not None and client_ip else NOWHERE
        user_agent = ctx.user_agent
        agent = parse_agent(user_agent)
        elapsed = o.finished - o.started
        return {
            "id": new_inference_id(),
            "inference_id": o.inference_id if o.endpoint_type is not None else None,
            "client_ip": client_ip,
            "proxy_chain": ctx.proxy_chain,
            "country_code": place.country_code,
            "country_name": place.country_name,
            "region": place.region,
            "city": place.city,
            "latitude": place.latitude,
            "longitude": place.longitude,
            "timezone": place.timezone,
            "asn": place.asn,
            "isp": place.isp,
            "user_agent": user_agent or None,
            "device_type": agent.device_type,
            "browser_name": agent.browser_name,
            "browser_version": agent.browser_version,
            "os_name": agent.os_name,
            "os_version": agent.os_version,
            "is_bot": agent.is_bot,
            "method": o.method,
            "path": o.path,
            "body_size": o.bytes_in,
            "api_key_id": ctx.api_key_id,
            "user_id": ctx.user_id,
            "project_id": ctx.project_id,
            "endpoint_id": ctx.endpoint_id,
            "model_id": ctx.model_id,
            "request_timestamp": o.started_at,
            "response_timestamp": o.started_at + elapsed,
            "gateway_processing_ms": _ms(o.overhead_s) or 0.0,
            "total_duration_ms": _ms(elapsed),
            "model_name": o.model_name or (o.model or None),
            "model_provider": o.answered_provider,
            "status_code": o.status,
            "response_size": o.bytes_out,
            "is_stream": o.is_stream,
            "stream_cut": o.stream_cut,
            "error_type": o.error_type or (f"stream_cut_{o.cut_reason}" if o.stream_cut else None),
            "error_message": o.error_message,
            "is_blocked": o.is_blocked,
            "block_reason": o.block_reason,
            "block_rule_id": o.block_rule_id,
            "tags": o.tags,
        }

    def _blocking_row(self, o: Outcome, ctx: Any, match: Any, country_code: str | None) -> dict:
        rule = match.rule
        return {
            "id": new_inference_id(),
            "rule_id": rule.id,
            "client_ip": ctx.client_ip,
            "country_code": country_code,
            "user_agent": ctx.user_agent or None,
            "request_path": o.path,
            "request_method": o.method,
            "api_key_id": ctx.api_key_id,
            "project_id": ctx.project_id,
            "endpoint_id": ctx.endpoint_id,
            "model_name": o.model_name or o.model or None,
            "rule_type": rule.rule_type,
            "rule_name": rule.name,
            "rule_priority": rule.priority,
            "block_reason": match.reason,
            "action_taken": rule.action,
            "blocked_at": o.started_at,
        }

    def _inference_row(self, o: Outcome, ctx: Any, attempt: Any, index: int, answering: bool,
                       request: str | None) -> dict:
        ok = attempt.result == "ok" or attempt.result == "cut"
        usage = o.usage if answering and ok else None
        response = None
        if self._store_content and answering and ok:
            response = _text(o.response_body)
        return {
            "id": attempt.row_id or new_inference_id(),
            "inference_id": o.inference_id,
            "attempt": index + 1,
            "model_name": attempt.model,
            "model_provider_name": attempt.provider,
            "endpoint_type": o.endpoint_type or "",
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cached_input_tokens": usage.cached_input_tokens if usage else None,
            "reasoning_tokens": usage.reasoning_tokens if usage else None,
            "response_time_ms": _ms(attempt.duration_s),
            "ttft_ms": _ms(attempt.first_byte_s),
            "status_code": attempt.status_code if attempt.status_code is not None else (200 if ok else None),
            "result": attempt.result,
            "error": attempt.error,
            "cost": o.cost if answering and ok else None,
            "currency": o.currency if answering and ok else None,
            "is_stream": o.is_stream,
            "timestamp": attempt.started_at,
            "raw_request": request,
            "raw_response": response,
            "api_key_id": ctx.api_key_id,
            "user_id": ctx.user_id,
            "project_id": ctx.project_id,
            "endpoint_id": ctx.endpoint_id,
        }


def _json(value: Any) -> str:
    return dumps(value).decode()


def _tensorzero_rows(o: Outcome) -> list[tuple[str, dict]]:
    """A ``/inference`` request's ``ChatInference`` or ``JsonInference`` row and its two lookups."""
    r = o.inference
    common = {"id": o.inference_id, "function_name": r.function_name, "variant_name": r.variant_name,
              "episode_id": r.episode_id, "timestamp": o.started_at}
    row = {**common, "input": _json(r.input), "output": _json(r.output), "inference_params": _json(r.inference_params),
           "processing_time_ms": round((o.finished - o.started) * 1000.0), "tags": r.tags,
           "extra_body": _json(r.extra_body) if r.extra_body is not None else None,
           "ttft_ms": round(r.ttft_ms) if r.ttft_ms is not None else None}
    if r.function_type == "json":
        row.update(output_schema=_json(r.output_schema or {}), auxiliary_content="")
        table = JSON_INFERENCES.name
    else:
        tools = r.tool_params
        row.update(tool_params=_json(tools), dynamic_tools=_json([]),
                   tool_choice=_json(tools.get("tool_choice")), allowed_tools=None,
                   parallel_tool_calls=tools.get("parallel_tool_calls"))
        table = CHAT_INFERENCES.name
    lookup = {**common, "function_type": r.function_type}
    return [(table, row), (INFERENCE_BY_ID.name, dict(lookup)), (INFERENCE_BY_EPISODE.name, dict(lookup))]
