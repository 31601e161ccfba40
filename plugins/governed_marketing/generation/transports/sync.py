"""The sync transport: one OpenAI chat completion per unit, on worker threads, under the rate limiter.

What is sent is built in generation/request.py (the batch transport sends the same bodies); how
fast, in generation/ratelimit.py; which errors stop the run, in generation/errors.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from governed_marketing.generation.base import (
    DraftFailure,
    DraftRequest,
    DraftResult,
    FailureCallback,
    ResultCallback,
    SubmitCallback,
)
from governed_marketing.generation.errors import (
    DraftingInterrupted,
    ProviderError,
    VendorAuthRejected,
    VendorQuotaExhausted,
)
from governed_marketing.generation.ratelimit import LimiterStopped, RateLimiter, RateLimitWaitTooLong
from governed_marketing.generation.request import (
    TEMPERATURE,
    check_unique,
    completion_body,
    parse_draft,
    reask_history,
    user_message,
)
from governed_marketing.generation.tokens import estimate_tokens

if TYPE_CHECKING:  # the SDK takes most of a second to import; only the OpenAI path needs it
    import openai

log = logging.getLogger(__name__)

#: How often the drafting loop looks at the stop flag while it waits for answers.
_POLL_S = 0.2


@dataclass
class _UnitFailed(Exception):
    """One unit could not be drafted; the run goes on when the caller takes failures."""

    failure: DraftFailure


@dataclass
class _Run:
    """What the worker threads of one `draft_many` share: when to stop sending, and what was sent."""

    stop: threading.Event
    halt_on_failure: bool  # no on_failure: the first failing unit ends the run
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: set[str] = field(default_factory=set)  # unit ids whose request has left (under `lock`)

    def about_to_send(self, request: DraftRequest) -> bool:
        """Record that this unit's request leaves now; False once the run is stopping (then it must not)."""
        with self.lock:
            if self.stop.is_set():
                return False
            self.sent.add(request.unit_id)
            return True

    def halt_if(self, error: BaseException) -> None:
        """Stop new calls now, from the worker that saw the error, before other workers can send."""
        if isinstance(error, ProviderError) or (isinstance(error, _UnitFailed) and self.halt_on_failure):
            self.stop.set()


@dataclass
class _Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    sdk_retries: int = 0  # 5xx / timeout / connection retries the SDK made
    rate_limited: int = 0  # 429s this unit waited out through the limiter


def _leave_429_to_the_limiter(response: Any) -> None:
    """httpx response hook: tell the SDK not to retry a 429 itself (the provider's limiter does).

    `x-should-retry` is the header the SDK obeys first; 5xx, 408 and timeouts keep the SDK's retries.
    """
    if response.status_code == 429:
        response.headers["x-should-retry"] = "false"


def _error_code(exc: openai.APIStatusError) -> str:
    """The vendor's error code or type, for messages (never the vendor's free-text message)."""
    return str(exc.code or exc.type or "no error code")


def _is_quota(exc: openai.APIStatusError) -> bool:
    return exc.status_code == 429 and "insufficient_quota" in (exc.code, exc.type)


