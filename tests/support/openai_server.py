"""A local OpenAI-compatible HTTP server: the edge of the world for tests of the real `openai` SDK.

It answers `POST /v1/chat/completions` with a `chat.completion` whose message content is JSON that
satisfies the request's `response_format` json_schema (deterministic, derived from the last user
message; a `body` property is plain text without a greeting, as the prompt asks), and `GET /v1/models`. Every
request is recorded (arrival time, path, headers without Authorization, parsed JSON body) in
`server.requests`, so a test can scan exactly what left. Faults are queued by the test:

    with LocalOpenAIServer(rpm=600, tpm=200_000, window_s=6, latency_s=0.05) as server:
        server.fail_next(429, headers={"retry-after-ms": "1"})
        server.malformed_next(1)          # content that is not valid JSON for the schema
        server.refuse_next(1)             # message.refusal instead of content
        server.placeholder_next(1)        # valid JSON, but the body greets with {{ first_name }} (rejected)
        server.timeout_next(1, seconds=2) # answer only after 2 s (longer than the client's timeout)
        server.quota_exhausted(after=10)  # 429 insufficient_quota after 10 more paid completions
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-local")

Rate limits (`rpm`, `tpm`, or `set_limits`) work like OpenAI's: a budget per resource that refills
continuously and is full again `window_s` after it was emptied (60 s for the real per-minute limits;
a short window makes a test fast: rpm=600 over window_s=6 admits 60 requests at once, then 10 a
second). A request costs one request and its prompt's rough tokens plus `max_completion_tokens`, as
OpenAI counts them before answering; over budget it gets 429 with `retry-after-ms` and `retry-after`.
While limits are set, every chat response carries `x-ratelimit-{limit,remaining,reset}-{requests,
tokens}`; the limit is the budget per window (the per-minute limit when window_s is 60).
`limit_headers=False` (constructor or `set_limits`) is a vendor like vLLM, Ollama or most proxies:
no `x-ratelimit-*` headers at all, and a bare 429 (no `retry-after`) over the limit.

`Idempotency-Key` is honoured: a repeated key whose first answer was 200 gets the stored answer
again (not paid again; `x-idempotent-replayed: true`), a key still being answered gets 409 with the
time left, and a key reused with another body gets 400. `paid_requests` / `paid_tokens` count
completions produced (not replays), `accepted()` lists (time, tokens) of requests admitted by the
limits, `answers()` lists (time, status) of every chat answer, so a benchmark can compute throughput.
"""

from __future__ import annotations

import hashlib
import json
import math
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
    at: float = field(default_factory=time.monotonic)  # arrival, time.monotonic() of this process


@dataclass
class _Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def _tokens(text: str) -> int:
    """A rough token count (about four characters a token), enough for usage accounting tests."""
    return max(1, len(text) // 4)


def _go_duration(seconds: float) -> str:
    """A duration the way OpenAI's x-ratelimit-reset-* headers write it ("20ms", "1s", "6m0s"), rounded up."""
    millis = math.ceil(max(0.0, seconds) * 1000)
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{text}" if minutes else text


class _Budget:
    """One rate limit: `capacity` a window, refilled continuously so that it is full `window_s` after empty."""

    def __init__(self, capacity: float, window_s: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / window_s
        self.level = capacity
        self._updated = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + self.rate * (now - self._updated))
        self._updated = now

    def wait_for(self, amount: float) -> float:
        return 0.0 if self.level >= amount else (amount - self.level) / self.rate

    def headers(self, resource: str) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{resource}": str(int(self.capacity)),
            f"x-ratelimit-remaining-{resource}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{resource}": _go_duration((self.capacity - self.level) / self.rate),
        }


