"""Sync drafting of one campaign: the units still to do, one call each, stored as each answer arrives.

The second stage (the first is `campaign.prepare_campaign`, the third `publish.publish_campaign`):
the vendor-payload gate over exactly what leaves, then only the units the ledger says are still to
do; each paid draft is stored the moment it arrives (offline drafts, free to make again, in sets),
so a crash or a retry pays for nothing twice. The Batch API does the same stage in generation/batch_flow.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from governed_marketing.generation import ledger
from governed_marketing.generation.base import ContentProvider, DraftFailure, DraftRequest, DraftResult
from governed_marketing.generation.campaign import (
    CampaignOutcome,
    CampaignWork,
    UnitsFailed,
    add_ledger_totals,
    campaign_outcome,
    check_payload,
    load_work,
    units_to_request,
)
from governed_marketing.policy import Policy

if TYPE_CHECKING:
    from governed_marketing.generation.cost import Pricing
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)


def draft_sync(
    campaign_id: str,
    *,
    conn: Warehouse,
    policy: Policy,
    provider: ContentProvider,
    transport: str,
    as_of: datetime,
    run_id: str,
) -> CampaignOutcome:
    """Draft every unit still to request, one call each; each draft is stored as it arrives.

    Raises:
        GateFailed: the vendor-payload gate failed (nothing is sent).
        UnitsFailed: some units failed after the SDK's retries; they are recorded as failed and the
            next run (or task retry) requests only them.
    """
    from governed_marketing import stopping
    from governed_marketing.generation.cost import pricing_for

    work = load_work(conn, policy, campaign_id, provider=provider.name, model=provider.model, as_of=as_of)
    crashed = ledger.record_crashed_sync_units(conn, campaign_id, work.version, provider.model)
    if crashed:
        log.warning("%s: %d unit(s) left in flight by an earlier run are in doubt; sent again", campaign_id, crashed)
    to_request, _ = units_to_request(conn, work)
    outcome = campaign_outcome(conn, policy, work, transport)
    outcome.reused_drafts = len(work.requests) - len(to_request)
    if to_request and stopping.stop_requested():
        raise stopping.RunInterrupted(f"{campaign_id}: not drafted, the run is stopping ({stopping.stop_reason()})")
    if to_request:
        check_payload(conn, run_id, policy, work, to_request)
        ledger.plan(
            conn,
            to_request,
            model=provider.model,
            provider=provider.name,
            transport=transport,
            unit_kind="cohort" if work.mode == "cohort" else "recipient",
            run_id=run_id,
        )
        rows = ledger.rows(conn, campaign_id, work.version, provider.model)
        to_request = [replace(r, idempotency_key=ledger.idempotency_key(rows[r.unit_id])) for r in to_request]
        recorder = _SyncRecorder(
            conn, run_id, provider, pricing_for(policy, provider.name, provider.model, transport=transport), outcome
        )
        results = _draft_recorded(conn, work, provider, to_request, recorder)
        shared = sum(1 for r in results.values() if "shared_request_of" in r.extra)
        outcome.vendor_calls = 0 if provider.name == "offline" else len(results) - shared + len(recorder.failures)
        outcome.shared_requests = 0 if provider.name == "offline" else shared
        if recorder.failures:
            add_ledger_totals(conn, outcome)
            raise _units_failed(campaign_id, recorder.failures, len(to_request))
    add_ledger_totals(conn, outcome)
    return outcome


@dataclass
class _SyncRecorder:
    """The ledger side of sync drafting: the provider's callbacks, on the calling thread, in order."""

    conn: Warehouse
    run_id: str
    provider: ContentProvider
    pricing: Pricing
    outcome: CampaignOutcome
    failures: dict[str, DraftFailure] = field(default_factory=dict)
    drafts: ledger.DraftWriter = field(init=False)

    def __post_init__(self) -> None:
        self.drafts = ledger.DraftWriter(self.conn, provider=self.provider.name, model=self.provider.model)

    def submitted(self, groups: list[list[DraftRequest]]) -> None:
        # Marked as each request is handed to the transport, so `submitted` means "maybe at the vendor".
        ledger.mark_submitted(self.conn, [r.custom_id for group in groups for r in group], run_id=self.run_id)
        for group in groups:
            if len(group) > 1:
                ledger.mark_shared(self.conn, group[0].custom_id, [r.custom_id for r in group[1:]])

    def stored(self, request: DraftRequest, result: DraftResult) -> None:
        cost = self.pricing.cost_of(result.input_tokens, result.output_tokens)
        if self.provider.name == "offline":  # free to draft again: stored in sets
            self.drafts.add(request, result, cost)
        else:  # paid for: stored before the next answer is taken
            ledger.record_success(
                self.conn, request, result, provider=self.provider.name, model=self.provider.model, cost_usd=cost
            )
        self._spent(result.input_tokens, result.output_tokens, cost)

    def failed(self, request: DraftRequest, failure: DraftFailure) -> None:
        self.failures[request.unit_id] = failure
        # A failed unit's paid attempts (a rejected answer and its re-ask) are spent all the same.
        cost = self.pricing.cost_of(failure.input_tokens, failure.output_tokens)
        ledger.record_failure(
            self.conn,
            request.custom_id,
            failure,
            input_tokens=failure.input_tokens,
            output_tokens=failure.output_tokens,
            cost_usd=cost,
        )
        self._spent(failure.input_tokens, failure.output_tokens, cost)

    def _spent(self, input_tokens: int, output_tokens: int, cost: float) -> None:
        self.outcome.run_input_tokens += input_tokens
        self.outcome.run_output_tokens += output_tokens
        self.outcome.run_cost_usd = round(self.outcome.run_cost_usd + cost, 8)


