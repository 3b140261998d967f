"""OpenAI's Files and Batches APIs, for a batch whose variant's model has an OpenAI provider first: the
JSONL file of chat requests uploaded (``POST /files``, purpose ``batch``), the batch created
(``POST /batches``), polled (``GET /batches/{id}``), and its output and error files read back
(``GET /files/{id}/content``) as one result per ``custom_id`` (the inference id).

Each line's body, URL and headers are exactly what the provider itself would send (its model name,
``extra_body``, edits, ``extra_headers`` and key). POSTs go through the gateway's upstream client; it
has no GET, so polls and downloads use a small urllib3 pool of their own (gevent's sockets in a
worker, as every other client there).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

import urllib3

from gateway.catalog import Candidate
from providers.base import (
    Attempt,
    FilePart,
    Form,
    ProviderConnectionError,
    ProviderResponseError,
    json_object,
)
from providers.http import USER_AGENT, UpstreamClient
from providers.jsonio import dumps, loads
from providers.multipart import encode_form
from providers.openai import openai_error

__all__ = ["FAILED", "OpenAIBatches", "Result", "served"]

#: The batch statuses that end a batch without results; ``completed`` is the one with them, any other
#: (validating, in_progress, finalizing, cancelling) is still pending.
FAILED = frozenset({"failed", "expired", "cancelled"})
_ENDPOINT = "/v1/chat/completions"
_CONNECT_TIMEOUT_S = 10.0
_READ_TIMEOUT_S = 120.0


def served(candidate: Candidate) -> bool:
    """Whether the candidate's provider speaks OpenAI's Batches API (OpenAI itself; Azure's differs)."""
    return candidate.provider.type == "openai"


class Result:
    """One line of a finished batch: the chat answer, or why there is none."""

    __slots__ = ("body", "error")

    def __init__(self, body: dict[str, Any] | None, error: str | None) -> None:
        self.body = body
        self.error = error


class OpenAIBatches:
    """The client; ``max_body_bytes`` caps a downloaded file as it caps every upstream answer."""

    def __init__(self, http: UpstreamClient, max_body_bytes: int) -> None:
        self._http = http
        self._max = max_body_bytes
        self._pool = urllib3.PoolManager(
            num_pools=16, maxsize=4, block=False, retries=False, headers={"User-Agent": USER_AGENT},
            timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT_S, read=_READ_TIMEOUT_S),
        )

    def line(self, candidate: Candidate, custom_id: str, chat: dict[str, Any]) -> bytes:
        """One JSONL line; the body is the provider's own request body (read on purpose: the provider
        keeps its body rules private, and a batch must send what a single inference would)."""
        body = candidate.provider._json_body(chat)
        head = dumps({"custom_id": custom_id, "method": "POST", "url": _ENDPOINT})
        return head[:-1] + b',"body":' + body + b"}"

    def submit(self, candidate: Candidate, lines: Iterable[bytes]) -> tuple[dict, dict]:
        """Upload the file and create the batch: the file object and the batch object."""
        provider = candidate.provider
        data = b"\n".join(lines) + b"\n"
        form = Form([("purpose", "batch")], [FilePart("file", f"batch-{uuid.uuid4().hex}.jsonl",
                                                      "application/jsonl", data)])
        content_type, body = encode_form(form, {})
        uploaded = self._post(candidate, "/files", body, provider._request_headers(content_type))
        file_id = uploaded.get("id")
        if not isinstance(file_id, str):
            raise ProviderResponseError("the Files API answered without a file id")
        request = {"input_file_id": file_id, "endpoint": _ENDPOINT, "completion_window": "24h"}
        batch = self._post(candidate, "/batches", dumps(request), provider._request_headers())
        if not isinstance(batch.get("id"), str):
            raise ProviderResponseError("the Batches API answered without a batch id")
        return uploaded, batch

    def poll(self, candidate: Candidate, batch_id: str) -> dict[str, Any]:
        """The batch object as the provider has it now."""
        return json_object(self._get(candidate, f"/batches/{batch_id}"))

    def results(self, candidate: Candidate, batch: dict[str, Any]) -> dict[str, Result]:
        """The results of a completed batch by ``custom_id``: its output file's lines, then its error file's."""
        out: dict[str, Result] = {}
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            if not isinstance(file_id, str) or not file_id:
                continue
            for raw in self._get(candidate, f"/files/{file_id}/content").splitlines():
                if not raw.strip():
                    continue
                try:
                    entry = loads(raw)
                except ValueError:
                    continue  # a line we cannot read names no inference: its inference stays without a result
                if isinstance(entry, dict) and isinstance(entry.get("custom_id"), str):
                    out.setdefault(entry["custom_id"], _result(entry))
        return out

    def _attempt(self, candidate: Candidate) -> Attempt:
        return Attempt(candidate.model, candidate.provider_name, time.monotonic(), time.time(),
                       candidate.provider.type)

    def _post(self, candidate: Candidate, path: str, body: bytes | list[bytes], headers) -> dict[str, Any]:
        url = candidate.provider._url(path)
        status, raw = self._http.post(url, body, headers, self._attempt(candidate))
        if status >= 400:
            raise openai_error(status, raw)
        return json_object(raw)

    def _get(self, candidate: Candidate, path: str) -> bytes:
        provider = candidate.provider
        headers = provider._request_headers()
        try:
            resp = self._pool.urlopen("GET", provider._url(path), headers=dict(headers), redirect=False,
                                      preload_content=False)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise ProviderConnectionError(f"GET {path}: {type(e).__name__}") from None
        try:
            raw = _read(resp, self._max)
        except BaseException as e:
            resp.close()  # a body not read to its end cannot go back to the pool
            if isinstance(e, (urllib3.exceptions.HTTPError, OSError)):
                raise ProviderConnectionError(f"GET {path}: {type(e).__name__}") from None
            raise
        resp.release_conn()
        if resp.status >= 400:
            raise openai_error(resp.status, raw)
        return raw

    def close(self) -> None:
        self._pool.clear()


def _read(resp: Any, limit: int) -> bytes:
    chunks, size = [], 0
    for chunk in resp.stream(65536):
        size += len(chunk)
        if size > limit:
            raise ProviderResponseError(f"upstream answer is over the limit of {limit} bytes for a whole body")
        chunks.append(chunk)
    return b"".join(chunks)


def _result(entry: dict[str, Any]) -> Result:
    """A line of the output or error file: ``response.body`` when its ``status_code`` is 2xx."""
    response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
    error = entry.get("error")
    status = response.get("status_code")
    body = response.get("body")
    if error is None and isinstance(status, int) and status < 300 and isinstance(body, dict):
        return Result(body, None)
    if isinstance(error, dict):
        return Result(None, str(error.get("message") or error.get("code") or "the request failed"))
    detail = body.get("error") if isinstance(body, dict) else None
    message = detail.get("message") if isinstance(detail, dict) else None
    return Result(None, f"HTTP {status}: {message}" if message else f"HTTP {status} from the provider")