@dataclass
class _Stored:
    """An Idempotency-Key's answer: pending until produced, then replayed for the same body."""

    body_digest: str
    done: threading.Event = field(default_factory=threading.Event)
    ready_at: float = 0.0
    answer: tuple[int, Any, dict[str, str]] | None = None


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

    def __init__(
        self,
        models: tuple[str, ...] = DEFAULT_MODELS,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        window_s: float = 60.0,
        latency_s: float = 0.0,
        limit_headers: bool = True,
    ) -> None:
        self.models = models
        self.limit_headers = limit_headers
        self.latency_s = latency_s
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failures: deque[_Failure] = deque()
        self._malformed = 0
        self._refusals = 0
        self._placeholder = 0
        self._sign_offs: list[str] = []
        self._timeouts: deque[float] = deque()
        self._quota_after: int | None = None  # paid completions allowed before insufficient_quota
        self._counter = 0
        self._request_budget: _Budget | None = None
        self._token_budget: _Budget | None = None
        self._accepted: list[tuple[float, int]] = []
        self._answers: list[tuple[float, int]] = []
        self._idempotency: dict[str, _Stored] = {}
        self._cache_prefixes: set[tuple[str, str]] = set()
        self.paid_requests = 0
        self.paid_tokens = 0
        self.rate_limited = 0  # 429s the limits emulation answered (not injected ones)
        self.replayed = 0  # answers served again for a repeated Idempotency-Key
        self.set_limits(rpm, tpm, window_s, limit_headers=limit_headers)
        self._batch_api: Any = None
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

    @property
    def batch_api(self) -> Any:
        """The Files and Batch API emulation (tests/support/openai_batch_api.py), made on first use."""
        with self._lock:
            if self._batch_api is None:
                from tests.support.openai_batch_api import BatchAPI

                self._batch_api = BatchAPI(self)
            return self._batch_api

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

    def placeholder_next(self, n: int = 1) -> None:
        """The next n completions are schema-valid but greet with the `{{ first_name }}` template syntax.

        Drafts must carry no template syntax (the greeting is composed locally), so they are rejected.
        """
        with self._lock:
            self._placeholder += n

    def sign_off_next(self, text: str, n: int = 1) -> None:
        """The next n schema-valid completions end their body with `text`: a vendor that writes a phone
        number, an address or a link into its draft."""
        with self._lock:
            self._sign_offs.extend([text] * n)

    def no_placeholder_next(self, n: int = 1) -> None:
        """Old name of `placeholder_next` (from when drafts had to carry the placeholder): n rejectable drafts."""
        self.placeholder_next(n)

    def timeout_next(self, n: int = 1, seconds: float = 2.0) -> None:
        """The next n chat completions are produced (and paid) at once but answered only after `seconds`."""
        with self._lock:
            self._timeouts.extend([seconds] * n)

    def quota_exhausted(self, after: int = 0) -> None:
        """After `after` more paid completions, every chat completion gets 429 insufficient_quota."""
        with self._lock:
            self._quota_after = self.paid_requests + after

    def set_limits(
        self, rpm: float | None = None, tpm: float | None = None, window_s: float = 60.0, *, limit_headers: bool = True
    ) -> None:
        """Requests and tokens allowed per minute (None: unlimited), enforced over `window_s` (budgets full).

        `limit_headers=False`: say nothing about the limits (no x-ratelimit-*, no retry-after).
        """
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        now = time.monotonic()
        with self._lock:
            self.window_s = window_s
            self.limit_headers = limit_headers
            self._request_budget = _Budget(rpm * window_s / 60, window_s, now) if rpm else None
            self._token_budget = _Budget(tpm * window_s / 60, window_s, now) if tpm else None

    # ---- what was paid and admitted ---------------------------------------------------------
    def accepted(self) -> list[tuple[float, int]]:
        """(time.monotonic(), tokens counted) of every chat request the rate limits admitted, oldest first."""
        with self._lock:
            return list(self._accepted)

    def answers(self) -> list[tuple[float, int]]:
        """(time.monotonic(), HTTP status) of every chat completion answer, in the order decided."""
        with self._lock:
            return list(self._answers)

    def max_requests_in_window(self, window_s: float | None = None) -> int:
        """The most admitted requests in any span of `window_s` (default: the limits' window)."""
        span = window_s or self.window_s
        times = [t for t, _ in self.accepted()]
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= span:
                start += 1
            best = max(best, end - start + 1)
        return best

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
            if self._placeholder:
                self._placeholder -= 1
                return "placeholder", None, self._counter
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
            filled = _fill(body.get("response_format"), digest, outcome == "placeholder")
            with self._lock:
                sign_off = self._sign_offs.pop(0) if self._sign_offs else None
            if sign_off and isinstance(filled.get("body"), str):
                filled["body"] += f"\n{sign_off}"
            content = json.dumps(filled)

        prompt_tokens = sum(_tokens(_message_text(m)) for m in messages if isinstance(m, dict))
        completion_tokens = _tokens(content or refusal or "")
        cached_tokens = self._cached_tokens(body)
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
                "prompt_tokens_details": {"cached_tokens": cached_tokens},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_local",
        }
        return 200, payload, {"x-request-id": f"req_local_{number:06d}"}

    def _cached_tokens(self, body: dict[str, Any]) -> int:
        """Prompt caching: a system prompt seen before under the same prompt_cache_key is served from cache."""
        messages = body.get("messages") or []
        first = messages[0] if messages and isinstance(messages[0], dict) else {}
        if first.get("role") != "system":
            return 0
        prefix = (str(body.get("prompt_cache_key") or ""), _message_text(first))
        with self._lock:
            seen = prefix in self._cache_prefixes
            self._cache_prefixes.add(prefix)
        return _tokens(prefix[1]) if seen else 0

    def _limit_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if not self.limit_headers:
            return headers
        if self._request_budget is not None:
            headers.update(self._request_budget.headers("requests"))
        if self._token_budget is not None:
            headers.update(self._token_budget.headers("tokens"))
        return headers

    def _admit(self, tokens: int, now: float) -> tuple[int, Any, dict[str, str]] | None:
        """Charge the rate limits for one request (lock held); the 429 answer when over budget."""
        waits = []
        for budget, amount in ((self._request_budget, 1), (self._token_budget, tokens)):
            if budget is not None:
                budget.refill(now)
                if amount > budget.capacity:
                    status, payload, _ = _error(429, f"Request too large: {amount} tokens, limit {budget.capacity:.0f}")
                    payload["error"].update(type="tokens", code="rate_limit_exceeded")
                    return status, payload, self._limit_headers()
                waits.append(budget.wait_for(amount))
        wait = max(waits, default=0.0)
        if wait > 0:
            self.rate_limited += 1
            status, payload, _ = _error(429, "Rate limit reached; please try again later.")
            payload["error"].update(type="requests", code="rate_limit_exceeded")
            retry = {"retry-after-ms": str(math.ceil(wait * 1000)), "retry-after": str(math.ceil(wait))}
            if not self.limit_headers:
                retry = {}
            return status, payload, {**self._limit_headers(), **retry}
        for budget, amount in ((self._request_budget, 1), (self._token_budget, tokens)):
            if budget is not None:
                budget.level -= amount
        self._accepted.append((now, tokens))
        return None

    def _chat(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any, dict[str, str], float]:
        """One HTTP chat completion: quota, rate limits, Idempotency-Key, then `_completion`.

        Returns the answer and how long to wait before sending it (latency, or an injected timeout).
        `_completion` stays the pure answer (the Batch API emulation reuses it without any of this).
        """
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not body.get("model"):
            return (*self._completion(body), 0.0)
        prompt_tokens = sum(_tokens(_message_text(m)) for m in messages if isinstance(m, dict))
        counted = prompt_tokens + int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
        key = headers.get("idempotency-key")
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._quota_after is not None and self.paid_requests >= self._quota_after:
                self._answers.append((now, 429))
                status, payload, _ = _error(
                    429,
                    "You exceeded your current quota, please check your plan and billing details.",
                )
                payload["error"].update(type="insufficient_quota", code="insufficient_quota")
                return status, payload, self._limit_headers(), 0.0
            refused = self._admit(counted, now)
            if refused is not None:
                self._answers.append((now, refused[0]))
                return (*refused, 0.0)
            limit_headers = self._limit_headers()
            stored = self._idempotency.get(key) if key else None
            if stored is not None and stored.body_digest != digest:
                self._answers.append((now, 400))
                return (*_error(400, "Idempotency-Key was already used with a different request body"), 0.0)
            if stored is not None and not stored.done.is_set():
                self._answers.append((now, 409))
                left = max(0.001, stored.ready_at - now)
                status, payload, _ = _error(409, "A request with this Idempotency-Key is still in progress")
                return status, payload, {**limit_headers, "retry-after-ms": str(math.ceil(left * 1000))}, 0.0
            if stored is not None and stored.answer is not None:
                self.replayed += 1
                self._answers.append((now, stored.answer[0]))
                status, payload, extra = stored.answer
                return status, payload, {**extra, **limit_headers, "x-idempotent-replayed": "true"}, 0.0
            delay = self._timeouts.popleft() if self._timeouts else self.latency_s
            if key:
                stored = self._idempotency[key] = _Stored(digest, ready_at=now + delay)
        status, payload, extra = self._completion(body)
        with self._lock:
            self._answers.append((now, status))
            if status == 200:
                self.paid_requests += 1
                self.paid_tokens += payload["usage"]["total_tokens"]
            if stored is not None:
                if status == 200:
                    stored.answer = (status, payload, extra)
                else:  # only a 200 is kept: a failed call may be sent again with the same key
                    self._idempotency.pop(key or "", None)
        return status, payload, {**extra, **limit_headers}, delay

    def _finish(self, body: dict[str, Any], headers: dict[str, str]) -> None:
        """Mark an Idempotency-Key's answer as sent (after its latency), so repeats replay it."""
        key = headers.get("idempotency-key")
        with self._lock:
            stored = self._idempotency.get(key) if key else None
        if stored is not None:
            stored.done.set()

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


