"""The OpenAI Batch API transport: a campaign's units sent as one JSONL file, re-attached, collected.

Every step is written to the generation ledger before the next one starts, so a crash or a task
retry anywhere re-attaches to what was already sent and nothing is paid for twice:

1. `submit` builds one line per unit with `request.completion_body` (the body the sync path sends), marks
   the units submitted under `pending:<submission id>`, uploads `gmp-<submission id>.jsonl`, creates
   the batch with metadata `{"gmp_submission": <submission id>, "gmp_campaign": <campaign id>}` (ids
   only, never personal data) and then puts the batch id on the units.
2. `reattach`, at the start of every try, returns the batches the campaign's submitted units are in.
   A `pending:` marker means the crash came between upload and `set_batch`: the batch is found by
   its metadata, or, if none was created, the units go back to `planned` and the orphaned upload is
   deleted.
3. The caller waits until the batches are terminal (`OpenAIBatchTrigger`, or `status` in a loop).
4. `collect` stores each draft with its ledger row, records every failure with its kind, deletes
   the input, output and error files at the vendor, and returns what to send again.

Nothing here logs request or response text: counts and ids only.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC
from typing import TYPE_CHECKING, Any

from governed_marketing.generation import ledger
from governed_marketing.generation.base import DraftFailure, DraftRequest, DraftResult
from governed_marketing.generation.request import completion_body, parse_draft, reask_history
from governed_marketing.generation.vendor import TERMINAL_BATCH_STATUSES

if TYPE_CHECKING:  # the SDK takes most of a second to import; only callers that use the vendor need it
    import openai

    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
PENDING_PREFIX = "pending:"
SUBMISSION_KEY = "gmp_submission"
CAMPAIGN_KEY = "gmp_campaign"
#: How far before the pending submit a batch may look created (clock skew between us and the vendor).
LIST_MARGIN_S = 3600

#: (input_tokens, output_tokens) -> USD.
CostOf = Callable[[int, int], float]
History = list[dict[str, str]]


class BatchError(RuntimeError):
    """A batch cannot be submitted or collected as asked; the message names the batch or unit."""


def _input_filename(submission_id: str) -> str:
    return f"gmp-{submission_id}.jsonl"


# ==== submit =====================================================================================


def request_lines(
    requests: Iterable[DraftRequest],
    *,
    model: str,
    body_kwargs: Mapping[str, Any] | None = None,
    histories: Mapping[str, History] | None = None,
) -> list[dict[str, Any]]:
    """The Batch API input lines: one POST to chat completions per unit, keyed by its ledger custom_id."""
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    for request in requests:
        cid = request.custom_id
        if not cid:
            raise BatchError(f"unit {request.unit_id} has no custom_id; plan it in the ledger before submitting")
        if cid in seen:
            raise BatchError(f"custom_id {cid} (unit {request.unit_id}) appears twice in one submission")
        seen.add(cid)
        body = completion_body(request, model=model, history=(histories or {}).get(cid), **dict(body_kwargs or {}))
        lines.append({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body})
    return lines


def submit(
    conn: Warehouse,
    client: openai.OpenAI,
    requests: list[DraftRequest],
    *,
    campaign_id: str,
    model: str,
    run_id: str,
    body_kwargs: Mapping[str, Any] | None = None,
    histories: Mapping[str, History] | None = None,
) -> str | None:
    """Send these units as one batch; return its id (None when there is nothing to send).

    Args:
        requests: the units to request, already planned in the ledger (the caller leaves out the
            succeeded and submitted ones).
        body_kwargs: `completion_body` options (max_body_chars, max_output_tokens, temperature).
        histories: the re-ask turns by custom_id (`CollectOutcome.reasks`), sent after the first two
            messages of those units.

    The batch create is not retried by the SDK: a create that timed out may have happened, and a
    blind retry would pay twice. Any failure after the units were marked leaves them `pending:`;
    the next try's `reattach` finds the batch or releases them.
    """
    if not requests:
        return None
    lines = request_lines(requests, model=model, body_kwargs=body_kwargs, histories=histories)
    custom_ids = [line["custom_id"] for line in lines]
    data = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in lines).encode()
    submission_id = uuid.uuid4().hex
    ledger.mark_submitted(conn, custom_ids, run_id=run_id, batch_id=f"{PENDING_PREFIX}{submission_id}")

    upload = client.files.create(file=(_input_filename(submission_id), data, "application/jsonl"), purpose="batch")
    batch = client.with_options(max_retries=0).batches.create(
        input_file_id=upload.id,
        endpoint=ENDPOINT,
        completion_window=COMPLETION_WINDOW,
        metadata={SUBMISSION_KEY: submission_id, CAMPAIGN_KEY: campaign_id},
    )
    ledger.set_batch(conn, custom_ids, batch.id)
    log.info(
        "campaign %s: submitted %d units as batch %s (%d re-asks, input file %s)",
        campaign_id,
        len(custom_ids),
        batch.id,
        sum(1 for cid in custom_ids if cid in (histories or {})),
        upload.id,
    )
    return batch.id


# ==== reattach ===================================================================================


def _release(conn: Warehouse, custom_ids: Iterable[str], marker: str) -> None:
    """Put units whose batch was never created back to planned; that try was not paid for."""
    for cid in custom_ids:
        conn.execute(
            """
            update ops.generation_ledger
               set status = 'planned', vendor_batch_id = null, submitted_at = null,
                   attempts = greatest(attempts - 1, 0)
             where custom_id = ? and status = 'submitted' and vendor_batch_id = ?
            """,
            [cid, marker],
        ).fetchall()


def reattach(conn: Warehouse, client: openai.OpenAI, campaign_id: str, prompt_version: str, model: str) -> list[str]:
    """The vendor batches this campaign version's submitted units are waiting in (call before submitting).

    Units under a real batch id are simply returned. Units under `pending:<submission>` are matched
    to the vendor's batch whose metadata names the submission (the crash came between create and
    `set_batch`); when no batch matches, the create never happened: the units go back to `planned`
    (to be submitted again, not paid) and the uploaded input file, found by its name, is deleted.
    Should two batches carry one submission, the later ones are cancelled.
    """
    by_marker: dict[str, list[str]] = {}
    for row in ledger.rows(conn, campaign_id, prompt_version, model).values():
        if row.status == "submitted" and row.vendor_batch_id:
            by_marker.setdefault(row.vendor_batch_id, []).append(row.custom_id)
    batch_ids = sorted(m for m in by_marker if not m.startswith(PENDING_PREFIX))
    pending = {m.removeprefix(PENDING_PREFIX): m for m in by_marker if m.startswith(PENDING_PREFIX)}
    if not pending:
        return batch_ids

    # The vendor lists newest first: stop at batches created well before the oldest pending submit.
    oldest = conn.execute(
        "select min(submitted_at) from ops.generation_ledger where vendor_batch_id in "
        f"({', '.join('?' for _ in pending)})",
        list(pending.values()),
    ).fetchone()
    since = oldest[0].replace(tzinfo=UTC).timestamp() - LIST_MARGIN_S if oldest and oldest[0] else 0.0
    found: dict[str, list[Any]] = {}  # per submission, newest first (the vendor's order)
    for batch in client.batches.list(limit=100):
        if batch.created_at < since:
            break
        metadata = batch.metadata or {}
        sid = metadata.get(SUBMISSION_KEY)
        if sid in pending and metadata.get(CAMPAIGN_KEY) == campaign_id:
            found.setdefault(sid, []).append(batch)
    for sid, marker in sorted(pending.items()):
        custom_ids = by_marker[marker]
        matches = found.get(sid, [])[::-1]  # oldest first: the one created by our own call
        if matches:
            ledger.set_batch(conn, custom_ids, matches[0].id)
            batch_ids.append(matches[0].id)
            for duplicate in matches[1:]:
                if duplicate.status not in TERMINAL_BATCH_STATUSES:
                    client.batches.cancel(duplicate.id)
            log.info(
                "campaign %s: re-attached %d units to batch %s (submission %s; %d duplicate batches)",
                campaign_id,
                len(custom_ids),
                matches[0].id,
                sid,
                len(matches) - 1,
            )
            continue
        _release(conn, custom_ids, marker)
        orphans = [f.id for f in client.files.list(purpose="batch") if f.filename == _input_filename(sid)]
        for file_id in orphans:
            _delete_file(client, file_id)
        log.info(
            "campaign %s: submission %s never became a batch; %d units back to planned, %d orphaned uploads deleted",
            campaign_id,
            sid,
            len(custom_ids),
            len(orphans),
        )
    return sorted(set(batch_ids))


# ==== status =====================================================================================


@dataclass(frozen=True)
class BatchStatus:
    """A batch's state at the vendor: ids and counts only."""

    batch_id: str
    status: str
    total: int
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    errors: tuple[str, ...] = ()  # validation error codes with their line numbers

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_BATCH_STATUSES