def _draft_recorded(
    conn: Warehouse,
    work: CampaignWork,
    provider: ContentProvider,
    to_request: list[DraftRequest],
    recorder: _SyncRecorder,
) -> dict[str, DraftResult]:
    """The provider's drafts, every one in the ledger; a stop or an error leaves no unit `submitted` unsaid."""
    from governed_marketing import stopping
    from governed_marketing.generation.errors import DraftingInterrupted

    try:
        with stopping.stops_by_itself():
            try:
                try:
                    return provider.draft_many(
                        to_request, on_result=recorder.stored, on_failure=recorder.failed, on_submit=recorder.submitted
                    )
                finally:  # the drafts that arrived are stored before anything reads the ledger again
                    recorder.drafts.flush()
            except DraftingInterrupted as exc:
                reason = f"sent, and the run stopped ({stopping.stop_reason()}) before the answer was recorded"
                in_doubt = ledger.record_in_doubt(conn, [r.custom_id for r in exc.in_flight], reason)
                ledger.record_not_sent(conn, [r.custom_id for r in exc.not_sent])
                raise stopping.RunInterrupted(
                    f"{work.campaign_id}: {exc}; {in_doubt} unit(s) recorded as in doubt in ops.generation_ledger"
                ) from exc
    except stopping.RunInterrupted:
        raise
    except Exception as exc:
        # Quota, credentials or an unexpected error: whatever was not stored is failed, not lost.
        stored_rows = ledger.rows(conn, work.campaign_id, work.version, provider.model)
        for request in to_request:
            if stored_rows[request.unit_id].status == "submitted":
                reason = f"{type(exc).__name__}: the run stopped before this unit was drafted"
                ledger.record_failure(conn, request.custom_id, DraftFailure(request.unit_id, "client", reason))
        raise


def _units_failed(campaign_id: str, failures: dict[str, DraftFailure], requested: int) -> UnitsFailed:
    kinds = sorted({f.kind for f in failures.values()})
    retryable = all(f.retryable for f in failures.values())
    return UnitsFailed(
        f"{len(failures)} of {requested} unit(s) of {campaign_id} could not be drafted "
        f"({', '.join(kinds)}); they are recorded as failed in ops.generation_ledger and will be "
        + ("requested again on the next run or task retry" if retryable else "requested again on the next run"),
        retryable=retryable,
    )
