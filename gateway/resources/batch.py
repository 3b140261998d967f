"""``/batch_inference``: TensorZero's batch inference.

``POST`` checks every input (``tensorzero.batch.read_batch``) and starts the batch: through OpenAI's
Batches API when the variant's model has an OpenAI provider first (``tensorzero.batch_openai``), on
the gateway's own runner otherwise. ``GET /batch_inference/{batch_id}`` (and ``.../inference/{id}``
for one inference) answers the batch's state from its latest ``BatchRequest`` row: pending (an OpenAI
batch is polled, and finished here once the provider has completed it), completed (each inference as
``/inference`` answers it, read back from its rows), or failed.

A POST passes the pipeline as one chat request of the batch's model (``target``); ClickHouse is required; rows are queued
through the analytics writer and read back on clients of their own; a row just queued may not be
readable yet, so reads wait for it (boundedly).
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import falcon
import gevent
import gevent.lock
import ujson

from gateway.catalog import Candidate, Catalog
from gateway.config.schema import Config
from gateway.errors import GatewayError, InvalidRequestError, ProviderAnswerError, ServiceUnavailableError
from gateway.observe.clickhouse import ClickHouseError
from gateway.observe.lookups import Lookups
from gateway.observe.rows import AnalyticsRecorder
from gateway.observe.setup import Observers, clickhouse_url
from gateway.observe.tables import INFERENCES, Dialect
from gateway.observe.tensorzero_tables import (
    BATCH_INFERENCES,
    BATCH_REQUESTS,
    CHAT_INFERENCES,
    JSON_INFERENCES,
)
from gateway.outcome import Usage
from gateway.pipeline.resolve import resolve_model
from gateway.resources.function_calls import well_formed
from gateway.resources.respond import json_response
from gateway.routing import Router
from gateway.tensorzero import batch_openai
from gateway.tensorzero.answers import finish_reason
from gateway.tensorzero.batch import (
    Batch,
    Head,
    Runner,
    batch_params,
    conclude,
    failed,
    id_time,
    inference_rows,
    member_record,
    new_outcome,
    read_batch,
    request_row,
)
from gateway.tensorzero.functions import Function
from gateway.tensorzero.inference import NotFoundError
from gateway.tensorzero.templates import Templates
from providers.base import Attempt, ProviderError, ProviderHTTPError
from providers.http import UpstreamClient
from providers.jsonio import dumps

__all__ = ["NO_CLICKHOUSE", "BatchInference"]

NO_CLICKHOUSE = "batch inference needs ClickHouse ([gateway.observability] clickhouse_url)"
#: Batches this worker ended whose last row may not be readable yet: their state, so a poll right
#: after the end neither answers pending nor finishes an OpenAI batch twice.
_ENDED_KEPT = 1024
_WHO = ("api_key_id", "user_id", "project_id", "endpoint_id")


class _State:
    """A batch as its latest ``BatchRequest`` row has it."""

    __slots__ = ("head", "status", "params", "errors")

    def __init__(self, head: Head, status: str, params: dict[str, Any], errors: list[str]) -> None:
        self.head = head
        self.status = status
        self.params = params
        self.errors = errors


def _text(value: Any) -> str:
    """A column read as ``hex(...)``: the same on the native protocol and the HTTP interface."""
    return bytes.fromhex(value).decode() if isinstance(value, str) and value != "\\N" else ""


def _json(value: Any) -> Any:
    text = _text(value)
    try:
        return ujson.loads(text) if text else None
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "", "\\N") else None
    except (TypeError, ValueError):
        return None


def _uuid(value: str, name: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequestError(f"'{name}' must be a UUID", param=name) from None


def _upstream_failed(what: str, e: ProviderError) -> GatewayError:
    """A provider's refusal of the client's batch (a 4xx) passes through; any other failure is a 502."""
    if isinstance(e, ProviderHTTPError) and not e.retryable:
        return GatewayError(f"{what}: {e}", status=e.status, type_=e.type or "invalid_request_error")
    return GatewayError(f"{what} failed: {e.public}", status=502)


class BatchInference:
    path = "/batch_inference"
    error_format = "tensorzero"
    #: A POST goes through the pipeline as one chat request of the batch's model: its inputs are
    #: guarded, the request is counted against the model's limits and the key's quota.
    capability = "chat"
    required = ()

    def __init__(self, config: Config, observers: Observers, router: Router, catalog: Catalog,
                 functions: Mapping[str, Function], templates: Templates, http: UpstreamClient) -> None:
        self._catalog = catalog
        self._functions = functions
        self._templates = templates
        url, writer = clickhouse_url(config), observers.writer
        self._put = writer.put if writer is not None else None
        self._lookups = Lookups(url) if url is not None and writer is not None else None
        store = config.gateway.observability.store_content
        # Each finished inference is recorded as /inference's are: its rows and its ModelInference attempts.
        recorder = AnalyticsRecorder(self._put, None, analytics=False, store_content=store)
        self._hooks: list[Callable] = [recorder.finished]
        self._openai = batch_openai.OpenAIBatches(http, config.gateway.max_upstream_body_bytes)
        self._runner = Runner(router, self._put, self._hooks, self._ended_row)
        self._ended: OrderedDict[str, _State] = OrderedDict()
        self._locks: dict[str, list] = {}
        self._new_types: bool | None = None
        flush_s = config.gateway.observability.flush_interval_ms / 1000.0
        # As /feedback's: a row queued a moment ago is written within a flush interval (plus the insert).
        self._wait_s = 2 * flush_s + 1.0
        self._poll_s = min(max(flush_s / 2, 0.05), 0.5)

    def close(self, timeout: float) -> None:
        self._runner.close(timeout)
        self._openai.close()

    # --- POST ---------------------------------------------------------------------------------------

    def target(self, ctx: Any, body: dict) -> str:
        """The batch's model, for the stages: the batch is read (and refused) here, and its variant and
        episodes pinned in the body, so the read after the guardrails (which may redact) is the same."""
        self._require()
        batch = well_formed(read_batch, body, self._functions, self._catalog, self._templates,
                            lambda model: resolve_model(ctx, self._catalog, model))
        body["variant_name"] = batch.variant.name
        body["episode_ids"] = [item.episode_id for item in batch.items]
        return batch.variant.table.model

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._require()
        ctx = req.context
        batch = well_formed(read_batch, ctx.body, self._functions, self._catalog, self._templates,
                            lambda model: resolve_model(ctx, self._catalog, model))
        owner = {name: getattr(ctx, name) for name in _WHO if getattr(ctx, name, None) is not None}
        raw_request = raw_response = ""
        if batch_openai.served(batch.candidate):
            lines, params, raw_request, raw_response = self._submit(batch, owner)
        else:
            if self._runner.closing:
                raise ServiceUnavailableError("The gateway is stopping: the batch was not started")
            lines = [dumps(item.chat).decode() for item in batch.items]
            params = batch_params(batch, "gateway", owner=owner)
        # NOTE: the batch's rows are queued before it starts: its end is always its latest row.
        for row in inference_rows(batch, lines):
            self._put(BATCH_INFERENCES.name, row)
        self._put(BATCH_REQUESTS.name, request_row(batch.head, "pending", params, raw_request=raw_request,
                                                   raw_response=raw_response))
        if params["kind"] == "gateway":
            self._runner.start(batch, params, SimpleNamespace(**{n: owner.get(n) for n in _WHO}))
        json_response(resp, {"batch_id": batch.head.batch_id, "inference_ids": [i.inference_id for i in batch.items],
                             "episode_ids": [i.episode_id for i in batch.items]})

    def _submit(self, batch: Batch, owner: dict) -> tuple[list[str], dict, str, str]:
        """Upload the batch's file and create the provider's batch: the lines, params, raw request and answer."""
        candidate = batch.candidate
        try:
            lines = [self._openai.line(candidate, item.inference_id, item.chat) for item in batch.items]
            uploaded, created = self._openai.submit(candidate, lines)
        except ProviderError as e:
            raise _upstream_failed("The provider refused the batch", e) from None
        params = batch_params(batch, "openai", batch_id=created["id"], file_id=uploaded["id"], owner=owner)
        request = {"input_file_id": uploaded["id"], "endpoint": created.get("endpoint"),
                   "completion_window": created.get("completion_window")}
        return [line.decode() for line in lines], params, dumps(request).decode(), dumps(created).decode()

    # --- GET ----------------------------------------------------------------------------------------

    def on_get_batch(self, req: falcon.Request, resp: falcon.Response, batch_id: str) -> None:
        json_response(resp, self._answer(req.context, _uuid(batch_id, "batch_id"), None))

    def on_get_inference(self, req: falcon.Request, resp: falcon.Response, batch_id: str, inference_id: str) -> None:
        json_response(resp, self._answer(req.context, _uuid(batch_id, "batch_id"), _uuid(inference_id, "inference_id")))

    def _answer(self, ctx: Any, batch_id: str, inference_id: str | None) -> dict[str, Any]:
        self._require()
        state = self._state(batch_id)
        owner = state.params.get("owner") if isinstance(state.params.get("owner"), dict) else {}
        if ctx.api_key_id is not None and owner.get("api_key_id") not in (None, ctx.api_key_id):
            # NOTE: another key's batch is no batch to this one (not even that it exists).
            raise NotFoundError(f"Batch not found: {batch_id}")
        if inference_id is not None:
            self._member(state, inference_id)
        if state.status == "pending":
            state = self._ended.get(batch_id) or state
        fresh = None
        if state.status == "pending" and state.params.get("kind") == "openai":
            state, fresh = self._poll(state)
        if state.status == "pending":
            ids = [inference_id] if inference_id is not None else self._ids(state)
            return {"status": "pending", "batch_id": batch_id, "inference_ids": ids}
        if state.status != "completed":
            return {"status": "failed", "batch_id": batch_id, "errors": state.errors}
        if inference_id is not None:
            own = [e for e in state.errors if e.startswith(inference_id)]
            if own:  # the batch completed without this one
                return {"status": "failed", "batch_id": batch_id, "inference_id": inference_id, "errors": own}
        inferences = fresh if fresh is not None else self._inferences(state, inference_id)
        if inference_id is not None:
            inferences = [x for x in inferences if x["inference_id"] == inference_id]
        return {"status": "completed", "batch_id": batch_id, "inferences": inferences}

    def _require(self) -> None:
        if self._lookups is None:
            raise ServiceUnavailableError(NO_CLICKHOUSE)

    def _ended_row(self, batch_id: str, row: dict) -> None:
        head = Head(batch_id, row["function_name"], row["variant_name"], row["model_name"], row["model_provider_name"])
        self._ended[batch_id] = _State(head, row["status"], ujson.loads(row["batch_params"]), ujson.loads(row["errors"]))
        while len(self._ended) > _ENDED_KEPT:
            self._ended.popitem(last=False)

    # --- reading ClickHouse -------------------------------------------------------------------------

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return self._lookups.query(sql)
        except ClickHouseError as e:
            raise ServiceUnavailableError(f"ClickHouse is unavailable ({e}): the batch cannot be read") from None

    def _until(self, sql: str, enough: Callable[[list], bool]) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` once ``enough`` of them are readable, or what there is after the wait."""
        deadline = time.monotonic() + self._wait_s
        while True:
            rows = self._query(sql)
            if enough(rows) or time.monotonic() >= deadline:
                return rows
            gevent.sleep(self._poll_s)

    def _table(self, table: str) -> str:
        return f"`{self._lookups.database}`.`{table}`"

    def _state(self, batch_id: str) -> _State:
        # NOTE: an ended row first: a batch never goes back to pending, and the UUIDs of two rows
        # written in one second do not sort by time on every server.
        rows = self._until(
            f"SELECT hex(status), hex(batch_params), hex(errors), hex(function_name), hex(variant_name), "
            f"hex(model_name), hex(model_provider_name) FROM {self._table(BATCH_REQUESTS.name)} "
            f"WHERE batch_id = '{batch_id}' ORDER BY status = 'pending', timestamp DESC, toString(id) DESC LIMIT 1",
            bool)
        if not rows:
            raise NotFoundError(f"Batch not found: {batch_id}")
        status, params, errors, *names = rows[0]
        head = Head(batch_id, *(_text(v) for v in names))
        errors = _json(errors)
        return _State(head, _text(status), _json(params) or {}, errors if isinstance(errors, list) else [])

    def _member(self, state: _State, inference_id: str) -> None:
        rows = self._until(f"SELECT 1 FROM {self._table(BATCH_INFERENCES.name)} WHERE batch_id = "
                           f"'{state.head.batch_id}' AND inference_id = '{inference_id}' LIMIT 1", bool)
        if not rows:
            raise NotFoundError(f"Inference {inference_id} is not in batch {state.head.batch_id}")

    def _expected(self, state: _State) -> Callable[[list], bool]:
        count = state.params.get("inferences")
        return lambda rows: len({r[0] for r in rows}) >= count if isinstance(count, int) else bool(rows)

    def _ids(self, state: _State) -> list[str]:
        rows = self._until(f"SELECT toString(inference_id) FROM {self._table(BATCH_INFERENCES.name)} "
                           f"WHERE batch_id = '{state.head.batch_id}'", self._expected(state))
        return sorted({r[0] for r in rows})

    def _tags_column(self) -> str:
        if self._new_types is None:
            version = str(self._query("SELECT version()")[0][0])
            self._new_types = Dialect(tuple(int(p) for p in version.split(".")[:3] if p.isdigit())).new
        # A Map on current servers, a JSON string on old ones (``tables.Dialect``).
        return "toJSONString(tags)" if self._new_types else "tags"

    def _members(self, state: _State) -> list[dict[str, Any]]:
        """The batch's ``BatchModelInference`` rows, in the inputs' order."""
        rows = self._until(
            f"SELECT toString(inference_id), toString(episode_id), hex(input), hex(inference_params), "
            f"hex(tool_params), hex(ifNull(output_schema, '')), hex({self._tags_column()}), hex(raw_request) "
            f"FROM {self._table(BATCH_INFERENCES.name)} WHERE batch_id = '{state.head.batch_id}'",
            self._expected(state))
        members = {}
        for inference_id, episode_id, data, params, tools, schema, tags, raw in rows:
            members[inference_id] = {"inference_id": inference_id, "episode_id": episode_id, "input": _json(data),
                                     "inference_params": _json(params), "tool_params": _json(tools),
                                     "output_schema": _json(schema), "tags": _json(tags) or {}, "raw": _text(raw)}
        return [members[k] for k in sorted(members)]

    def _inferences(self, state: _State, only: str | None) -> list[dict[str, Any]]:
        """The answers of a completed batch, read back from the rows its inferences wrote."""
        head = state.head
        json_function = state.params.get("function_type") == "json"
        table = JSON_INFERENCES.name if json_function else CHAT_INFERENCES.name
        since = int(id_time(head.batch_id)) - 1
        ids = (f"= '{only}'" if only is not None else
               f"IN (SELECT inference_id FROM {self._table(BATCH_INFERENCES.name)} WHERE batch_id = '{head.batch_id}')")
        count = 1 if only is not None else state.params.get("completed", 0)
        enough = lambda rows: len({r[0] for r in rows}) >= count  # noqa: E731
        found = self._until(f"SELECT toString(id), toString(episode_id), hex(variant_name), hex(output) FROM "
                            f"{self._table(table)} WHERE id {ids} AND timestamp >= toDateTime({since})", enough)
        usage = self._until(
            f"SELECT toString(inference_id), ifNull(toString(input_tokens), ''), ifNull(toString(output_tokens), ''), "
            f"ifNull(toString(cached_input_tokens), ''), ifNull(toString(cost), ''), hex(ifNull(raw_response, '')) "
            f"FROM {self._table(INFERENCES.name)} WHERE inference_id {ids} AND result = 'ok' "
            f"AND timestamp >= toDateTime({since})", enough)
        used = {r[0]: r[1:] for r in usage}
        out = {}
        for inference_id, episode_id, variant_name, output in found:
            body: dict[str, Any] = {"inference_id": inference_id, "episode_id": episode_id,
                                    "variant_name": _text(variant_name)}
            output = _json(output)
            body["output" if json_function else "content"] = output
            input_tokens, output_tokens, cached, cost, raw = used.get(inference_id, ("", "", "", "", ""))
            body["usage"] = {"input_tokens": _int(input_tokens), "output_tokens": _int(output_tokens)}
            if _int(cached):
                body["usage"]["provider_cache_read_input_tokens"] = _int(cached)
            body["usage"]["cost"] = _number(cost)
            body["finish_reason"] = _finish(_json(raw), output, json_function)
            out[inference_id] = body
        return [out[k] for k in sorted(out)]

    # --- OpenAI batches -----------------------------------------------------------------------------

    def _candidate(self, head: Head) -> Candidate:
        try:
            route = self._catalog.resolve(head.model_name)
        except GatewayError:
            raise ServiceUnavailableError(f"The batch's model {head.model_name} is no longer served: it cannot "
                                          f"be polled") from None
        for candidate in route.chain:
            if candidate.model == head.model_name and candidate.provider_name == head.provider_name:
                return candidate
        raise ServiceUnavailableError(f"The batch's provider {head.model_name}/{head.provider_name} is no longer "
                                      f"configured: the batch cannot be polled")

    def _poll(self, state: _State) -> tuple[_State, list[dict] | None]:
        """Ask the provider; finish the batch once it has ended. One poll of a batch at a time per worker."""
        batch_id = state.head.batch_id
        entry = self._locks.setdefault(batch_id, [gevent.lock.Semaphore(), 0])
        entry[1] += 1
        try:
            with entry[0]:
                ended = self._ended.get(batch_id)
                if ended is not None:
                    return ended, None
                return self._poll_once(state)
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._locks[batch_id]

    def _poll_once(self, state: _State) -> tuple[_State, list[dict] | None]:
        candidate = self._candidate(state.head)
        try:
            remote = self._openai.poll(candidate, state.params["batch_id"])
            status = remote.get("status")
            results = self._openai.results(candidate, remote) if status == "completed" else None
        except ProviderError as e:
            raise _upstream_failed("Polling the provider's batch", e) from None
        if results is not None:
            return self._complete(state, candidate, remote, results)
        if status in batch_openai.FAILED:
            errors = [str(e.get("message") or e.get("code")) for e in (remote.get("errors") or {}).get("data") or ()
                      if isinstance(e, dict)] or [f"the provider's batch is {status}"]
            self._end(state, "failed", state.params, errors, remote)
            return self._ended[state.head.batch_id], None
        return state, None

    def _complete(self, state: _State, candidate: Candidate, remote: dict,
                  results: dict[str, batch_openai.Result]) -> tuple[_State, list[dict]]:
        """Each result made into its inference's answer and rows; then the batch's last row."""
        owner = state.params.get("owner") if isinstance(state.params.get("owner"), dict) else {}
        who = SimpleNamespace(**{n: owner.get(n) for n in _WHO})
        function_type = state.params.get("function_type") or "chat"
        members = self._members(state)
        if len(members) < state.params.get("inferences", 0):
            # Finishing now would leave the unread ones without a result for good: the next poll finishes it.
            raise ServiceUnavailableError("The batch's inferences are not all readable in ClickHouse yet: poll again")
        answers, errors = [], []
        for m in members:
            outcome = new_outcome(m["inference_id"], who, self._hooks)
            record, tools, schema = member_record(state.head, function_type, m["episode_id"], m["input"],
                                                  m["inference_params"], m["tool_params"], m["output_schema"],
                                                  m["tags"])
            attempt = Attempt(candidate.model, candidate.provider_name, outcome.started, outcome.started_at,
                              candidate.provider.type)
            attempt.duration_s = time.monotonic() - outcome.started
            outcome.attempts.append(attempt)
            outcome.request_body = m["raw"].encode()
            result = results.get(m["inference_id"])
            if result is None or result.body is None:
                attempt.result = "error"
                attempt.error = result.error if result is not None else "no result in the batch's output"
                errors.append(failed(outcome, ProviderAnswerError(attempt.error)))
                continue
            attempt.status_code = 200
            outcome.set_usage(Usage.parse(result.body.get("usage")), _batch_pricing(candidate), result.body)
            try:
                answers.append(conclude(outcome, record, tools, schema, result.body))
            except Exception as e:  # an answer that cannot be read fails its inference, not the batch
                errors.append(failed(outcome, e))
        params = {**state.params, "completed": len(answers), "output_file_id": remote.get("output_file_id"),
                  "error_file_id": remote.get("error_file_id")}
        self._end(state, "completed" if answers else "failed", params, errors, remote)
        return self._ended[state.head.batch_id], answers

    def _end(self, state: _State, status: str, params: dict, errors: list[str], remote: dict) -> None:
        row = request_row(state.head, status, params, errors=errors, raw_response=dumps(remote).decode())
        self._put(BATCH_REQUESTS.name, row)
        self._ended_row(state.head.batch_id, row)


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _finish(raw: Any, output: Any, json_function: bool) -> str | None:
    """The finish reason: the provider's answer's when it was stored (``store_content``), else what the
    output shows (a tool call, or a stop)."""
    if isinstance(raw, dict):
        choices = raw.get("choices") or [{}]
        reason = finish_reason(choices[0].get("finish_reason") if isinstance(choices[0], dict) else None)
        if reason is not None:
            return "stop" if json_function and reason == "tool_call" else reason
    if not json_function and isinstance(output, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_call" for b in output):
        return "tool_call"
    return "stop"


def _batch_pricing(candidate: Candidate) -> Any:
    """What a batch answer costs: the model's pricing, else the provider's ``batch_cost``, else its ``cost``."""
    config = candidate.provider.config
    if candidate.pricing is not None and candidate.pricing is not config.cost:
        return candidate.pricing
    return config.batch_cost or config.cost