def status(client: openai.OpenAI, batch_id: str) -> BatchStatus:
    """Where a batch stands (one retrieve)."""
    return _summary(client.batches.retrieve(batch_id))


def _summary(batch: Any) -> BatchStatus:
    counts = batch.request_counts
    errors = tuple(
        f"{e.code or 'error'}" + (f" (line {e.line})" if e.line is not None else "")
        for e in ((batch.errors.data or []) if batch.errors else [])
    )
    return BatchStatus(
        batch_id=batch.id,
        status=batch.status,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        errors=errors,
    )


# ==== collect ====================================================================================


@dataclass
class CollectOutcome:
    """What one batch gave. `counts()` is safe for XCom and logs; `reasks` is not (it holds model text).

    `resubmit` are the custom_ids worth sending again as they were (server errors, expired or
    missing requests). `reasks` maps the custom_ids whose answer was paid for but rejected (schema,
    template syntax) to the re-ask turns to pass to `submit(histories=...)`; each unit gets one re-ask,
    a second rejection is recorded as failed. Both kinds are `failed` in the ledger until submitted.
    """

    batch_id: str
    batch_status: str
    succeeded: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # by DraftFailure.kind
    already_recorded: int = 0  # lines of units this batch no longer holds (a collect that ran before)
    unreadable_lines: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    resubmit: list[str] = field(default_factory=list)
    reasks: dict[str, History] = field(default_factory=dict)
    deleted_files: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        counts = asdict(self)
        counts["reasks"] = sorted(self.reasks)
        return counts