class OpenAIProvider:
    """Drafts through OpenAI chat completions with a strict JSON schema, one call per unit, in parallel.

    Calls run on `concurrency` worker threads under a shared `RateLimiter` that learns the account's
    requests and tokens per minute from the response headers. Retries are split by cause (see
    `governed_marketing.generation.ratelimit`): the SDK retries 5xx, timeouts and connection errors
    (`max_retries` on the client); a 429 is waited out by every thread at once and sent again through
    the limiter, up to `max_rate_limit_retries` times. A draft that does not validate, or lacks the
    template syntax, is re-asked once with the reason. A unit that still fails is a
    `DraftFailure` (rate_limit, server, timeout, rejected, refused, filtered, client); an exhausted
    quota or rejected credentials stop the whole run (`VendorQuotaExhausted`, `VendorAuthRejected`).

    Each call carries `Idempotency-Key: <idempotency_key or custom_id>` (the re-ask `<key>-reask`), so re-sending a
    unit whose answer was lost is not paid twice by a vendor that honours the header. The provider
    drafts over its own HTTP connection pool (the SDK's default httpx client plus one response hook);
    the client's base URL, key, timeout and `max_retries` are kept.
    """

    name = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        concurrency: int,
        *,
        temperature: float = TEMPERATURE,
        max_body_chars: int | None = None,
        max_output_tokens: int | None = None,
        max_rate_limit_retries: int | None = None,
        max_rate_limit_wait_s: float = 600.0,
        limiter: RateLimiter | None = None,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ) -> None:
        import openai

        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.model = model
        self.concurrency = concurrency
        self.temperature = temperature
        self.max_body_chars = max_body_chars
        self.max_output_tokens = max_output_tokens
        self.max_rate_limit_retries = max_rate_limit_retries
        self.max_rate_limit_wait_s = max_rate_limit_wait_s
        self.limiter = limiter or RateLimiter(
            max_in_flight=concurrency, requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute
        )
        hooked = openai.DefaultHttpxClient(event_hooks={"response": [_leave_429_to_the_limiter]})
        self._api = client.with_options(http_client=hooked)

    # ---- one HTTP call, under the limiter ---------------------------------------------------
    def _send(self, request: DraftRequest, body: dict[str, Any], key: str | None, run: _Run, usage: _Usage) -> Any:
        """The raw response of one completion; 429s are waited out here, other failures classified."""
        import openai

        tokens = estimate_tokens(body)
        extra_headers = {"Idempotency-Key": key} if key else None
        first_429: float | None = None
        while True:
            try:
                ticket = self.limiter.acquire(tokens, stop=run.stop)
            except RateLimitWaitTooLong as exc:
                raise _UnitFailed(DraftFailure(request.unit_id, "rate_limit", str(exc))) from exc
            if not run.about_to_send(request):
                self.limiter.release(ticket)
                raise LimiterStopped()
            try:
                raw = self._api.chat.completions.with_raw_response.create(**body, extra_headers=extra_headers)
            except openai.APIStatusError as exc:
                if exc.status_code == 429 and not _is_quota(exc):
                    self.limiter.release(ticket, exc.response.headers)
                    usage.rate_limited += 1
                    # "Slow down" keeps the unit waiting (the limiter paces it); it fails only when the
                    # vendor keeps refusing it far longer than any per-minute limit explains.
                    first_429 = time.monotonic() if first_429 is None else first_429
                    too_many = (
                        self.max_rate_limit_retries is not None and usage.rate_limited > self.max_rate_limit_retries
                    )
                    if too_many or time.monotonic() - first_429 > self.max_rate_limit_wait_s:
                        reason = f"the vendor answered HTTP 429 ({_error_code(exc)}) {usage.rate_limited} times"
                        raise _UnitFailed(DraftFailure(request.unit_id, "rate_limit", reason)) from exc
                    self.limiter.rate_limited(exc.response.headers)
                    continue
                error = self._classify(request, exc)
                run.halt_if(error)  # before the release lets a waiting worker send
                self.limiter.release(ticket, exc.response.headers)
                raise error from exc
            except openai.APIConnectionError as exc:  # APITimeoutError is one too
                timed_out = isinstance(exc, openai.APITimeoutError)
                failure = _UnitFailed(
                    DraftFailure(request.unit_id, "timeout", "no answer in time, after the SDK's retries")
                    if timed_out
                    else DraftFailure(request.unit_id, "server", "the connection failed, after the SDK's retries")
                )
                run.halt_if(failure)
                self.limiter.release(ticket)
                raise failure from exc
            except BaseException:
                self.limiter.release(ticket)
                raise
            self.limiter.release(ticket, raw.headers)
            self.limiter.succeeded()
            usage.sdk_retries += raw.retries_taken
            return raw

    def _classify(self, request: DraftRequest, exc: openai.APIStatusError) -> Exception:
        status, code = exc.status_code, _error_code(exc)
        if _is_quota(exc):
            return VendorQuotaExhausted(
                "the vendor says this account's quota is exhausted (HTTP 429 insufficient_quota): check the "
                f"plan and billing of the OpenAI account; stopped at unit {request.unit_id}, and no further "
                "request was sent"
            )
        if status in (401, 403):
            return VendorAuthRejected(
                f"the vendor rejected the credentials (HTTP {status} {code}): check OPENAI_API_KEY and the "
                f"project's access to model {self.model}; stopped at unit {request.unit_id}, and no further "
                "request was sent"
            )
        if status == 408:
            kind, retryable = "timeout", True
        elif status >= 500:
            kind, retryable = "server", True
        else:
            kind, retryable = "client", False
        param = f", param {exc.param}" if exc.param else ""
        reason = f"the vendor answered HTTP {status} ({code}{param}) after the SDK's retries"
        return _UnitFailed(DraftFailure(request.unit_id, kind, reason, retryable=retryable))

    # ---- one unit ---------------------------------------------------------------------------
    def _draft_unit(self, request: DraftRequest, run: _Run) -> DraftResult:
        """A completion, validated into a Draft, re-asked once if it does not validate."""
        try:
            return self._draft_validated(request, run)
        except (_UnitFailed, ProviderError) as exc:
            run.halt_if(exc)
            raise

    def _draft_validated(self, request: DraftRequest, run: _Run) -> DraftResult:
        usage = _Usage()
        try:
            return self._draft_attempts(request, run, usage)
        except _UnitFailed as exc:  # what the paid attempts cost goes to the ledger with the failure
            exc.failure = replace(exc.failure, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
            raise

    def _draft_attempts(self, request: DraftRequest, run: _Run, usage: _Usage) -> DraftResult:
        history: list[dict[str, str]] = []
        for attempt in (1, 2):
            body = self._body(request, history)
            base_key = request.idempotency_key or request.custom_id
            key = (base_key if attempt == 1 else f"{base_key}-reask") if base_key else None
            raw = self._send(request, body, key, run, usage)
            completion = raw.parse()
            if completion.usage is not None:
                usage.input_tokens += completion.usage.prompt_tokens
                usage.output_tokens += completion.usage.completion_tokens
                details = completion.usage.prompt_tokens_details
                if details is not None and details.cached_tokens:
                    usage.cached_input_tokens += details.cached_tokens
            if not completion.choices:
                raise _UnitFailed(DraftFailure(request.unit_id, "rejected", "the vendor returned no choices"))
            choice = completion.choices[0]
            message = choice.message
            if message.refusal:
                raise _UnitFailed(
                    DraftFailure(request.unit_id, "refused", "the model refused to draft", retryable=False)
                )
            if choice.finish_reason == "content_filter":
                raise _UnitFailed(
                    DraftFailure(
                        request.unit_id, "filtered", "the vendor's content filter stopped the draft", retryable=False
                    )
                )
            problem, draft = parse_draft(message.content)
            if draft is not None:
                extra = {"attempts": str(attempt)}
                request_id = raw.request_id or completion._request_id
                if request_id:
                    extra["http_request_id"] = request_id
                if usage.cached_input_tokens:
                    extra["cached_input_tokens"] = str(usage.cached_input_tokens)
                if usage.sdk_retries:
                    extra["sdk_retries"] = str(usage.sdk_retries)
                if usage.rate_limited:
                    extra["rate_limited"] = str(usage.rate_limited)
                return DraftResult(
                    draft=draft,
                    model=completion.model,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    vendor_request_id=completion.id,
                    extra=extra,
                )
            if choice.finish_reason == "length":
                problem = f"it was cut off at max_completion_tokens ({problem})"
            if attempt == 2:
                raise _UnitFailed(
                    DraftFailure(
                        request.unit_id,
                        "rejected",
                        f"the draft was rejected twice; last time {problem}",
                        retryable=False,
                    )
                )
            history = reask_history(message.content, problem)
        raise AssertionError("unreachable")

    def draft(self, request: DraftRequest) -> DraftResult:
        """One unit (a convenience over `draft_many`)."""
        return self.draft_many([request])[request.unit_id]

    # ---- many units -------------------------------------------------------------------------
    def draft_many(
        self,
        requests: list[DraftRequest],
        *,
        on_result: ResultCallback | None = None,
        on_failure: FailureCallback | None = None,
        on_submit: SubmitCallback | None = None,
    ) -> dict[str, DraftResult]:
        """Draft every request on worker threads; callbacks run on this (the calling) thread.

        Requests with the same body are sent once: the first of them pays, and the answer goes to every
        one of them (the others' results carry 0 tokens and `shared_request_of` = the payer's custom_id).
        `on_submit` gets each such group (a list of one group) just before it is handed to a worker (at
        most `concurrency` groups are out at once), so a caller that records it knows which units may
        be with the vendor.

        A fatal vendor error (quota, credentials), or the first failing unit when there is no
        `on_failure`, stops new calls at once; calls already in flight are waited for and their drafts
        still go to `on_result` (they are paid for), then the error is raised. A stop request
        (`governed_marketing.stopping`: SIGTERM) or an interrupt stops new calls and returns at once,
        without waiting for calls in flight: `DraftingInterrupted` says which units were sent and which not.
        """
        from governed_marketing import stopping

        check_unique(requests)
        for request in requests:  # a bad language code is refused before anything is sent
            user_message(request)
        if not requests:
            return {}
        drafting = _Drafting(self, self._identical_requests(requests), on_result, on_failure, on_submit)
        try:
            while drafting.waiting or drafting.out:
                if stopping.stop_requested():
                    raise KeyboardInterrupt
                drafting.hand_over()
                if not drafting.out:
                    break  # stopped with nothing in flight: what is left was never handed over
                try:
                    index, outcome = drafting.finished.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                drafting.receive(index, outcome)
        except BaseException as exc:
            with drafting.run.lock:  # from here no worker sends: the split below is final
                drafting.run.stop.set()
            self.limiter.wake()
            if isinstance(exc, KeyboardInterrupt) or stopping.stop_requested():
                raise drafting.interrupted() from exc
            raise
        drafting.log_summary()
        if drafting.fatal is not None:
            raise drafting.fatal
        results = drafting.results
        return {request.unit_id: results[request.unit_id] for request in requests if request.unit_id in results}

    def _body(self, request: DraftRequest, history: list[dict[str, str]] | None = None) -> dict[str, Any]:
        """The exact request this provider sends for a unit: what is paid for, and what dedupe compares."""
        return completion_body(
            request,
            model=self.model,
            max_body_chars=self.max_body_chars,
            max_output_tokens=self.max_output_tokens,
            temperature=self.temperature,
            history=history,
        )

    def _identical_requests(self, requests: list[DraftRequest]) -> list[list[DraftRequest]]:
        """Requests grouped by the exact body they send (first seen leads and pays), in input order."""
        groups: dict[str, list[DraftRequest]] = {}
        for request in requests:
            body = self._body(request)
            digest = hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
            groups.setdefault(digest, []).append(request)
        return list(groups.values())


class _Drafting:
    """One `draft_many` call on the calling thread: hands groups to workers and takes their outcomes.

    A group is the requests with one identical body (sent once, its leader pays). `out` holds the
    groups handed to a worker and not answered yet; callbacks run here, never on a worker.
    """

    def __init__(
        self,
        provider: OpenAIProvider,
        groups: list[list[DraftRequest]],
        on_result: ResultCallback | None,
        on_failure: FailureCallback | None,
        on_submit: SubmitCallback | None,
    ) -> None:
        self.provider = provider
        self.groups = groups
        self.on_result = on_result
        self.on_failure = on_failure
        self.on_submit = on_submit
        self.run = _Run(stop=threading.Event(), halt_on_failure=on_failure is None)
        self.results: dict[str, DraftResult] = {}
        self.failures: dict[str, str] = {}
        self.fatal: BaseException | None = None
        self.rate_limited_before = provider.limiter.rate_limited_count
        self.workers = min(provider.concurrency, len(groups))
        self.finished: queue.Queue[tuple[int, DraftResult | BaseException]] = queue.Queue()
        self.waiting = deque(range(len(groups)))
        self.out: set[int] = set()

    def _work(self, index: int) -> None:
        try:
            outcome: DraftResult | BaseException = self.provider._draft_unit(self.groups[index][0], self.run)
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcome = exc
        self.finished.put((index, outcome))

    def hand_over(self) -> None:
        """Start a worker for each waiting group while fewer than `workers` are out and nothing stopped."""
        while self.waiting and len(self.out) < self.workers and not self.run.stop.is_set():
            index = self.waiting.popleft()
            if self.on_submit is not None:
                self.on_submit([self.groups[index]])
            self.out.add(index)
            threading.Thread(target=self._work, args=(index,), name="gmp-openai", daemon=True).start()

    def halt(self, error: BaseException) -> None:
        """Stop new calls; the first such error is raised once the calls in flight are answered."""
        if self.fatal is None:
            self.fatal = error
        self.run.stop.set()
        self.provider.limiter.wake()

    def receive(self, index: int, outcome: DraftResult | BaseException) -> None:
        """One group's outcome: its draft to every member, its failure to every member, or a halt."""
        self.out.discard(index)
        if isinstance(outcome, LimiterStopped):
            return
        if isinstance(outcome, _UnitFailed):
            self._failed(self.groups[index], outcome.failure)
        elif isinstance(outcome, ProviderError):
            self.halt(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            self._drafted(self.groups[index], outcome)

    def _failed(self, group: list[DraftRequest], failure: DraftFailure) -> None:
        leader = group[0]
        for request in group:
            self.failures[request.unit_id] = failure.kind
            if self.on_failure is None:
                self.halt(ProviderError(f"unit {request.unit_id}: {failure.reason}"))
            else:  # the paid attempts' tokens are the leader's; a sharer paid nothing
                paid = request is leader
                self.on_failure(
                    request,
                    replace(
                        failure,
                        unit_id=request.unit_id,
                        input_tokens=failure.input_tokens if paid else 0,
                        output_tokens=failure.output_tokens if paid else 0,
                    ),
                )

    def _drafted(self, group: list[DraftRequest], result: DraftResult) -> None:
        leader, *sharers = group
        self.results[leader.unit_id] = result
        if self.on_result is not None:
            self.on_result(leader, result)
        for request in sharers:
            shared = replace(
                result,
                input_tokens=0,
                output_tokens=0,
                extra={**result.extra, "shared_request_of": leader.custom_id or leader.unit_id},
            )
            self.results[request.unit_id] = shared
            if self.on_result is not None:
                self.on_result(request, shared)

    def interrupted(self) -> DraftingInterrupted:
        """The stop, split into units with the vendor (in doubt) and units handed over but never sent."""
        from governed_marketing import stopping

        handed = [self.groups[i] for i in sorted(self.out)]
        in_flight = [r for group in handed if group[0].unit_id in self.run.sent for r in group]
        not_sent = [r for group in handed if group[0].unit_id not in self.run.sent for r in group]
        log.warning(
            "drafting stopped (%s): %d unit(s) in flight left in doubt, %d never sent",
            stopping.stop_reason() if stopping.stop_requested() else "interrupted",
            len(in_flight),
            len(not_sent),
        )
        return DraftingInterrupted(
            f"drafting stopped by {stopping.stop_reason()}: {len(in_flight)} unit(s) were with the vendor "
            f"without an answer, {len(not_sent)} handed over but never sent",
            in_flight=in_flight,
            not_sent=not_sent,
        )

    def log_summary(self) -> None:
        by_kind: dict[str, int] = {}
        for kind in self.failures.values():
            by_kind[kind] = by_kind.get(kind, 0) + 1
        results = self.results.values()
        log.info(
            "drafted %d units with openai model %s in %d requests (%d re-asked; %d failed %s; %d rate-limit "
            "waits; %d input, %d cached and %d output tokens)",
            len(self.results),
            self.provider.model,
            len(self.groups),
            sum(1 for result in results if result.extra.get("attempts") != "1"),
            len(self.failures),
            by_kind or "",
            self.provider.limiter.rate_limited_count - self.rate_limited_before,
            sum(r.input_tokens for r in results),
            sum(int(r.extra.get("cached_input_tokens", 0)) for r in results),
            sum(r.output_tokens for r in results),
        )
