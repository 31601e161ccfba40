"""A local OpenAI-compatible HTTP server: the edge of the world for tests of the real `openai` SDK.

It answers `POST /v1/chat/completions` with a `chat.completion` whose message content is JSON that
satisfies the request's `response_format` json_schema (deterministic, derived from the last user
message; a `body` property always greets with `{{ first_name }}`), and `GET /v1/models`. Every
request is recorded (path, headers without Authorization, parsed JSON body) in `server.requests`, so
a test can scan exactly what left. Faults are queued by the test:

    with LocalOpenAIServer() as server:
        server.fail_next(429, headers={"retry-after-ms": "1"})
        server.malformed_next(1)          # content that is not valid JSON for the schema
        server.refuse_next(1)             # message.refusal instead of content
        server.no_placeholder_next(1)     # valid JSON, but the body lacks {{ first_name }}
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-local")
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PLACEHOLDER = "{{ first_name }}"
DEFAULT_MODELS = ("gpt-4.1-mini", "gpt-4.1")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or None (GET, or a body that was not JSON)


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _tokens(text: str) -> int:
    """A rough token count (about four characters a token), enough for usage accounting tests."""
    return max(1, len(text) // 4)


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _schema_problem(response_format: Any) -> str | None:
    """What a strict json_schema response_format gets wrong, the way the API would reject it."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    if not spec.get("name"):
        return "response_format.json_schema.name is required"
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        return "response_format.json_schema.schema must be an object"
    if spec.get("strict"):
        if schema.get("additionalProperties") is not False:
            return "In strict mode, 'additionalProperties' must be supplied and set to false"
        properties = schema.get("properties") or {}
        if sorted(schema.get("required") or []) != sorted(properties):
            return "In strict mode, 'required' must list every key in 'properties'"
    return None


class LocalOpenAIServer:
    """ThreadingHTTPServer on 127.0.0.1 and an ephemeral port, run in a background thread."""

    def __init__(self, models: tuple[str, ...] = DEFAULT_MODELS) -> None:
        self.models = models
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._malformed = 0
        self._refusals = 0
        self._no_placeholder = 0
        self._counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalOpenAIServer:
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="local-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the local OpenAI server is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # ---- what left --------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    # ---- fault injection --------------------------------------------------------------------
    def fail_next(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """Answer the next chat completion with this HTTP status (queued; one call per failure)."""
        if body is None:
            body = {
                "error": {
                    "message": f"injected failure with status {status}",
                    "type": "rate_limit_error" if status == 429 else "server_error",
                    "param": None,
                    "code": None,
                }
            }
        with self._lock:
            self._failures.append(_Failure(status, body, dict(headers or {})))

    def malformed_next(self, n: int = 1) -> None:
        """The next n completions carry content that is not valid JSON for the schema."""
        with self._lock:
            self._malformed += n

    def refuse_next(self, n: int = 1) -> None:
        """The next n completions carry `message.refusal` and no content."""
        with self._lock:
            self._refusals += n

    def no_placeholder_next(self, n: int = 1) -> None:
        """The next n completions are schema-valid but the body has no first-name placeholder."""
        with self._lock:
            self._no_placeholder += n

    # ---- used by the handler ----------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_outcome(self) -> tuple[str, _Failure | None, int]:
        with self._lock:
            self._counter += 1
            if self._failures:
                return "fail", self._failures.popleft(), self._counter
            if self._refusals:
                self._refusals -= 1
                return "refuse", None, self._counter
            if self._malformed:
                self._malformed -= 1
                return "malformed", None, self._counter
            if self._no_placeholder:
                self._no_placeholder -= 1
                return "no_placeholder", None, self._counter
            return "ok", None, self._counter

    def _completion(self, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not body.get("model"):
            return _error(400, "'model' and a non-empty 'messages' are required")
        problem = _schema_problem(body.get("response_format"))
        if problem:
            return _error(400, f"Invalid schema for response_format: {problem}")

        outcome, failure, number = self._next_outcome()
        if failure is not None:
            return failure.status, failure.body, failure.headers

        user_text = next(
            (_message_text(m) for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"),
            "",
        )
        digest = hashlib.sha256(user_text.encode()).hexdigest()[:8]
        refusal = None
        if outcome == "refuse":
            content = None
            refusal = "I'm sorry, I can't help with that request."
        elif outcome == "malformed":
            content = '{"subject": "Spring ideas", "body": '  # truncated: not JSON at all
        else:
            content = json.dumps(_fill(body.get("response_format"), digest, outcome == "no_placeholder"))

        prompt_tokens = sum(_tokens(_message_text(m)) for m in messages if isinstance(m, dict))
        completion_tokens = _tokens(content or refusal or "")
        payload = {
            "id": f"chatcmpl-local-{number:06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{body['model']}-local",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": refusal,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "service_tier": "default",
            "system_fingerprint": "fp_local",
        }
        return 200, payload, {"x-request-id": f"req_local_{number:06d}"}

    def _models(self) -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": created, "owned_by": "local"} for m in self.models],
        }


def _error(status: int, message: str) -> tuple[int, Any, dict[str, str]]:
    return (
        status,
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}},
        {},
    )


def _fill(response_format: Any, digest: str, drop_placeholder: bool) -> dict[str, Any]:
    """A JSON object satisfying the requested schema's string properties, derived from `digest`."""
    schema: dict[str, Any] = {}
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties") or {"subject": {}, "preheader": {}, "body": {}}
    greeting = "Hello there," if drop_placeholder else f"Hello {PLACEHOLDER},"
    canned = {
        "subject": f"Spring ideas {digest}",
        "preheader": f"A short round-up for audience {digest}",
        "body": f"{greeting}\n\nHere is a short look at what is new this season ({digest}).\n\nThe team",
    }
    filled: dict[str, Any] = {}
    for name, spec in properties.items():
        kind = spec.get("type", "string") if isinstance(spec, dict) else "string"
        if kind == "string":
            filled[name] = canned.get(name, f"{name} {digest}")
        elif kind in ("integer", "number"):
            filled[name] = 1
        elif kind == "boolean":
            filled[name] = True
        elif kind == "array":
            filled[name] = []
        else:
            filled[name] = None
    return filled


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: LocalOpenAIServer  # set on the bound subclass

    def log_message(self, format: str, *args: object) -> None:
        """Silent: test output should not carry request lines."""

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def _record(self, body: Any) -> None:
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        self.server_state._record(RecordedRequest(self.command, self.path, headers, body))

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if isinstance(payload, str):
            data = payload.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, self.server_state._models())
        else:
            self._send(*_error(404, f"no route for GET {self.path}"))

    def do_POST(self) -> None:
        body = self._read_json()
        self._record(body)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(*_error(404, f"no route for POST {self.path}"))
        elif not isinstance(body, dict):
            self._send(*_error(400, "the request body must be a JSON object"))
        else:
            self._send(*self.server_state._completion(body))