def _pending_in(conn: Warehouse, batch_id: str) -> set[str]:
    """Units submitted in this batch whose result is not recorded yet."""
    found = conn.execute(
        "select custom_id from ops.generation_ledger where vendor_batch_id = ? and status = 'submitted'",
        [batch_id],
    ).fetchall()
    return {row[0] for row in found}


def _read_jsonl(client: openai.OpenAI, file_id: str) -> tuple[list[dict[str, Any]], int]:
    """A vendor file's JSON lines, and how many lines could not be read."""
    lines: list[dict[str, Any]] = []
    unreadable = 0
    for raw in client.files.content(file_id).text.splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            unreadable += 1
            continue
        if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
            lines.append(line)
        else:
            unreadable += 1
    return lines, unreadable


def _reasked_ids(client: openai.OpenAI, input_file_id: str) -> set[str] | None:
    """The custom_ids this batch sent as re-asks (more than the first two messages); None if unknown."""
    import openai

    try:
        lines, _ = _read_jsonl(client, input_file_id)
    except openai.NotFoundError:
        return None
    return {line["custom_id"] for line in lines if len((line.get("body") or {}).get("messages") or []) > 2}


def _delete_file(client: openai.OpenAI, file_id: str) -> bool:
    import openai

    try:
        client.files.delete(file_id)
    except openai.NotFoundError:
        return False
    return True


