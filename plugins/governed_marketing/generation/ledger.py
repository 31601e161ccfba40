"""The generation ledger: one row per unit of paid work, written before anything is submitted.

A unit is (campaign, cohort or recipient pseudonym, prompt version, model). Its life:

    planned --submit--> submitted --result--> succeeded
                            |                    |  (the content gate rejects the draft)
                            +--failure--> failed  +--> rejected
    failed / rejected / planned / purged (retention deleted the draft): requested again next run
    submitted: re-attached (batch: the batch id is on the row), never submitted blind a second time
    submitted --SIGTERM, or a crash found by the next run--> in_doubt (sync: sent, no answer recorded)
    in_doubt: sent again under the same Idempotency-Key (the same attempt): paid once where the vendor
              honours the key; `in_doubt_attempts` / `in_doubt_cost_usd` say how often and how much
              may have been paid twice where it does not

Identical requests are sent once: the first unit of a group with the same request body pays (its
row carries the tokens and cost) and the others carry `shared_request_of` = its custom_id and 0 cost.

Intent is recorded (`plan`) before any request leaves, the submit is recorded before the call
(`mark_submitted`), and each draft is stored with its ledger row in one transaction
(`record_success`; drafts that cost nothing to draft again are stored in sets: `DraftWriter`),
so a crash anywhere leaves a ledger that says what was paid for. The ledger
holds ids, counts, tokens and money: never request or response text, never personal data
(individual-mode unit ids are pseudonyms).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

from governed_marketing.generation.base import DraftFailure, DraftRequest, DraftResult

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

STATUSES = ("planned", "submitted", "succeeded", "failed", "rejected", "purged", "in_doubt")
#: Units a run still has to request (besides re-attaching to `submitted` ones). `purged`: the draft
#: passed its retention period and was deleted; `in_doubt`: sent, but the run ended before the answer.
TO_REQUEST = ("planned", "failed", "rejected", "purged", "in_doubt")
#: Statuses whose next send is the same attempt (the same Idempotency-Key), not a new paid try.
SAME_ATTEMPT = ("submitted", "in_doubt")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def custom_id(campaign_id: str, unit_id: str, prompt_version: str, model: str) -> str:
    """The unit's stable id at the vendor: Batch API custom_id and Idempotency-Key.

    A hash, so the vendor sees neither the campaign's cohort ids nor (in individual mode) pseudonyms.
    """
    digest = hashlib.sha256("\x1f".join((campaign_id, unit_id, prompt_version, model)).encode()).hexdigest()
    return f"gmp-{digest[:32]}"


@dataclass(frozen=True)
class UnitEstimate:
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True)
class LedgerRow:
    unit_id: str
    custom_id: str
    status: str
    attempts: int
    vendor_batch_id: str | None


def plan(
    conn: Warehouse,
    requests: Iterable[DraftRequest],
    *,
    model: str,
    provider: str,
    transport: str,
    unit_kind: str,
    run_id: str,
    estimates: dict[str, UnitEstimate] | None = None,
) -> None:
    """Record the intent to draft each unit (idempotent: a unit already in the ledger keeps its row).

    Units still to request take the current transport and estimate; finished and submitted ones are
    left exactly as they are.
    """
    now = _now()
    estimates = estimates or {}
    records = []
    for request in requests:
        estimate = estimates.get(request.unit_id)
        records.append(
            {
                "campaign_id": request.campaign_id,
                "unit_id": request.unit_id,
                "prompt_version": request.prompt_version,
                "model": model,
                "custom_id": request.custom_id
                or custom_id(request.campaign_id, request.unit_id, request.prompt_version, model),
                "estimated_input_tokens": estimate.input_tokens if estimate else None,
                "estimated_output_tokens": estimate.output_tokens if estimate else None,
                "estimated_cost_usd": estimate.cost_usd if estimate else None,
            }
        )
    if not records:
        return
    # One statement for all units (not one per unit): a large individual-mode campaign has a row per recipient.
    frame = pd.DataFrame(records).astype(
        {"estimated_input_tokens": "Int64", "estimated_output_tokens": "Int64", "estimated_cost_usd": "Float64"}
    )
    conn.temp_table("ledger_plan", frame)
    conn.execute(
        """
        insert into ops.generation_ledger (
            campaign_id, unit_id, prompt_version, model, custom_id, unit_kind, provider, transport,
            status, estimated_input_tokens, estimated_output_tokens, estimated_cost_usd, run_id, planned_at
        )
        select campaign_id, unit_id, prompt_version, model, custom_id, ?, ?, ?, 'planned',
               estimated_input_tokens, estimated_output_tokens, estimated_cost_usd, ?, ?
        from ledger_plan
        on conflict do nothing
        """,
        [unit_kind, provider, transport, run_id, now],
    ).fetchall()
    conn.execute(
        """
        update ops.generation_ledger as l
           set transport = ?, run_id = ?,
               estimated_input_tokens = coalesce(p.estimated_input_tokens, l.estimated_input_tokens),
               estimated_output_tokens = coalesce(p.estimated_output_tokens, l.estimated_output_tokens),
               estimated_cost_usd = coalesce(p.estimated_cost_usd, l.estimated_cost_usd)
          from ledger_plan as p
         where l.custom_id = p.custom_id and l.status in ('planned', 'failed', 'rejected', 'purged')
        """,
        [transport, run_id],
    ).fetchall()
    conn.execute("drop table if exists ledger_plan").fetchall()


def rows(conn: Warehouse, campaign_id: str, prompt_version: str, model: str) -> dict[str, LedgerRow]:
    """The campaign's ledger rows for this prompt version and model, by unit id."""
    result = conn.execute(
        """
        select unit_id, custom_id, status, attempts, vendor_batch_id
        from ops.generation_ledger
        where campaign_id = ? and prompt_version = ? and model = ?
        """,
        [campaign_id, prompt_version, model],
    ).fetchall()
    return {r[0]: LedgerRow(*r) for r in result}


