"""The OpenAI Files and Batch APIs, emulated for `LocalOpenAIServer`: the vendor side of the batch path.

`LocalOpenAIServer` hands every `/v1/files*` and `/v1/batches*` request to `BatchAPI.handle`. The
objects returned have the real shapes (`openai.types.FileObject`, `Batch`, `FileDeleted`, cursor
pages), and the behaviours a client must cope with are the real ones:

- an input file is uploaded as multipart form data with `purpose=batch` and a `.jsonl` name;
- `POST /v1/batches` checks the file, endpoint, completion window and metadata at once (HTTP 400),
  but problems *inside* the JSONL surface later, as a created batch that turns `failed` with
  `errors.data[]` entries (`invalid_json_line`, `duplicate_custom_id`, `url_mismatch`,
  `model_mismatch`, `empty_file`, `missing_required_parameter`), each with its line number;
- a batch moves validating -> in_progress -> finalizing -> completed, one step per retrieve
  (`GET /v1/batches/{id}`), so a poller sees it progress; `advance()` finishes batches directly;
- successful requests go to the output file, each line
  `{"id", "custom_id", "response": {"status_code": 200, "request_id", "body": <chat.completion>}, "error": null}`;
  requests answered with an HTTP error go to the error file in the same shape (status 4xx/5xx, an
  error object as the body); `output_file_id` is null when nothing succeeded;
- a batch that runs out of its completion window turns `expired`: the requests that ran are in the
  output file (and paid), the rest are in the error file as
  `{"response": null, "error": {"code": "batch_expired", "message": ...}}`;
- a cancelled batch keeps what already ran; requests that never ran are in neither file.

Each line's answer comes from `server._completion(body)`, so the chat-completion fakes (and their
queued faults) are shared with the sync path. Per-custom_id faults are one-shot (a resubmitted line
is answered normally), queued by the test:

    api = server.batch_api
    api.fail_lines({"gmp-1": 500, "gmp-2": 400})   # error file lines with these HTTP statuses
    api.malformed_lines({"gmp-3"})                  # status 200, content that is not the schema's JSON
    api.placeholder_lines({"gmp-4"})                # status 200, valid JSON greeting with {{ first_name }}
    api.refuse_lines({"gmp-5"})                     # status 200, message.refusal
    api.filter_lines({"gmp-6"})                     # status 200, finish_reason content_filter
    api.expire_next_batch(completed=2)              # the next batch expires after 2 requests ran
    api.fail_validation_next("too_many_tasks", "...")  # the next batch fails validation

What a test can inspect: `uploaded_jsonl` (every uploaded batch input, kept after deletion),
`deleted_file_ids`, `files` (live ones), `batches`, `created_batch_ids`, `paid_lines` (requests that
were answered with status 200, the ones the vendor bills).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs, urlsplit

ENDPOINTS = ("/v1/chat/completions",)
COMPLETION_WINDOWS = ("24h",)
FILE_TTL_S = 30 * 24 * 3600  # batch input and output files expire after 30 days by default
BATCH_TTL_S = 24 * 3600
TERMINAL = ("completed", "failed", "expired", "cancelled")
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."

Response = tuple[int, Any, dict[str, str]]


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": self.created_at + FILE_TTL_S,
            "status_details": None,
        }


@dataclass
class StoredBatch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    status: str = "validating"
    lines: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    expire_after: int | None = None  # requests that run before the batch expires (None: never expires)
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    timestamps: dict[str, int] = field(default_factory=dict)

    def obj(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": list(self.errors)} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.timestamps.get("in_progress_at"),
            "expires_at": self.created_at + BATCH_TTL_S,
            "finalizing_at": self.timestamps.get("finalizing_at"),
            "completed_at": self.timestamps.get("completed_at"),
            "failed_at": self.timestamps.get("failed_at"),
            "expired_at": self.timestamps.get("expired_at"),
            "cancelling_at": self.timestamps.get("cancelling_at"),
            "cancelled_at": self.timestamps.get("cancelled_at"),
            "request_counts": {"total": len(self.lines), "completed": self.completed, "failed": self.failed},
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata,
        }


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> Response:
    return status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}, {}


def _not_found(kind: str, object_id: str) -> Response:
    return _error(404, f"No such {kind} object: {object_id}", param="id")


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class BatchAPI:
    """Files and batches held in memory; one instance per `LocalOpenAIServer` (`server.batch_api`)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self._lock = threading.RLock()
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}
        self.created_batch_ids: list[str] = []
        self.uploaded_jsonl: list[str] = []
        self.deleted_file_ids: list[str] = []
        self.paid_lines = 0
        self.retrieves = 0
        self._fail_lines: dict[str, int] = {}
        self._malformed: set[str] = set()
        self._no_placeholder: set[str] = set()
        self._refuse: set[str] = set()
        self._filter: set[str] = set()
        self._expire_next: deque[int] = deque()
        self._validation_next: deque[dict[str, Any]] = deque()

    # ---- fault knobs (one-shot) ---------------------------------------------------------------
    def fail_lines(self, statuses: dict[str, int]) -> None:
        """These custom_ids are answered with these HTTP statuses (error file), once each."""
        with self._lock:
            self._fail_lines.update(statuses)

    def malformed_lines(self, custom_ids: set[str] | list[str]) -> None:
        with self._lock:
            self._malformed.update(custom_ids)

    def placeholder_lines(self, custom_ids: set[str] | list[str]) -> None:
        """These lines answer a draft greeting with `{{ first_name }}`: template syntax, rejected."""
        with self._lock:
            self._no_placeholder.update(custom_ids)

    no_placeholder_lines = placeholder_lines  # its old name (drafts once had to carry the placeholder)

    def refuse_lines(self, custom_ids: set[str] | list[str]) -> None:
        with self._lock:
            self._refuse.update(custom_ids)

    def filter_lines(self, custom_ids: set[str] | list[str]) -> None:
        with self._lock:
            self._filter.update(custom_ids)

    def expire_next_batch(self, completed: int) -> None:
        """The next batch created expires after its first `completed` requests have run."""
        with self._lock:
            self._expire_next.append(completed)

    def fail_validation_next(self, code: str = "too_many_tasks", message: str = "Injected validation failure.") -> None:
        """The next batch created fails validation with this error (whatever its input)."""
        with self._lock:
            self._validation_next.append({"code": code, "message": message, "param": None, "line": None})

    # ---- inspection ---------------------------------------------------------------------------
    def uploaded_lines(self) -> list[dict[str, Any]]:
        """Every line of every uploaded batch input file, parsed (kept after the files are deleted)."""
        with self._lock:
            return [json.loads(line) for text in self.uploaded_jsonl for line in text.splitlines() if line.strip()]

    def advance(self, batch_id: str | None = None) -> None:
        """Move a batch (or every batch) straight to its terminal state."""
        with self._lock:
            for batch in [self.batches[batch_id]] if batch_id else list(self.batches.values()):
                while batch.status not in TERMINAL:
                    self._step(batch)

    # ---- HTTP entry point ---------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Response:
        url = urlsplit(path)
        parts = [p for p in url.path.split("/") if p][1:]  # drop "v1"
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self._lock:
            if parts[:1] == ["files"]:
                return self._files(method, parts[1:], query, headers, raw)
            if parts[:1] == ["batches"]:
                return self._batches(method, parts[1:], query, raw)
        return _error(404, f"no route for {method} {path}")

    # ---- files --------------------------------------------------------------------------------
    def _files(
        self, method: str, rest: list[str], query: dict[str, str], headers: dict[str, str], raw: bytes
    ) -> Response:
        if method == "POST" and not rest:
            return self._upload(headers, raw)
        if method == "GET" and not rest:
            items = [f for f in self.files.values() if not query.get("purpose") or f.purpose == query["purpose"]]
            items.sort(key=lambda f: f.created_at, reverse=query.get("order", "desc") == "desc")
            return self._page([f.obj() for f in items], query, default_limit=10000)
        stored = self.files.get(rest[0])
        if stored is None:
            return _not_found("File", rest[0])
        if method == "GET" and len(rest) == 1:
            return 200, stored.obj(), {}
        if method == "GET" and rest[1:] == ["content"]:
            return 200, stored.data, {}  # raw bytes; the SDK reads them whatever the content type
        if method == "DELETE" and len(rest) == 1:
            del self.files[stored.id]
            self.deleted_file_ids.append(stored.id)
            return 200, {"id": stored.id, "object": "file", "deleted": True}, {}
        return _error(404, f"no route for {method} /v1/files/{'/'.join(rest)}")

    def _upload(self, headers: dict[str, str], raw: bytes) -> Response:
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _error(400, "Expected a multipart/form-data upload")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
        if "purpose" not in fields:
            return _error(400, "Missing required parameter: 'purpose'.", param="purpose")
        if "file" not in fields:
            return _error(400, "Missing required parameter: 'file'.", param="file")
        purpose = fields["purpose"][1].decode()
        filename, data = fields["file"]
        filename = filename or "upload"
        if purpose == "batch":
            if not filename.endswith(".jsonl"):
                return _error(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
            self.uploaded_jsonl.append(data.decode("utf-8", errors="replace"))
        stored = StoredFile(_new_id("file-"), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return 200, stored.obj(), {}

    def _page(self, items: list[dict[str, Any]], query: dict[str, str], *, default_limit: int) -> Response:
        limit = int(query.get("limit", default_limit))
        if "after" in query:
            ids = [item["id"] for item in items]
            items = items[ids.index(query["after"]) + 1 :] if query["after"] in ids else []
        page = items[:limit]
        return (
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            },
            {},
        )

    # ---- batches ------------------------------------------------------------------------------
    def _batches(self, method: str, rest: list[str], query: dict[str, str], raw: bytes) -> Response:
        if method == "POST" and not rest:
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return _error(400, "The request body must be a JSON object")
            return self._create(body)
        if method == "GET" and not rest:
            items = sorted(self.batches.values(), key=lambda b: self.created_batch_ids.index(b.id), reverse=True)
            return self._page([b.obj() for b in items], query, default_limit=20)
        batch = self.batches.get(rest[0])
        if batch is None:
            return _not_found("batch", rest[0])
        if method == "GET" and len(rest) == 1:
            self.retrieves += 1
            if batch.status not in TERMINAL:
                self._step(batch)
            return 200, batch.obj(), {}
        if method == "POST" and rest[1:] == ["cancel"]:
            if batch.status in ("failed", "completed", "expired"):
                return _error(409, f"Cannot cancel a batch with status {batch.status}.")
            if batch.status not in ("cancelling", "cancelled"):
                batch.status = "cancelling"
                batch.timestamps["cancelling_at"] = int(time.time())
            return 200, batch.obj(), {}
        return _error(404, f"no route for {method} /v1/batches/{'/'.join(rest)}")

    def _create(self, body: dict[str, Any]) -> Response:
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not body.get(name):
                return _error(400, f"Missing required parameter: '{name}'.", param=name)
        if body["endpoint"] not in ENDPOINTS:
            return _error(400, f"Invalid value for 'endpoint': {body['endpoint']!r} is not supported here.")
        if body["completion_window"] not in COMPLETION_WINDOWS:
            return _error(400, "Invalid value for 'completion_window': only '24h' is supported.")
        metadata = body.get("metadata")
        if metadata is not None:
            problem = _metadata_problem(metadata)
            if problem:
                return _error(400, problem, param="metadata")
        stored = self.files.get(body["input_file_id"])
        if stored is None:
            return _not_found("File", body["input_file_id"])
        if stored.purpose != "batch":
            return _error(400, f"File {stored.id} was not uploaded with purpose 'batch'.", param="input_file_id")
        batch = StoredBatch(
            id=_new_id("batch_"),
            input_file_id=stored.id,
            endpoint=body["endpoint"],
            completion_window=body["completion_window"],
            metadata=dict(metadata) if metadata else None,
            created_at=int(time.time()),
        )
        batch.lines, batch.errors, batch.model = _validate(stored.data, batch.endpoint)
        if self._validation_next:
            batch.errors.append(self._validation_next.popleft())
        if self._expire_next:
            batch.expire_after = self._expire_next.popleft()
        self.batches[batch.id] = batch
        self.created_batch_ids.append(batch.id)
        return 200, batch.obj(), {}

    def _step(self, batch: StoredBatch) -> None:
        """One status step; requests run when the batch leaves in_progress."""
        now = int(time.time())
        if batch.status == "validating":
            if batch.errors:
                batch.status, batch.timestamps["failed_at"] = "failed", now
                batch.lines = []
            else:
                batch.status, batch.timestamps["in_progress_at"] = "in_progress", now
        elif batch.status == "in_progress":
            expired = self._run(batch)
            if expired:
                batch.status, batch.timestamps["expired_at"] = "expired", now
            else:
                batch.status, batch.timestamps["finalizing_at"] = "finalizing", now
        elif batch.status == "finalizing":
            batch.status, batch.timestamps["completed_at"] = "completed", now
        elif batch.status == "cancelling":
            self._write_files(batch, [], [])  # nothing ran yet: neither file holds anything
            batch.status, batch.timestamps["cancelled_at"] = "cancelled", now

    def _run(self, batch: StoredBatch) -> bool:
        """Answer the batch's requests, write its output and error files; True when it expired."""
        outputs: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        limit = len(batch.lines) if batch.expire_after is None else min(batch.expire_after, len(batch.lines))
        for line in batch.lines[:limit]:
            status, payload, request_id = self._answer(line["custom_id"], line["body"])
            record = {
                "id": _new_id("batch_req_"),
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": request_id, "body": payload},
                "error": None,
            }
            if status == 200:
                outputs.append(record)
                batch.completed += 1
                self.paid_lines += 1
                usage = payload.get("usage") or {}
                batch.input_tokens += int(usage.get("prompt_tokens", 0))
                batch.output_tokens += int(usage.get("completion_tokens", 0))
            else:
                errors.append(record)
                batch.failed += 1
        for line in batch.lines[limit:]:
            errors.append(
                {
                    "id": _new_id("batch_req_"),
                    "custom_id": line["custom_id"],
                    "response": None,
                    "error": {"code": "batch_expired", "message": EXPIRED_MESSAGE},
                }
            )
        self._write_files(batch, outputs, errors)
        return batch.expire_after is not None

    def _answer(self, custom_id: str, body: dict[str, Any]) -> tuple[int, Any, str]:
        request_id = secrets.token_hex(16)
        forced = self._fail_lines.pop(custom_id, None)
        if forced is not None:
            kind = "server_error" if forced >= 500 else "invalid_request_error"
            message = "The server had an error processing your request." if forced >= 500 else "Invalid request."
            return forced, {"error": {"message": message, "type": kind, "param": None, "code": None}}, request_id
        status, payload, headers = self.server._completion(body)
        if status != 200:
            return status, payload, headers.get("x-request-id", request_id)
        message = payload["choices"][0]["message"]
        if custom_id in self._malformed:
            self._malformed.discard(custom_id)
            message["content"] = '{"subject": "Spring ideas", "body": '
        elif custom_id in self._no_placeholder:
            self._no_placeholder.discard(custom_id)
            draft = json.loads(message["content"])
            draft["body"] = "Hello {{ first_name }},\n\n" + draft.get("body", "")
            message["content"] = json.dumps(draft)
        elif custom_id in self._refuse:
            self._refuse.discard(custom_id)
            message["content"], message["refusal"] = None, "I'm sorry, I can't help with that request."
        elif custom_id in self._filter:
            self._filter.discard(custom_id)
            message["content"] = None
            payload["choices"][0]["finish_reason"] = "content_filter"
        return 200, payload, headers.get("x-request-id", request_id)

    def _write_files(self, batch: StoredBatch, outputs: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        now = int(time.time())
        for kind, records in (("output", outputs), ("error", errors)):
            if not records:
                continue
            data = "".join(json.dumps(r) + "\n" for r in records).encode()
            stored = StoredFile(_new_id("file-"), f"{batch.id}_{kind}.jsonl", "batch_output", data, now)
            self.files[stored.id] = stored
            if kind == "output":
                batch.output_file_id = stored.id
            else:
                batch.error_file_id = stored.id


def _metadata_problem(metadata: Any) -> str | None:
    if not isinstance(metadata, dict):
        return "Invalid type for 'metadata': expected an object."
    if len(metadata) > 16:
        return "Invalid 'metadata': too many keys (at most 16)."
    for key, value in metadata.items():
        if len(str(key)) > 64:
            return "Invalid 'metadata': keys are at most 64 characters."
        if not isinstance(value, str) or len(value) > 512:
            return "Invalid 'metadata': values are strings of at most 512 characters."
    return None


def _validate(data: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
    """The batch input's request lines, the validation errors found in them, and their model."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None

    def fail(number: int, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "line": number, "message": message, "param": param})

    text = data.decode("utf-8", errors="replace")
    numbered = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not numbered:
        errors.append({"code": "empty_file", "line": None, "message": "The batch input file is empty.", "param": None})
    for number, raw in numbered:
        try:
            line = json.loads(raw)
        except ValueError:
            fail(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        if not isinstance(line, dict):
            fail(number, "invalid_json_line", "This line is not parseable as valid JSON.")
            continue
        missing = [name for name in ("custom_id", "method", "url", "body") if name not in line]
        if missing:
            fail(number, "missing_required_parameter", f"Missing required parameter: '{missing[0]}'.", missing[0])
            continue
        if not isinstance(line["custom_id"], str) or not line["custom_id"]:
            fail(number, "invalid_request", "The custom_id must be a non-empty string.", "custom_id")
            continue
        if line["custom_id"] in seen:
            fail(
                number,
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request. "
                "The custom_id parameter must be unique for each request in a batch.",
                "custom_id",
            )
            continue
        seen.add(line["custom_id"])
        if line["method"] != "POST":
            fail(number, "invalid_request", "Only the POST method is supported.", "method")
            continue
        if line["url"] != endpoint:
            fail(number, "url_mismatch", "The URL provided for this request does not match the batch endpoint.", "url")
            continue
        body = line["body"]
        if not isinstance(body, dict) or not body.get("model"):
            fail(number, "missing_required_parameter", "Missing required parameter: 'body.model'.", "body.model")
            continue
        if model is None:
            model = body["model"]
        elif body["model"] != model:
            fail(
                number,
                "model_mismatch",
                "The provided model does not match the model of the other requests in the batch.",
                "body.model",
            )
            continue
        lines.append(line)
    return lines, errors, model
