"""``POST /batch_inference`` read and checked, the rows of a batch, and the batches the gateway runs itself.

``read_batch`` checks every input up front: each one is read as the ``/inference`` request it stands
for (``plan``), pinned to the one variant the batch runs, and rendered into the chat body that variant
sends (``chat_body``), so a bad input is a 400 naming its index before anything goes out. ``Runner``
runs a batch whose provider has no batch API in background greenlets, bounded per batch and per
worker, through ``Router.chat``. Each finished inference is an ``Outcome`` whose finish hook (the
analytics recorder) queues its ChatInference / JsonInference, lookup and ModelInference rows, as
``/inference``'s do; the batch's state is its latest ``BatchRequest`` row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import gevent
import gevent.lock
import gevent.pool

from gateway.catalog import Candidate, Catalog, ModelRoute
from gateway.errors import GatewayError, InvalidRequestError
from gateway.loop import yield_to_loop
from gateway.observe.tensorzero_tables import BATCH_REQUESTS
from gateway.outcome import Outcome, new_inference_id
from gateway.routing import Router
from gateway.tensorzero.answers import answer
from gateway.tensorzero.functions import Function, Tool, Variant
from gateway.tensorzero.inference import NotFoundError, Plan, Record, plan
from gateway.tensorzero.native import ToolSet, chat_body, chat_params, tool_params, tool_set
from gateway.tensorzero.templates import Schema, Templates
from providers.base import ChatRequest
from providers.jsonio import dumps

__all__ = ["Batch", "Head", "Item", "Runner", "batch_params", "conclude", "failed", "id_time", "inference_rows",
           "member_record", "new_outcome", "read_batch", "request_row", "tools_of"]

log = logging.getLogger(__name__)

#: The per-inference lists of the request, and the ``/inference`` field each element becomes.
_LISTS = {"episode_ids": "episode_id", "tags": "tags", "output_schemas": "output_schema",
          "allowed_tools": "allowed_tools", "additional_tools": "additional_tools", "tool_choice": "tool_choice",
          "parallel_tool_calls": "parallel_tool_calls"}
#: The batch field to name when an ``/inference`` check fails on one of its fields.
_FIELD_OF = {**{single: name for name, single in _LISTS.items()}, "params": "params"}
_FIELDS = frozenset({"function_name", "inputs", "params", "variant_name", "credentials", "stream", "dryrun", *_LISTS})
#: Inputs checked between two yields to the hub: rendering a large batch must not hold it for long.
_SLICE = 64


def _bad(message: str, param: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param)


def id_time(value: str) -> float:
    """The Unix time of a UUIDv7 (its first 48 bits are milliseconds)."""
    return int(value.replace("-", "")[:12], 16) / 1000.0


class Head:
    """What every ``BatchRequest`` row of one batch repeats."""

    __slots__ = ("batch_id", "function_name", "variant_name", "model_name", "provider_name")

    def __init__(self, batch_id: str, function_name: str, variant_name: str, model_name: str,
                 provider_name: str) -> None:
        self.batch_id = batch_id
        self.function_name = function_name
        self.variant_name = variant_name
        self.model_name = model_name
        self.provider_name = provider_name


class Item:
    """One inference of a batch: its ids, its ``/inference`` body, its tools and the chat body it sends."""

    __slots__ = ("inference_id", "episode_id", "tools", "chat", "record", "output_schema")

    def __init__(self, inference_id: str, found: Plan, tools: ToolSet, chat: dict[str, Any], record: Record) -> None:
        self.inference_id = inference_id
        self.episode_id = found.episode_id
        self.tools = tools
        self.chat = chat
        self.record = record
        self.output_schema = found.output_schema


class Batch:
    __slots__ = ("head", "function", "variant", "route", "candidate", "items")

    def __init__(self, head: Head, function: Function, variant: Variant, route: ModelRoute,
                 items: list[Item]) -> None:
        self.head = head
        self.function = function
        self.variant = variant
        self.route = route
        #: The model's first provider: whether it has a batch API decides how the batch runs.
        self.candidate: Candidate = route.chain[0]
        self.items = items


def _column(body: Mapping[str, Any], name: str, n: int) -> list[Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        got = f"{len(value)} elements" if isinstance(value, list) else "not a list"
        raise _bad(f"'{name}' must be a list with one element per input ({n}, null for none); it has {got}", name)
    return value


def _params(value: Any, n: int) -> list[dict[str, Any]]:
    """``{variant_type: {param: [one per input]}}`` made into each input's ``params``."""
    out: list[dict[str, Any]] = [{} for _ in range(n)]
    if value is None:
        return out
    if not isinstance(value, dict):
        raise _bad("'params' must be an object: {variant_type: {param: [one value per input]}}", "params")
    for kind, table in value.items():
        if not isinstance(table, dict):
            raise _bad(f"params.{kind} must be an object of lists", "params")
        for name, values in table.items():
            if values is None:
                continue
            if not isinstance(values, list) or len(values) != n:
                raise _bad(f"params.{kind}.{name} must be a list with one value per input ({n}, null for none)",
                           "params")
            for i, v in enumerate(values):
                if v is not None:
                    out[i].setdefault(kind, {})[name] = v
    return out


