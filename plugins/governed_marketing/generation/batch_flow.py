"""Batch mode for one campaign: what the draft task submits, re-attaches to and collects.

The campaign side (which units, the payload gate, prices) joins the transport side
(generation/transports/batch.py) here, so the Airflow operator only calls two functions and passes batch ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from governed_marketing.generation import ledger
from governed_marketing.generation.base import DraftRequest
from governed_marketing.generation.campaign import (
    CampaignWork,
    UnitsFailed,
    add_ledger_totals,
    campaign_outcome,
    check_payload,
    load_work,
    units_to_request,
)
from governed_marketing.generation.cost import pricing_for
from governed_marketing.generation.request import body_options
from governed_marketing.generation.transports import batch
from governed_marketing.generation.vendor import openai_client
from governed_marketing.policy import Policy

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse


def _submit(
    conn: Warehouse,
    client: Any,
    policy: Policy,
    work: CampaignWork,
    requests: list[DraftRequest],
    *,
    run_id: str,
    histories: dict[str, list[dict[str, str]]] | None = None,
) -> str | None:
    """The payload gate over exactly these requests, the ledger intent, then one vendor batch."""
    if not requests:
        return None
    check_payload(conn, run_id, policy, work, requests)
    ledger.plan(
        conn,
        requests,
        model=work.model,
        provider=work.provider,
        transport="batch",
        unit_kind="cohort" if work.mode == "cohort" else "recipient",
        run_id=run_id,
    )
    return batch.submit(
        conn,
        client,
        requests,
        campaign_id=work.campaign_id,
        model=work.model,
        run_id=run_id,
        body_kwargs=body_options(policy, work.provider),
        histories=histories,
    )


#: Failure kinds that sending the same request again would not fix (see DraftFailure.retryable).
CONTENT_FAILURES = ("rejected", "refused", "filtered", "client")


def _content_failures(conn: Warehouse, work: CampaignWork, run_id: str) -> int:
    """Units this run left failed for their content: a task retry must not pay for them again."""
    found = conn.execute(
        f"""
        select count(*) from ops.generation_ledger
        where campaign_id = ? and prompt_version = ? and model = ? and run_id = ? and status = 'failed'
          and last_error_kind in ({", ".join("?" for _ in CONTENT_FAILURES)})
        """,
        [work.campaign_id, work.version, work.model, run_id, *CONTENT_FAILURES],
    ).fetchone()
    return int(found[0]) if found else 0


def submit_campaign_batch(
    campaign_id: str,
    *,
    conn: Warehouse,
    policy: Policy,
    provider: str,
    model: str,
    as_of: datetime,
    run_id: str,
    client: Any = None,
) -> dict:
    """Re-attach to the campaign's batches in flight, then submit the units still to do as one batch.

    Returns counts with `batch_ids`: every batch the task must wait for (none when all is done).
    """
    client = client or openai_client()
    work = load_work(conn, policy, campaign_id, provider=provider, model=model, as_of=as_of)
    in_flight = batch.reattach(conn, client, campaign_id, work.version, model)
    to_request, _ = units_to_request(conn, work)
    outcome = campaign_outcome(conn, policy, work, "batch")
    outcome.reused_drafts = len(work.requests) - len(to_request)
    submitted = _submit(conn, client, policy, work, to_request, run_id=run_id)
    outcome.vendor_calls = len(to_request)
    add_ledger_totals(conn, outcome)
    batch_ids = sorted({*in_flight, *([submitted] if submitted else [])})
    return {**outcome.counts(), "batch_ids": batch_ids, "reattached_batches": len(in_flight)}


def collect_campaign_batches(
    campaign_id: str,
    batch_ids: list[str],
    *,
    conn: Warehouse,
    policy: Policy,
    provider: str,
    model: str,
    as_of: datetime,
    run_id: str,
    client: Any = None,
) -> dict:
    """Read finished batches into the ledger (vendor files deleted), and send in one new batch what came
    back missing, expired or failed at the server, and each rejected answer's one re-ask (with its
    history: the rejected answer and the reason)."""
    client = client or openai_client()
    work = load_work(conn, policy, campaign_id, provider=provider, model=model, as_of=as_of)
    by_custom_id = {r.custom_id: r for r in work.requests.values()}
    pricing = pricing_for(policy, provider, model, transport="batch")
    resubmit: list[str] = []
    reasks: dict[str, list[dict[str, str]]] = {}
    collected = {
        "succeeded": 0,
        "failed": 0,
        "deleted_files": 0,
        "run_input_tokens": 0,
        "run_output_tokens": 0,
        "run_cost_usd": 0.0,
    }
    for batch_id in batch_ids:
        result = batch.collect(
            conn, client, batch_id, by_custom_id, provider=provider, model=model, cost_of=pricing.cost_of
        )
        collected["succeeded"] += result.succeeded
        collected["failed"] += sum(result.failed.values())
        collected["deleted_files"] += len(result.deleted_files)
        collected["run_input_tokens"] += result.input_tokens
        collected["run_output_tokens"] += result.output_tokens
        collected["run_cost_usd"] = round(collected["run_cost_usd"] + result.cost_usd, 8)
        resubmit += result.resubmit
        reasks.update(result.reasks)
    # What went missing is sent again as it was; a rejected answer goes out with its re-ask turn.
    again = [by_custom_id[cid] for cid in dict.fromkeys([*resubmit, *reasks]) if cid in by_custom_id]
    histories = {cid: history for cid, history in reasks.items() if cid in by_custom_id}
    new_batch = _submit(conn, client, policy, work, again, run_id=run_id, histories=histories)
    outcome = campaign_outcome(conn, policy, work, "batch")
    add_ledger_totals(conn, outcome)
    final_failures = 0 if new_batch else _content_failures(conn, work, run_id)
    if final_failures:
        raise UnitsFailed(
            f"{final_failures} unit(s) of {campaign_id} failed for their content in the vendor's batch (rejected "
            "after a re-ask, refused or filtered); they are recorded as failed in ops.generation_ledger and will "
            "be requested again on the next run",
            retryable=False,
        )
    return {**outcome.counts(), **collected, "resubmitted": len(again), "batch_ids": [new_batch] if new_batch else []}