def mark_submitted(
    conn: Warehouse,
    custom_ids: Iterable[str],
    *,
    run_id: str,
    batch_id: str | None = None,
) -> None:
    """Record that these units are about to be (or have just been) sent; attempts count paid tries.

    A unit already `submitted` or `in_doubt` (after a crash or SIGTERM) keeps its attempt number: it is
    the same try.
    """
    ids = list(custom_ids)
    if not ids:
        return
    conn.temp_table("ledger_submit", pd.DataFrame({"custom_id": ids}))
    conn.execute(
        """
        update ops.generation_ledger
           set attempts = attempts + (case when status in ('submitted', 'in_doubt') then 0 else 1 end),
               status = 'submitted', submitted_at = ?, run_id = ?,
               vendor_batch_id = coalesce(?, vendor_batch_id), last_error_kind = null, last_error = null
         where custom_id in (select custom_id from ledger_submit)
        """,
        [_now(), run_id, batch_id],
    ).fetchall()
    conn.execute("drop table if exists ledger_submit").fetchall()


def idempotency_key(row: LedgerRow) -> str:
    """The key of the try a sync call belongs to (see DraftRequest.idempotency_key)."""
    attempt = row.attempts if row.status in SAME_ATTEMPT else row.attempts + 1
    return f"{row.custom_id}-{max(attempt, 1)}"


def set_batch(conn: Warehouse, custom_ids: Iterable[str], batch_id: str) -> None:
    """Attach the vendor's batch id to units already marked submitted (re-attach point for retries)."""
    for cid in custom_ids:
        conn.execute(
            "update ops.generation_ledger set vendor_batch_id = ? where custom_id = ?", [batch_id, cid]
        ).fetchall()


def record_success(
    conn: Warehouse,
    request: DraftRequest,
    result: DraftResult,
    *,
    provider: str,
    model: str,
    cost_usd: float,
) -> None:
    """Store one draft and close its ledger row in one transaction (both or neither survive a crash)."""
    record_successes(conn, [(request, result, cost_usd)], provider=provider, model=model)


