"""A loopback OpenAI Files and Batches API (https://platform.openai.com/docs/api-reference/batch).

- ``POST /v1/files``: a multipart form with ``purpose=batch`` and a ``file`` of JSONL lines, each
  ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`` (custom ids unique);
  answers the file object.
- ``POST /v1/batches``: ``{"input_file_id", "endpoint": "/v1/chat/completions", "completion_window": "24h"}``;
  answers the batch object, status ``validating``.
- ``GET /v1/batches/{id}``: the batch; its ``polls_to_complete``-th poll ends it, earlier ones answer
  ``in_progress``. Ending it answers each line as a chat completion: ``batched: <last user text>``, or
  ``{"answer": "<last user text>"}`` when the body asks for JSON (``response_format``); a line whose
  text holds ``fail-line`` goes to the error file (status 400) instead. A batch any of whose lines names
  the model ``batch-fail`` fails as a whole (status ``failed``, with ``errors``).
- ``GET /v1/files/{id}/content``: a file's bytes (an uploaded one, or an output or error file).

Every request needs ``Authorization: Bearer API_KEY`` (401 otherwise) and is recorded.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from upstream import Upstream
from upstream_wire import Handler, RecordedRequest, openai_error

__all__ = ["API_KEY", "USAGE", "BatchesUpstream", "answer_text"]

API_KEY = "batch-upstream-key-0123"
USAGE = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
_ENDPOINT = "/v1/chat/completions"


def answer_text(user_text: str) -> str:
    """What the upstream answers to a chat line whose last user message is ``user_text``."""
    return f"batched: {user_text}"


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if p.get("type") == "text")
            return str(content)
    return ""


class _BatchesHandler(Handler):
    server: object

    @property
    def _up(self) -> BatchesUpstream:
        return self.server.upstream

    def do_GET(self) -> None:
        rec = RecordedRequest(path=self.path, headers={k.lower(): v for k, v in self.headers.items()}, body=None,
                              received_at=time.monotonic())
        self._up._record(rec)
        if not self._authorized(rec):
            return
        parts = rec.route.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v1", "batches"]:
            batch = self._up.poll(parts[2])
            if batch is None:
                self.send_json(404, openai_error(404, f"No batch found with id '{parts[2]}'."))
            else:
                self.send_json(200, batch)
        elif len(parts) == 4 and parts[:2] == ["v1", "files"] and parts[3] == "content":
            data = self._up.files.get(parts[2])
            if data is None:
                self.send_json(404, openai_error(404, f"No such File object: {parts[2]}"))
            else:
                self.send_bytes(200, data, "application/octet-stream")
        else:
            self.send_json(404, openai_error(404, f"no route for GET {self.path}"))

    def answer(self, rec: RecordedRequest) -> None:
        if not self._authorized(rec):
            return
        if rec.route == "/v1/files":
            self._upload(rec)
        elif rec.route == "/v1/batches":
            self._create(rec)
        else:
            self.send_json(404, openai_error(404, f"no route for POST {self.path}"))

    def _authorized(self, rec: RecordedRequest) -> bool:
        if rec.headers.get("authorization") != f"Bearer {API_KEY}":
            self.send_json(401, openai_error(401, "Incorrect API key provided"))
            return False
        return True

    def _upload(self, rec: RecordedRequest) -> None:
        form = rec.form
        files = form.files_named("file") if form is not None else []
        if form is None or form.get("purpose") != "batch" or len(files) != 1:
            self.send_json(400, openai_error(400, "expected a multipart form with purpose=batch and one file"))
            return
        data = files[0].data
        seen = set()
        for n, line in enumerate(data.decode().splitlines(), 1):
            entry = json.loads(line)
            if entry.get("method") != "POST" or entry.get("url") != _ENDPOINT or not isinstance(entry.get("body"), dict):
                self.send_json(400, openai_error(400, f"line {n}: not a POST to {_ENDPOINT} with a body"))
                return
            if entry.get("custom_id") in seen or not isinstance(entry.get("custom_id"), str):
                self.send_json(400, openai_error(400, f"line {n}: custom_id missing or repeated"))
                return
            seen.add(entry["custom_id"])
        file_id = self._up.add_file(data)
        self.send_json(200, {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                             "filename": files[0].filename, "purpose": "batch"})

    def _create(self, rec: RecordedRequest) -> None:
        body = rec.body if isinstance(rec.body, dict) else {}
        if body.get("input_file_id") not in self._up.files or body.get("endpoint") != _ENDPOINT \
                or body.get("completion_window") != "24h":
            self.send_json(400, openai_error(400, "expected input_file_id, endpoint and completion_window 24h"))
            return
        self.send_json(200, self._up.add_batch(body["input_file_id"]))


class BatchesUpstream(Upstream):
    """The API; ``url`` is its base (what a provider's ``api_base`` names)."""

    def __init__(self, polls_to_complete: int = 2) -> None:
        super().__init__(_BatchesHandler)
        self.polls_to_complete = polls_to_complete
        self._state = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._polls: dict[str, int] = {}

    def add_file(self, data: bytes) -> str:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        with self._state:
            self.files[file_id] = data
        return file_id

    def add_batch(self, input_file_id: str) -> dict:
        batch_id = f"batch_{uuid.uuid4().hex[:24]}"
        batch = {"id": batch_id, "object": "batch", "endpoint": _ENDPOINT, "errors": None,
                 "input_file_id": input_file_id, "completion_window": "24h", "status": "validating",
                 "output_file_id": None, "error_file_id": None, "created_at": int(time.time()),
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": None}
        with self._state:
            self.batches[batch_id] = batch
            self._polls[batch_id] = 0
        return dict(batch)

    def poll(self, batch_id: str) -> dict | None:
        with self._state:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            self._polls[batch_id] += 1
            if batch["status"] in ("validating", "in_progress"):
                if self._polls[batch_id] < self.polls_to_complete:
                    batch["status"] = "in_progress"
                else:
                    self._end(batch)
            return json.loads(json.dumps(batch))

    def lines(self, file_id: str) -> list[dict]:
        return [json.loads(line) for line in self.files[file_id].decode().splitlines() if line.strip()]

    def _end(self, batch: dict) -> None:
        lines = self.lines(batch["input_file_id"])
        if any(entry["body"].get("model") == "batch-fail" for entry in lines):
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [
                {"code": "model_not_found", "message": "The model batch-fail does not exist", "line": 1}]}
            return
        out, errors = [], []
        for n, entry in enumerate(lines):
            text = _last_user_text(entry["body"])
            if "fail-line" in text:
                error = openai_error(400, "this line was refused")
                errors.append({"id": f"batch_req_{n}", "custom_id": entry["custom_id"], "error": None,
                               "response": {"status_code": 400, "request_id": f"req_{n}", "body": error}})
                continue
            wants_json = "response_format" in entry["body"]
            content = json.dumps({"answer": text}) if wants_json else answer_text(text)
            completion = {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": int(time.time()),
                          "model": entry["body"]["model"],
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                       "logprobs": None, "finish_reason": "stop"}],
                          "usage": dict(USAGE)}
            out.append({"id": f"batch_req_{n}", "custom_id": entry["custom_id"], "error": None,
                        "response": {"status_code": 200, "request_id": f"req_{n}", "body": completion}})
        batch["status"] = "completed"
        batch["completed_at"] = int(time.time())
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(errors)}
        for key, entries in (("output_file_id", out), ("error_file_id", errors)):
            if entries:
                file_id = f"file-{uuid.uuid4().hex[:24]}"
                self.files[file_id] = "".join(json.dumps(e) + "\n" for e in entries).encode()
                batch[key] = file_id