class _Recorder:
    """Writes one batch's results into the ledger and tallies the outcome."""

    def __init__(
        self,
        conn: Warehouse,
        outcome: CollectOutcome,
        requests: Mapping[str, DraftRequest],
        *,
        provider: str,
        model: str,
        cost_of: CostOf,
        reasked: Collection[str] | None,
    ) -> None:
        self.conn = conn
        self.outcome = outcome
        self.requests = requests
        self.provider = provider
        self.model = model
        self.cost_of = cost_of
        self.reasked = reasked
        # The answers stay in the vendor's result file until collect ends: stored in sets, not one by one.
        self.drafts = ledger.DraftWriter(conn, provider=provider, model=model)

    def failure(
        self, cid: str, kind: str, reason: str, *, retryable: bool, input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        cost = self.cost_of(input_tokens, output_tokens) if input_tokens or output_tokens else 0.0
        unit_id = self.requests[cid].unit_id if cid in self.requests else cid
        ledger.record_failure(
            self.conn,
            cid,
            DraftFailure(unit_id=unit_id, kind=kind, reason=reason, retryable=retryable),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost,
        )
        self._spent(input_tokens, output_tokens, cost)
        self.outcome.failed[kind] = self.outcome.failed.get(kind, 0) + 1
        if retryable:
            self.outcome.resubmit.append(cid)

    def _spent(self, input_tokens: int, output_tokens: int, cost: float) -> None:
        self.outcome.input_tokens += input_tokens
        self.outcome.output_tokens += output_tokens
        self.outcome.cost_usd += cost

    def line(self, line: dict[str, Any]) -> None:
        cid = line["custom_id"]
        response = line.get("response")
        error = line.get("error")
        if not isinstance(response, dict):
            code = (error or {}).get("code") if isinstance(error, dict) else None
            if code == "batch_expired":
                self.failure(cid, "expired", "the batch expired before this request ran", retryable=True)
            else:
                self.failure(
                    cid, "server", f"the batch reported error {code or 'unknown'} for this request", retryable=True
                )
            return
        status_code = int(response.get("status_code") or 0)
        body = response.get("body") if isinstance(response.get("body"), dict) else {}
        if status_code != 200:
            vendor_error = body.get("error") if isinstance(body.get("error"), dict) else {}
            detail = f"HTTP {status_code} ({vendor_error.get('type') or 'error'}"
            detail += f", code {vendor_error['code']})" if vendor_error.get("code") else ")"
            if status_code == 429:
                self.failure(cid, "rate_limit", f"the vendor answered {detail}", retryable=True)
            elif status_code >= 500 or status_code == 0:
                self.failure(cid, "server", f"the vendor answered {detail}", retryable=True)
            else:
                self.failure(cid, "client", f"the vendor answered {detail}", retryable=False)
            return
        self.completion(cid, body, request_id=response.get("request_id"), batch_request_id=line.get("id"))

    def completion(self, cid: str, body: dict[str, Any], *, request_id: Any, batch_request_id: Any) -> None:
        usage = body.get("usage") or {}
        tokens = {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        }
        choices = body.get("choices") or []
        if not choices:
            self.failure(cid, "rejected", "the vendor returned no choices", retryable=True, **tokens)
            return
        choice = choices[0]
        message = choice.get("message") or {}
        if message.get("refusal"):
            self.failure(cid, "refused", "the model refused to draft", retryable=False, **tokens)
            return
        if choice.get("finish_reason") == "content_filter":
            self.failure(cid, "filtered", "the vendor's content filter stopped the draft", retryable=False, **tokens)
            return
        content = message.get("content")
        problem, draft = parse_draft(content)
        if draft is None:
            if self.reasked is None or cid in self.reasked:
                self.failure(cid, "rejected", f"rejected after a re-ask: {problem}", retryable=False, **tokens)
                return
            self.failure(cid, "rejected", f"re-ask pending: {problem}", retryable=False, **tokens)
            self.outcome.reasks[cid] = reask_history(content, problem)
            return
        extra = {"transport": "batch"}
        if request_id:
            extra["http_request_id"] = str(request_id)
        if batch_request_id:
            extra["batch_request_id"] = str(batch_request_id)
        result = DraftResult(
            draft=draft,
            model=str(body.get("model") or self.model),
            vendor_request_id=body.get("id"),
            extra=extra,
            **tokens,
        )
        cost = self.cost_of(result.input_tokens, result.output_tokens)
        self.drafts.add(self.requests[cid], result, cost)
        self._spent(result.input_tokens, result.output_tokens, cost)
        self.outcome.succeeded += 1


def collect(
    conn: Warehouse,
    client: openai.OpenAI,
    batch_id: str,
    requests_by_custom_id: Mapping[str, DraftRequest],
    *,
    provider: str,
    model: str,
    cost_of: CostOf,
) -> CollectOutcome:
    """Record a terminal batch's results in the ledger, then delete its files at the vendor.

    Args:
        requests_by_custom_id: the DraftRequest of every unit in the batch (drafts are stored with it).
        provider, model: the ledger's provider and model key.
        cost_of: (input_tokens, output_tokens) -> USD for this batch's lines (the batch discount is
            the caller's to apply).

    Each unit the ledger holds as submitted in this batch ends up succeeded or failed with a kind:
    server / rate_limit (HTTP 5xx / 429: resubmit), client (HTTP 4xx, or the batch failed
    validation), rejected (the answer is not a usable draft: one re-ask, see `CollectOutcome`),
    refused, filtered, expired (the window ran out before the request ran: resubmit) and missing
    (in neither file: resubmit, unless the batch was cancelled). Paid answers keep their tokens and
    cost, whatever their fate. Collecting again is harmless: units already recorded are skipped.
    """
    batch = client.batches.retrieve(batch_id)
    if batch.status not in TERMINAL_BATCH_STATUSES:
        raise BatchError(f"batch {batch_id} is still {batch.status}; collect it once it is terminal")
    pending = _pending_in(conn, batch_id)
    unknown = sorted(pending - set(requests_by_custom_id))
    if unknown:
        raise BatchError(
            f"batch {batch_id}: {len(unknown)} submitted units have no DraftRequest to store their drafts with "
            f"(first: {unknown[0]}); pass every request of the campaign version"
        )
    outcome = CollectOutcome(batch_id=batch_id, batch_status=batch.status)
    reasked = _reasked_ids(client, batch.input_file_id) if pending else set()
    recorder = _Recorder(
        conn, outcome, requests_by_custom_id, provider=provider, model=model, cost_of=cost_of, reasked=reasked
    )
    seen = _record_result_files(client, batch, pending, recorder) if pending else set()
    recorder.drafts.flush()  # before the files that hold the answers are deleted
    _record_unanswered(batch, pending - seen, recorder)
    for file_id in (batch.input_file_id, batch.output_file_id, batch.error_file_id):
        if file_id and _delete_file(client, file_id):
            outcome.deleted_files.append(file_id)
    log.info(
        "batch %s (%s): %d succeeded, failed by kind %s, %d re-asks, %d to resubmit, %d files deleted",
        batch_id,
        batch.status,
        outcome.succeeded,
        outcome.failed,
        len(outcome.reasks),
        len(outcome.resubmit),
        len(outcome.deleted_files),
    )
    return outcome


def _record_result_files(client: openai.OpenAI, batch: Any, pending: set[str], recorder: _Recorder) -> set[str]:
    """Record every line of the output and error files for a unit still pending; return the units seen."""
    import openai

    seen: set[str] = set()
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        try:
            lines, unreadable = _read_jsonl(client, file_id)
        except openai.NotFoundError:  # deleted already: its units are recorded as missing
            log.warning("batch %s: result file %s is gone at the vendor", recorder.outcome.batch_id, file_id)
            continue
        recorder.outcome.unreadable_lines += unreadable
        for line in lines:
            cid = line["custom_id"]
            if cid not in pending or cid in seen:
                recorder.outcome.already_recorded += 1
                continue
            seen.add(cid)
            recorder.line(line)
    return seen


def _record_unanswered(batch: Any, unanswered: set[str], recorder: _Recorder) -> None:
    """Units in neither file: why, from the batch's status (a failed validation, a cancel, the window)."""
    summary, batch_id = _summary(batch), recorder.outcome.batch_id
    for cid in sorted(unanswered):
        if batch.status == "failed":
            codes = ", ".join(summary.errors) or "no reason given"
            recorder.failure(cid, "client", f"batch {batch_id} failed validation: {codes}", retryable=False)
        elif batch.status == "cancelled":
            recorder.failure(cid, "missing", f"batch {batch_id} was cancelled before this request ran", retryable=False)
        elif batch.status == "expired":
            recorder.failure(cid, "expired", "the batch expired before this request ran", retryable=True)
        else:
            recorder.failure(cid, "missing", f"batch {batch_id} returned no result for this request", retryable=True)