def record_successes(
    conn: Warehouse,
    stored: Sequence[tuple[DraftRequest, DraftResult, float]],
    *,
    provider: str,
    model: str,
) -> None:
    """Store these drafts and close their ledger rows in one transaction: all of them, or none.

    Set-based: one statement per table whatever the number of drafts (at 1M contacts, 7,846 drafts
    stored one transaction each spent 124 s in the warehouse). `model` is the ledger's model key
    (what was asked for); the vendor's exact model name is kept in neither table's key so a dated
    snapshot name does not make a rerun pay again. Each item is (request, result, cost in USD).
    """
    if not stored:
        return
    now = _now()
    text = "string"
    frame = pd.DataFrame(
        {
            "custom_id": pd.Series(
                [r.custom_id or custom_id(r.campaign_id, r.unit_id, r.prompt_version, model) for r, _, _ in stored],
                dtype=text,
            ),
            "campaign_id": pd.Series([r.campaign_id for r, _, _ in stored], dtype=text),
            "unit_id": pd.Series([r.unit_id for r, _, _ in stored], dtype=text),
            "prompt_version": pd.Series([r.prompt_version for r, _, _ in stored], dtype=text),
            "language": pd.Series([r.language for r, _, _ in stored], dtype=text),
            "subject": pd.Series([d.draft.subject for _, d, _ in stored], dtype=text),
            "preheader": pd.Series([d.draft.preheader for _, d, _ in stored], dtype=text),
            "body": pd.Series([d.draft.body for _, d, _ in stored], dtype=text),
            "input_tokens": pd.Series([d.input_tokens for _, d, _ in stored], dtype="int64"),
            "output_tokens": pd.Series([d.output_tokens for _, d, _ in stored], dtype="int64"),
            "vendor_request_id": pd.Series([d.vendor_request_id for _, d, _ in stored], dtype=text),
            "cost_usd": pd.Series([cost for _, _, cost in stored], dtype="float64"),
        }
    )
    conn.temp_table("ledger_stored", frame)
    conn.execute("begin transaction")
    try:
        conn.execute(
            """
            delete from ops.generated_content
             where model = ? and exists (
                 select 1 from ledger_stored s
                  where s.campaign_id = generated_content.campaign_id and s.unit_id = generated_content.unit_id
                    and s.prompt_version = generated_content.prompt_version
             )
            """,
            [model],
        ).fetchall()
        conn.execute(
            """
            insert into ops.generated_content (
                campaign_id, unit_id, prompt_version, provider, model, language, subject, preheader, body,
                input_tokens, output_tokens, vendor_request_id, generated_at
            )
            select campaign_id, unit_id, prompt_version, ?, ?, language, subject, preheader, body,
                   input_tokens, output_tokens, vendor_request_id, ?
              from ledger_stored
            """,
            [provider, model, now],
        ).fetchall()
        conn.execute(
            """
            update ops.generation_ledger
               set status = 'succeeded', vendor_request_id = s.vendor_request_id,
                   input_tokens = generation_ledger.input_tokens + s.input_tokens,
                   output_tokens = generation_ledger.output_tokens + s.output_tokens,
                   cost_usd = generation_ledger.cost_usd + s.cost_usd, finished_at = ?,
                   last_error_kind = null, last_error = null
              from ledger_stored s
             where generation_ledger.custom_id = s.custom_id
            """,
            [now],
        ).fetchall()
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    finally:
        conn.execute("drop table if exists ledger_stored").fetchall()


#: Drafts per transaction of a `DraftWriter` (one write per draft cost 16 ms each at 1M contacts).
DRAFTS_PER_WRITE = 1000


