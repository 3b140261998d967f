"""Stage 4: read and parse the JSON body once, resolve ``model`` to a route, check the capability."""

from __future__ import annotations

from typing import Any

import falcon
import ujson
from falcon.media import MultipartFormHandler

from gateway.catalog import Catalog
from gateway.errors import (
    InvalidJSONError,
    InvalidRequestError,
    MissingParameterError,
    ModelNotFoundError,
    RequestTooLargeError,
    UnsupportedCapabilityError,
)
from providers.base import FilePart, Form

__all__ = ["ResolveStage", "model_field", "read_json_body", "resolve_model"]

#: How much of an uploaded file is read at a time (the limit is checked after each read).
_READ_CHUNK = 64 * 1024


class _Budget:
    """The request body read within ``limit`` bytes; crossing it is a 413 at once, the rest unread."""

    __slots__ = ("_read", "_left", "_limit")

    def __init__(self, stream: Any, limit: int) -> None:
        self._read = stream.read
        self._left = self._limit = limit

    def read(self, size: int | None = -1) -> bytes:
        want = self._left + 1 if size is None or size < 0 or size > self._left + 1 else size
        data = self._read(want)
        self._left -= len(data)
        if self._left < 0:
            raise RequestTooLargeError(f"Request body is over the limit of {self._limit} bytes")
        return data


def _check_length(req: falcon.Request, limit: int) -> None:
    length = req.content_length
    if length is not None and length > limit:
        raise RequestTooLargeError(f"Request body of {length} bytes is over the limit of {limit} bytes")


def read_json_body(req: falcon.Request, limit: int) -> dict:
    """The request's JSON object, read once within ``limit`` bytes (chunked bodies too)."""
    _check_length(req, limit)
    if req.content_length is None:
        raw = _Budget(req.stream, limit).read()  # chunked transfer coding
    else:
        raw = req.bounded_stream.read()
    req.context.outcome.bytes_in = len(raw)
    if not raw:
        raise InvalidJSONError("Request body is empty; expected a JSON object")
    try:
        body = ujson.loads(raw)
    except ValueError as e:
        raise InvalidJSONError(f"Request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise InvalidJSONError("Request body must be a JSON object")
    return body


def resolve_model(ctx: Any, catalog: Catalog, model: str) -> Any:
    """The route for ``model``: by name, or, with auth, through the key's grant to its endpoint (a
    function's variants too: a key reaches only the models it is granted)."""
    grants = ctx.grants
    if grants is None:
        return catalog.resolve(model)
    grant = grants.get(model)
    if grant is None:
        raise ModelNotFoundError(model)
    route = catalog.resolve(grant.endpoint_id, shown=model)
    if ctx.endpoint_id is None:
        ctx.endpoint_id = grant.endpoint_id
        ctx.model_id = grant.model_id
        ctx.project_id = grant.project_id
    return route


def model_field(body: dict) -> str:
    """The body's ``model``, or the 400 its absence or type is."""
    model = body.get("model")
    if model is None or model == "":
        raise MissingParameterError("model")
    if not isinstance(model, str):
        raise InvalidRequestError("'model' must be a string", param="model")
    return model


class ResolveStage:
    """Runs for resources that declare a ``capability``; others (health, models) are left alone.

    A resource lists the body fields it requires in ``required`` (besides ``model``), and says in
    ``body_kind`` whether its body is JSON (the default) or a multipart form (``multipart``), whose
    file parts it may cap with ``max_file_bytes``.
    """

    def __init__(self, catalog: Catalog, max_body_bytes: int) -> None:
        self._catalog = catalog
        self._max = max_body_bytes
        self._multipart = MultipartFormHandler()

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict) -> None:
        capability = getattr(resource, "capability", None)
        if capability is None or req.method != "POST":
            return
        ctx = req.context
        if getattr(resource, "body_kind", "json") == "multipart":
            form = ctx.form = self._read_form(req, getattr(resource, "max_file_bytes", None))
            body = {name: value for name, value in form.fields}
            body.update((part.name.removesuffix("[]"), part) for part in form.files)
        else:
            body = self._read_json(req)
        target = getattr(resource, "target", None)
        # NOTE: a resource may name its model another way (TensorZero's function_name): ``target``.
        model = target(ctx, body) if target is not None else model_field(body)
        # Resolved before the other checks, so a rejected request still counts against its model.
        ctx.model = model
        route = ctx.route = resolve_model(ctx, self._catalog, model)
        if capability not in route.config.endpoints:
            raise UnsupportedCapabilityError(model, capability)
        for field in resource.required:
            if field not in body or body[field] is None:
                raise MissingParameterError(field)
        if ctx.form is None:
            ctx.body = body

    def _check_length(self, req: falcon.Request) -> None:
        _check_length(req, self._max)

    def _read_form(self, req: falcon.Request, max_file_bytes: int | None) -> Form:
        """Parse a multipart form as it streams in; a file over ``max_file_bytes`` is refused as soon as
        the limit is crossed, without reading the rest."""
        if not (req.content_type or "").startswith("multipart/form-data"):
            raise InvalidRequestError(
                "This endpoint takes a multipart/form-data body", code="invalid_content_type"
            )
        self._check_length(req)
        limit = self._max if max_file_bytes is None else min(max_file_bytes, self._max)
        fields: list[tuple[str, str]] = []
        files: list[FilePart] = []
        # NOTE: read from the server's input (which undoes chunked transfer coding) through our own
        # budget: Falcon's bounded stream reads nothing when there is no Content-Length.
        body = _Budget(req.stream, self._max)
        try:
            form = self._multipart.deserialize(body, req.content_type, req.content_length or self._max + 1)
            for part in form:
                name = part.name or ""
                if part.filename is None:
                    fields.append((name, part.get_text() or ""))
                    continue
                data = bytearray()
                read = part.stream.read
                while chunk := read(_READ_CHUNK):
                    data += chunk
                    if len(data) > limit:
                        raise RequestTooLargeError(f"File '{name}' is over the limit of {limit} bytes", param=name)
                files.append(FilePart(name, part.filename, part.content_type or "application/octet-stream", data))
        except falcon.HTTPError as e:  # MediaMalformedError, MultipartParseError
            raise InvalidRequestError(f"Malformed multipart body: {e.description or e.title}") from None
        return Form(fields, files)

    def _read_json(self, req: falcon.Request) -> dict:
        return read_json_body(req, self._max)