def _fill(response_format: Any, digest: str, placeholder: bool) -> dict[str, Any]:
    """A JSON object satisfying the requested schema's string properties, derived from `digest`.

    The body has no greeting (the shop adds it); `placeholder` makes it greet with template syntax.
    """
    schema: dict[str, Any] = {}
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties") or {"subject": {}, "preheader": {}, "body": {}}
    greeting = f"Hello {PLACEHOLDER},\n\n" if placeholder else ""
    canned = {
        "subject": f"Spring ideas {digest}",
        "preheader": f"A short round-up for audience {digest}",
        "body": f"{greeting}Here is a short look at what is new this season ({digest}).\n\nThe team",
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

    def _files_and_batches(self) -> bool:
        """Files and Batch API routes live in openai_batch_api.py; True when it answered."""
        if not self.path.startswith(("/v1/files", "/v1/batches")):
            return False
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw and "json" in (self.headers.get("Content-Type") or "") else None
        except ValueError:
            body = None
        self._record(body)
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() != "authorization"}
        status, payload, extra = self.server_state.batch_api.handle(self.command, self.path, headers, raw)
        self._send(status, payload, extra)
        return True

    def do_GET(self) -> None:
        if self._files_and_batches():
            return
        self._record(None)
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, self.server_state._models())
        else:
            self._send(*_error(404, f"no route for GET {self.path}"))

    def do_DELETE(self) -> None:
        if not self._files_and_batches():
            self._record(None)
            self._send(*_error(404, f"no route for DELETE {self.path}"))

    def do_POST(self) -> None:
        if self._files_and_batches():
            return
        body = self._read_json()
        self._record(body)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(*_error(404, f"no route for POST {self.path}"))
        elif not isinstance(body, dict):
            self._send(*_error(400, "the request body must be a JSON object"))
        else:
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload, extra, delay = self.server_state._chat(body, headers)
            try:
                if delay > 0:
                    time.sleep(delay)
                self.server_state._finish(body, headers)
                self._send(status, payload, extra)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout): that is the test
                self.close_connection = True