class DraftWriter:
    """Drafts that cost nothing to draft again, stored in sets of `max_rows` (one transaction each).

    For the offline templates and for answers still held in a vendor batch's result file: a crash
    before a write loses nothing paid for (the offline units are drafted again for free; a batch is
    collected again). A draft paid for in a sync call is stored the moment it arrives instead
    (`record_success`). The caller flushes before it reads the ledger again and when drafting ends.
    """

    def __init__(self, conn: Warehouse, *, provider: str, model: str, max_rows: int | None = None) -> None:
        self.conn, self.provider, self.model = conn, provider, model
        self.max_rows = max_rows or DRAFTS_PER_WRITE
        self.pending: list[tuple[DraftRequest, DraftResult, float]] = []

    def add(self, request: DraftRequest, result: DraftResult, cost_usd: float) -> None:
        self.pending.append((request, result, cost_usd))
        if len(self.pending) >= self.max_rows:
            self.flush()

    def flush(self) -> int:
        """Write what waits; returns how many drafts were written."""
        written = self.pending
        record_successes(self.conn, written, provider=self.provider, model=self.model)
        self.pending = []  # kept if the write failed: the caller's next flush tries again
        return len(written)


def record_failure(
    conn: Warehouse,
    request_custom_id: str,
    failure: DraftFailure,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: float = 0.0,
) -> None:
    """Mark a unit failed with its reason (and whatever it cost); the next run requests it again."""
    conn.execute(
        """
        update ops.generation_ledger
           set status = 'failed', last_error_kind = ?, last_error = ?, finished_at = ?,
               input_tokens = input_tokens + ?, output_tokens = output_tokens + ?, cost_usd = cost_usd + ?
         where custom_id = ?
        """,
        [failure.kind, failure.reason[:500], _now(), input_tokens, output_tokens, cost_usd, request_custom_id],
    ).fetchall()


def mark_rejected(conn: Warehouse, campaign_id: str, unit_reasons: dict[str, str], **key: str) -> None:
    """The content gate rejected these units' drafts: drop the drafts and request them again next run.

    `key` holds prompt_version and model.
    """
    for unit_id, reason in unit_reasons.items():
        where = [campaign_id, unit_id, key["prompt_version"], key["model"]]
        conn.execute(
            """
            update ops.generation_ledger set status = 'rejected', last_error_kind = 'rejected', last_error = ?
             where campaign_id = ? and unit_id = ? and prompt_version = ? and model = ?
            """,
            [reason[:500], *where],
        ).fetchall()
        conn.execute(
            "delete from ops.generated_content "
            "where campaign_id = ? and unit_id = ? and prompt_version = ? and model = ?",
            where,
        ).fetchall()


def totals(conn: Warehouse, campaign_id: str, prompt_version: str, model: str) -> dict[str, float]:
    """Counts by status and the money spent so far on this campaign version: for the summary."""
    by_status = dict(
        conn.execute(
            "select status, count(*) from ops.generation_ledger "
            "where campaign_id = ? and prompt_version = ? and model = ? group by status",
            [campaign_id, prompt_version, model],
        ).fetchall()
    )
    spent = conn.execute(
        "select coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0), "
        "coalesce(sum(attempts), 0) from ops.generation_ledger "
        "where campaign_id = ? and prompt_version = ? and model = ?",
        [campaign_id, prompt_version, model],
    ).fetchone()
    assert spent is not None
    return {
        **{status: int(by_status.get(status, 0)) for status in STATUSES},
        "input_tokens": int(spent[0]),
        "output_tokens": int(spent[1]),
        "cost_usd": float(spent[2]),
        "attempts": int(spent[3]),
    }


# ==== in doubt, and shared requests ================================================================


def mark_shared(conn: Warehouse, payer_custom_id: str, sharer_custom_ids: Iterable[str]) -> None:
    """One request is sent for these units (identical bodies): the payer's row pays, the others point to it."""
    sharers = [cid for cid in sharer_custom_ids if cid != payer_custom_id]
    conn.execute(
        "update ops.generation_ledger set shared_request_of = null where custom_id = ?", [payer_custom_id]
    ).fetchall()
    for cid in sharers:
        conn.execute(
            "update ops.generation_ledger set shared_request_of = ? where custom_id = ?", [payer_custom_id, cid]
        ).fetchall()