def _variant(function: Function, pinned: Any, batch_id: str) -> Variant:
    """The one variant of the batch: the pinned one, else one drawn for the batch (as for an episode)."""
    if pinned is not None:
        if not isinstance(pinned, str) or pinned not in function.variants:
            raise NotFoundError(f"Unknown variant: {pinned}")
        variant = function.variants[pinned]
        if not variant.served:
            raise _bad(f"variant {pinned!r} is of type {variant.type!r}: batch inference runs only chat_completion "
                       f"variants", "variant_name")
        return variant
    variants = [v for v in function.plan(batch_id) if v.served]
    if not variants:
        raise _bad(f"function {function.name!r} has no chat_completion variant to sample for a batch", "variant_name")
    return variants[0]


def read_batch(body: Mapping[str, Any], functions: Mapping[str, Function], catalog: Catalog,
               templates: Templates, resolve: Callable[[str], ModelRoute] | None = None) -> Batch:
    """The batch ``body`` asks for, every input checked and rendered; ``GatewayError`` when it is refused."""
    unknown = sorted(k for k in body if k not in _FIELDS)
    if unknown:
        # NOTE: ignored, as /inference ignores them: TensorZero's client sends fields of newer gateways.
        log.debug("/batch_inference: fields ignored: %s", ", ".join(unknown))
    function_name = body.get("function_name")
    if not isinstance(function_name, str) or not function_name:
        raise _bad("'function_name' is required (a string)", "function_name")
    function = functions.get(function_name)
    if function is None:
        raise NotFoundError(f"Unknown function: {function_name}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("'inputs' is required: a non-empty list of /inference inputs", "inputs")
    for flag, what in (("stream", "streaming"), ("dryrun", "a dry run")):
        if body.get(flag):
            raise _bad(f"batch inference does not support {what} ('{flag}')", flag)
    if body.get("credentials"):
        raise _bad("'credentials' is not supported: providers use the gateway's own keys", "credentials")
    n = len(inputs)
    columns = {name: _column(body, name, n) for name in _LISTS}
    params = _params(body.get("params"), n)
    batch_id = new_inference_id()
    variant = _variant(function, body.get("variant_name"), batch_id)
    # NOTE: ``resolve`` goes through the key's grants (the route's); without one, by name.
    route = resolve(variant.table.model) if resolve is not None else catalog.resolve(variant.table.model)
    # Sorted, so the ids' order (UUIDv7: time, then random bits) is the inputs' order when read back.
    ids = sorted(new_inference_id() for _ in range(n))
    items = []
    for i, data in enumerate(inputs):
        if i and not i % _SLICE:
            yield_to_loop()
        one: dict[str, Any] = {"function_name": function_name, "input": data, "variant_name": variant.name}
        if params[i]:
            one["params"] = params[i]
        for name, single in _LISTS.items():
            if columns[name] is not None and columns[name][i] is not None:
                one[single] = columns[name][i]
        try:
            found = plan(one, functions)
            tools = tool_set(function, one)
            chat = chat_body(function, variant, one, tools, templates, found.output_schema)
        except InvalidRequestError as e:
            field = _FIELD_OF.get(e.param or "", "inputs")
            raise _bad(f"{field}[{i}]: {e}", field) from None
        record = Record(found, variant, one, {"chat_completion": chat_params(chat)}, tool_params(tools))
        items.append(Item(ids[i], found, tools, chat, record))
    head = Head(batch_id, function.name, variant.name, route.name, route.chain[0].provider_name)
    return Batch(head, function, variant, route, items)


# --- rows -------------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return dumps(value).decode()


def inference_rows(batch: Batch, raw_requests: Iterable[str]) -> list[dict[str, Any]]:
    """The ``BatchModelInference`` rows: what each inference needs to be finished by any instance."""
    head = batch.head
    rows = []
    for item, raw in zip(batch.items, raw_requests, strict=True):
        messages = item.chat["messages"]
        system = messages[0]["content"] if messages and messages[0].get("role") == "system" else None
        record = item.record
        rows.append({
            "inference_id": item.inference_id, "batch_id": head.batch_id, "function_name": head.function_name,
            "variant_name": head.variant_name, "episode_id": item.episode_id, "input": _json(record.input),
            "system": system,
            "input_messages": _json(messages[1:] if system is not None else messages),
            "tool_params": _json(record.tool_params), "inference_params": _json(record.inference_params),
            "raw_request": raw, "model_name": head.model_name, "model_provider_name": head.provider_name,
            "output_schema": _json(record.output_schema) if record.output_schema is not None else None,
            "tags": record.tags, "timestamp": id_time(item.inference_id),
        })
    return rows


def request_row(head: Head, status: str, params: Mapping[str, Any], *, errors: Iterable[str] = (),
                raw_request: str = "", raw_response: str = "") -> dict[str, Any]:
    """A ``BatchRequest`` row: one when the batch is made, one more when it ends (the latest is its state)."""
    return {"batch_id": head.batch_id, "id": new_inference_id(), "batch_params": _json(dict(params)),
            "model_name": head.model_name, "model_provider_name": head.provider_name, "status": status,
            "errors": _json(list(errors)), "timestamp": time.time(), "raw_request": raw_request,
            "raw_response": raw_response, "function_name": head.function_name, "variant_name": head.variant_name}


def tools_of(stored: Any) -> ToolSet:
    """The tools an inference offered, from its stored ``tool_params`` (to check the calls it answers)."""
    stored = stored if isinstance(stored, dict) else {}
    tools = {}
    for tool in stored.get("tools_available") or ():
        if isinstance(tool, dict) and isinstance(tool.get("name"), str):
            try:
                tools[tool["name"]] = Tool(tool["name"], tool["name"], str(tool.get("description") or ""),
                                           tool.get("parameters") or {"type": "object"}, bool(tool.get("strict")))
            except ValueError:
                continue
    return ToolSet(tools, stored.get("tool_choice"), stored.get("parallel_tool_calls"))


def new_outcome(inference_id: str, who: Any, hooks: list[Callable[[Outcome], None]]) -> Outcome:
    """The outcome one inference of a batch is recorded by; it started when the batch was made."""
    started_at = id_time(inference_id)
    outcome = Outcome(inference_id, time.monotonic() - max(time.time() - started_at, 0.0), started_at, hooks)
    outcome.context = who
    outcome.endpoint_type = "chat"
    outcome.method, outcome.path = "POST", "/batch_inference"
    return outcome


def conclude(outcome: Outcome, record: Record, tools: ToolSet, schema: Schema | None,
             chat_answer: dict[str, Any]) -> dict[str, Any]:
    """The ``/inference`` answer of one finished inference; its rows are queued as its outcome finishes."""
    head = {"inference_id": outcome.inference_id, "episode_id": record.episode_id, "variant_name": record.variant_name}
    made = answer(chat_answer, record.function_type, tools, schema, head, outcome.cost)
    record.output = made.output
    outcome.inference = record
    outcome.response_body = chat_answer
    outcome.status = 200
    outcome.finish()
    return made.body


def failed(outcome: Outcome, error: BaseException) -> str:
    """Finish an inference that has no answer (its attempts are still recorded); the batch's error for it."""
    outcome.status = error.status if isinstance(error, GatewayError) else 500
    outcome.error_message = str(error) if isinstance(error, GatewayError) else "the inference failed"
    outcome.finish()
    return f"{outcome.inference_id}: {outcome.error_message}"


# --- batches the gateway runs ------------------------------------------------------------------------


class _Running:
    __slots__ = ("batch", "params", "greenlet", "pool")

    def __init__(self, batch: Batch, params: dict[str, Any], pool: gevent.pool.Pool) -> None:
        self.batch = batch
        self.params = params
        self.pool = pool
        self.greenlet: gevent.Greenlet | None = None


class Runner:
    """Runs batches in greenlets of their own (they outlive the request that made them): at most
    ``per_batch`` inferences of one batch at once and ``total`` of all, so one large batch neither
    floods a provider nor starves the others. ``put`` queues rows; ``ended(batch_id, row)`` hears of
    each batch's last ``BatchRequest`` row."""

    def __init__(self, router: Router, put: Callable[[str, dict], None], hooks: list[Callable[[Outcome], None]],
                 ended: Callable[[str, dict], None], *, per_batch: int = 8, total: int = 64,
                 batches: int = 32) -> None:
        self._router = router
        self._put = put
        self._hooks = hooks
        self._ended = ended
        self._per_batch = per_batch
        self._slots = gevent.lock.BoundedSemaphore(total)
        #: The most batches a worker runs at once (each holds its rendered inputs in memory).
        self._batches = batches
        self._running: dict[str, _Running] = {}
        self._closing = False

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self, batch: Batch, params: dict[str, Any], who: Any) -> None:
        if self._closing:
            raise GatewayError("The gateway is stopping: the batch was not started", status=503)
        if len(self._running) >= self._batches:
            raise GatewayError(f"This gateway runs {self._batches} batches at most at once; retry later", status=503)
        running = self._running[batch.head.batch_id] = _Running(batch, params, gevent.pool.Pool(self._per_batch))
        running.greenlet = gevent.spawn(self._run, running, who)

    def _run(self, running: _Running, who: Any) -> None:
        batch = running.batch
        errors: list[str] = []
        try:
            for item in batch.items:
                running.pool.spawn(self._one, batch, item, who, errors)  # waits while the pool is full
            running.pool.join()
        except gevent.GreenletExit:
            return  # stopped by close(), which records the batch as failed
        except Exception:
            # NOTE: a batch that ends without its last row would be pending for good.
            log.exception("batch %s failed", batch.head.batch_id)
            running.pool.kill(block=False)
            self._finish(batch, running.params, "failed", ["the batch failed in the gateway"], 0)
            return
        finally:
            if not self._closing:
                self._running.pop(batch.head.batch_id, None)
        done = len(batch.items) - len(errors)
        self._finish(batch, running.params, "completed" if done else "failed", errors, done)

    def _one(self, batch: Batch, item: Item, who: Any, errors: list[str]) -> None:
        outcome = new_outcome(item.inference_id, who, self._hooks)
        outcome.request_body = item.chat
        with self._slots:
            try:
                got = self._router.chat(batch.route, ChatRequest(item.chat, batch.route.name), None, outcome)
                conclude(outcome, item.record, item.tools, item.output_schema, got.result.body)
            except gevent.GreenletExit:
                raise
            except Exception as e:
                if not isinstance(e, GatewayError):
                    log.exception("batch %s: inference %s failed", batch.head.batch_id, item.inference_id)
                errors.append(failed(outcome, e))

    def _finish(self, batch: Batch, params: dict[str, Any], status: str, errors: list[str], done: int) -> None:
        row = request_row(batch.head, status, {**params, "completed": done}, errors=errors)
        self._put(BATCH_REQUESTS.name, row)
        self._ended(batch.head.batch_id, row)

    def close(self, timeout: float) -> None:
        """Let running batches finish for half of ``timeout``; stop the others and record them as failed
        (nothing would ever finish them)."""
        self._closing = True
        running = list(self._running.values())
        gevent.joinall([r.greenlet for r in running if r.greenlet is not None], timeout=timeout / 2)
        for r in running:
            if r.greenlet is None or r.greenlet.dead:
                continue
            # The batch's greenlet first: it must not take its killed inferences for finished ones.
            r.greenlet.kill(block=True, timeout=0.1)
            r.pool.kill(block=True, timeout=0.1)
            self._finish(r.batch, r.params, "failed", ["the gateway stopped before the batch finished"], 0)
        self._running.clear()


def batch_params(batch: Batch, kind: str, **extra: Any) -> dict[str, Any]:
    """The ``batch_params`` of a batch's rows: how it runs and what it holds."""
    return {"kind": kind, "function_type": batch.function.type, "inferences": len(batch.items), **extra}


def member_record(head: Head, function_type: str, episode_id: str, data: Any, inference_params: Any,
                  stored_tools: Any, output_schema: Any, tags: Mapping[str, str]) -> tuple[Record, ToolSet, Schema | None]:
    """The record, tools and schema of an inference from its ``BatchModelInference`` row, to finish it on
    any instance: nothing is taken from the config, which may have changed since the batch was made."""
    schema = None
    if isinstance(output_schema, dict):
        try:
            schema = Schema(output_schema)
        except ValueError:
            schema = None  # checked when the batch was made; a schema that no longer reads checks nothing
    function = Function(head.function_name, function_type, {})
    variant = Variant(head.variant_name, None, {})
    found = Plan(function, [variant], episode_id, schema, dict(tags), False)
    stored = stored_tools if isinstance(stored_tools, dict) else {}
    record = Record(found, variant, {"input": data}, inference_params if isinstance(inference_params, dict) else {},
                    stored)
    return record, tools_of(stored), schema