def record_in_doubt(conn: Warehouse, custom_ids: Iterable[str], reason: str) -> int:
    """Sent, and no answer recorded: `in_doubt`, with the estimated cost of a possible second payment.

    Only rows still `submitted` change (an answer that was recorded wins). The estimated cost is
    counted on the paying row only (a unit that shared its request adds nothing). Returns how many.
    """
    ids = list(custom_ids)
    if not ids:
        return 0
    conn.temp_table("ledger_in_doubt", pd.DataFrame({"custom_id": ids}))
    changed = conn.execute(
        """
        update ops.generation_ledger
           set status = 'in_doubt', in_doubt_attempts = coalesce(in_doubt_attempts, 0) + 1,
               in_doubt_cost_usd = coalesce(in_doubt_cost_usd, 0)
                   + (case when shared_request_of is null then coalesce(estimated_cost_usd, 0) else 0 end),
               last_error_kind = 'in_doubt', last_error = ?, finished_at = ?
         where custom_id in (select custom_id from ledger_in_doubt) and status = 'submitted'
        returning custom_id
        """,
        [reason[:500], _now()],
    ).fetchall()
    conn.execute("drop table if exists ledger_in_doubt").fetchall()
    return len(changed)


def record_not_sent(conn: Warehouse, custom_ids: Iterable[str]) -> None:
    """Handed to the transport but never sent (the run stopped first): undo the submit.

    A unit that was in doubt before goes back to `in_doubt` (its next send is still the same attempt);
    any other goes back to `planned`, its attempt not counted.
    """
    ids = list(custom_ids)
    if not ids:
        return
    conn.temp_table("ledger_not_sent", pd.DataFrame({"custom_id": ids}))
    conn.execute(
        """
        update ops.generation_ledger
           set status = case when coalesce(in_doubt_attempts, 0) > 0 then 'in_doubt' else 'planned' end,
               attempts = case when coalesce(in_doubt_attempts, 0) > 0 then attempts else greatest(attempts - 1, 0) end
         where custom_id in (select custom_id from ledger_not_sent) and status = 'submitted'
        """
    ).fetchall()
    conn.execute("drop table if exists ledger_not_sent").fetchall()


def record_crashed_sync_units(conn: Warehouse, campaign_id: str, prompt_version: str, model: str) -> int:
    """Sync units a previous run left `submitted` (it crashed or was killed mid-call): mark them in doubt.

    Batch units (a vendor batch id on the row) are not in doubt: the batch is re-attached.
    """
    stale = conn.execute(
        """
        select custom_id from ops.generation_ledger
         where campaign_id = ? and prompt_version = ? and model = ? and status = 'submitted'
           and vendor_batch_id is null and transport <> 'batch'
        """,
        [campaign_id, prompt_version, model],
    ).fetchall()
    reason = "a run ended (crash or kill) after sending this unit and before its answer was recorded"
    return record_in_doubt(conn, [row[0] for row in stale], reason)


def in_doubt_totals(
    conn: Warehouse, campaign_id: str, prompt_version: str | None = None, model: str | None = None
) -> dict[str, float]:
    """For the summary: units in doubt now, units ever in doubt, their estimated cost, units that shared a request."""
    row = conn.execute(
        """
        select count(*) filter (where status = 'in_doubt'),
               count(*) filter (where in_doubt_attempts > 0),
               coalesce(sum(in_doubt_cost_usd), 0),
               count(*) filter (where shared_request_of is not null and status = 'succeeded')
          from ops.generation_ledger
         where campaign_id = ? and (cast(? as varchar) is null or prompt_version = ?)
           and (cast(? as varchar) is null or model = ?)
        """,
        [campaign_id, prompt_version, prompt_version, model, model],
    ).fetchone()
    assert row is not None
    return {
        "in_doubt_units": int(row[0]),
        "units_ever_in_doubt": int(row[1]),
        "in_doubt_cost_usd": float(row[2]),
        "shared_request_units": int(row[3]),
    }
