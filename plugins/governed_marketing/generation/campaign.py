"""Generate a campaign's content and write its outbox, with nothing personal sent to the vendor.

Three stages (three DAG tasks; `run_campaign` runs them back to back), each failing closed:
1. `prepare_campaign`: the campaign-audience gate (Great Expectations), the last-moment consent
   check, one unit per cohort cell (cohort mode) or per recipient (individual mode, only where
   governance.yml allows it), the intent recorded in the generation ledger with a cost estimate,
   and the budget check. A failure here sends nothing.
2. `draft_sync` (or the Batch API, generation/batch_flow.py): the vendor-payload gate over exactly what
   leaves, then only the units the ledger says are still to do; each draft is stored the moment it
   arrives, so a crash or a retry pays for nothing twice.
3. `publish_campaign`: the consent check again, the greeting composed locally from the language
   table and the recipient's first name (a name that does not read as a name gets the greeting
   without a name), the right-to-object notice appended, the generated-content gate, and the outbox
   file rewritten atomically. Drafts whose own text the gate rejects are marked in the ledger and
   drafted again; a recipient's name never rejects a draft.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from governed_marketing.generation import ledger
from governed_marketing.generation.base import ContentProvider, DraftFailure, DraftRequest, DraftResult
from governed_marketing.generation.notices import greeting, objection_notice
from governed_marketing.policy import Policy
from governed_marketing.validation import GateFailed, GateResult, record_gate

if TYPE_CHECKING:
    from governed_marketing.generation.cost import Pricing
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Part of every prompt version: drafts written for the old contract (a `{{ first_name }}` greeting
#: placeholder) belong to other versions, so they are drafted again instead of published.
DRAFT_FORMAT = "draft-without-greeting"

#: The attributes of a cohort cell that may be sent (columns of generation_cohorts).
COHORT_ATTRIBUTES = ("language", "country", "lifecycle_stage", "interest", "last_purchase_category")


@dataclass
class CampaignOutcome:
    """Counts only: safe for XCom, logs, the summary and the report."""

    campaign_id: str
    provider: str
    model: str
    prompt_version: str
    audience: int = 0
    dropped_before_vendor: int = 0
    dropped_before_outbox: int = 0
    cohorts: int = 0
    mode: str = "cohort"
    transport: str = "offline"
    units: int = 0
    vendor_calls: int = 0
    shared_requests: int = 0  # units of this run answered by another unit's identical request (paid once)
    reused_drafts: int = 0
    failed_units: int = 0
    rejected_drafts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    estimated_cost_usd: float = 0.0
    cost_usd: float = 0.0  # everything this campaign version has cost so far (the ledger's total)
    run_input_tokens: int = 0  # what this step paid for
    run_output_tokens: int = 0
    run_cost_usd: float = 0.0
    budget_usd: float | None = None
    approval: str = "auto"
    messages: int = 0
    outbox_file: str | None = None

    def counts(self) -> dict:
        return asdict(self)


def prompt_version(policy: Policy, campaign_id: str) -> tuple[str, str]:
    """The prompt text and its version: file stem plus a hash of the text and the draft format.

    An edit of the prompt, or a change of what a draft must look like (DRAFT_FORMAT), is a new version.
    """
    path = policy.prompt_path(campaign_id)
    text = path.read_text(encoding="utf-8")
    digest = hashlib.sha256(f"{DRAFT_FORMAT}\n{text}".encode()).hexdigest()[:8]
    return text, f"{path.stem}@{digest}"


class UnitsFailed(RuntimeError):
    """Some units could not be drafted this time; they are in the ledger as failed and retried next run.

    `retryable` is False when a unit failed for its content (rejected after its re-ask, refused,
    filtered): sending the same request again at once would pay for the same answer, so a task retry
    must not do it (the DAG fails the task without retries; the next run asks again).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ModeRefused(RuntimeError):
    """The campaign's personalization mode is not allowed by governance.yml; nothing was sent."""


def individual_mode_refusal(policy: Policy, campaign_id: str, vendor: str) -> str | None:
    """Why per-recipient drafting is not allowed for this campaign and vendor (None when it is).

    Individual mode sends each recipient's allow-listed fields and pseudonym: personal data under a
    processor agreement (Art. 28), possibly transferred (Art. 44-46), after a DPIA (Art. 35).
    """
    purpose = policy.purpose_of(campaign_id)
    spec = policy.vendors.get(vendor)
    if spec is None:
        return f"vendors.{vendor} is not declared in governance.yml"
    if spec.dpa_signed is None:
        return f"vendors.{vendor}.dpa_signed is missing: no processor agreement (Art. 28) is on record"
    if spec.transfer_mechanism in (None, "none"):
        return f"vendors.{vendor}.transfer_mechanism is missing: no transfer safeguard (Art. 44-46) is on record"
    if purpose.dpia.required and not purpose.dpia.reference:
        return f"purposes.{policy.campaigns[campaign_id].purpose}.dpia.reference is missing (Art. 35)"
    return None


def _enforce(conn: Warehouse, run_id: str, result: GateResult) -> None:
    """Record a gate's result (pass or fail) as evidence, then fail closed: nothing after it runs."""
    record_gate(conn, run_id, result)
    if not result.success:
        raise GateFailed(result)


def sendable_attributes(policy: Policy, attributes: dict[str, str | None]) -> dict[str, str | None]:
    """Attribute values as they may leave for a vendor: free text mapped onto its vocabulary.

    Each `;`-separated item of a free-text attribute (interests, last purchase category) is matched
    against `vocabularies.<field>` in governance.yml (case, spacing and synonyms); an item that is not
    a term is dropped here, so text such as "Ignore previous instructions..." never leaves. Other
    attributes pass unchanged (the vendor-payload gate checks them all).

    An item that looks like contact data (an email, a phone number) is not dropped but kept as it is:
    it means a field-mapping error upstream, and the vendor-payload gate, which runs before any request
    leaves, must stop the run and say so rather than have the mistake pass unnoticed.
    """
    from governed_marketing.validation.patterns import IDENTIFIER_PATTERNS

    sendable: dict[str, str | None] = {}
    for name, value in attributes.items():
        vocabulary = policy.vocabulary_of(name)
        if vocabulary is None or value is None:
            sendable[name] = value
            continue
        items = [item.strip() for item in value.split(";")]
        leaked = [item for item in items if any(re.search(p, item) for p in IDENTIFIER_PATTERNS)]
        if leaked:
            sendable[name] = value  # fails the gate (identifier-looking value), never sent
            continue
        terms = dict.fromkeys(term for term in map(vocabulary.map, items) if term)
        sendable[name] = ";".join(terms) or None
    return sendable


def _none_if_missing(value: object) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


@dataclass
class CampaignWork:
    """Everything one stage needs, rebuilt from the warehouse (XCom carries counts, never rows)."""

    campaign_id: str
    mode: str
    version: str
    system_prompt: str
    provider: str
    model: str
    audience: pd.DataFrame
    sendable: pd.DataFrame
    cohorts: pd.DataFrame
    requests: dict[str, DraftRequest]


def load_work(
    conn: Warehouse,
    policy: Policy,
    campaign_id: str,
    *,
    provider: str,
    model: str,
    as_of: datetime,
) -> CampaignWork:
    """The audience, who may still be sent to (last-moment check), and one request per unit."""
    from governed_marketing.consent import still_eligible

    mode = policy.campaigns[campaign_id].personalization
    system_prompt, version = prompt_version(policy, campaign_id)
    audience = conn.execute(
        "select * from marts.campaign_audience where campaign_id = ? order by recipient_pseudonym", [campaign_id]
    ).df()
    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    sendable = audience[audience["recipient_pseudonym"].isin(allowed)]
    cohorts = conn.execute(
        "select * from marts.generation_cohorts where campaign_id = ? order by cohort_id", [campaign_id]
    ).df()
    cohorts = cohorts[cohorts["cohort_id"].isin(set(sendable["cohort_id"]))]

    def request(unit_id: str, language: str, attributes: dict[str, str | None]) -> DraftRequest:
        return DraftRequest(
            campaign_id=campaign_id,
            unit_id=unit_id,
            prompt_version=version,
            system_prompt=system_prompt,
            language=language,
            attributes={k: v for k, v in sendable_attributes(policy, attributes).items() if v is not None},
            custom_id=ledger.custom_id(campaign_id, unit_id, version, model),
        )

    requests: dict[str, DraftRequest] = {}
    if mode == "cohort":
        for row in cohorts.itertuples(index=False):
            attributes = {name: _none_if_missing(getattr(row, name)) for name in COHORT_ATTRIBUTES[1:]}
            requests[row.cohort_id] = request(row.cohort_id, row.language, attributes)
    else:
        fields = [f for f in policy.purpose_of(campaign_id).fields if f != "language"]
        fallback = policy.content.default_language
        for row in sendable.to_dict("records"):
            attributes = {name: _none_if_missing(row.get(name)) for name in fields}
            language = _none_if_missing(row.get("language")) or fallback
            requests[row["recipient_pseudonym"]] = request(row["recipient_pseudonym"], language, attributes)
    return CampaignWork(
        campaign_id, mode, version, system_prompt, provider, model, audience, sendable, cohorts, requests
    )


def units_to_request(conn: Warehouse, work: CampaignWork) -> tuple[list[DraftRequest], list[str]]:
    """The units this run must request, and the vendor batches already holding the others in flight.

    Succeeded units are reused (a rerun pays nothing twice); submitted units with a batch id are
    re-attached, never sent again; a sync unit left `submitted` by a crash is in doubt and is sent
    again with the same Idempotency-Key.
    """
    rows = ledger.rows(conn, work.campaign_id, work.version, work.model)
    to_request, batches = [], set()
    for unit_id, request in sorted(work.requests.items()):
        row = rows.get(unit_id)
        if row is None or row.status in ledger.TO_REQUEST:
            to_request.append(request)
        elif row.status == "submitted":
            if row.vendor_batch_id:
                batches.add(row.vendor_batch_id)
            else:
                to_request.append(request)
    return to_request, sorted(batches)


def check_payload(
    conn: Warehouse, run_id: str, policy: Policy, work: CampaignWork, requests: list[DraftRequest]
) -> None:
    """The vendor-payload gate over exactly what is about to leave (fails closed)."""
    from governed_marketing.validation import payload as payload_gate

    attributes = payload_gate.payload_attributes(work.mode, policy=policy, campaign_id=work.campaign_id)
    frame = payload_gate.payload_frame(requests, attributes=attributes, audience=work.audience, policy=policy)
    _enforce(
        conn,
        run_id,
        payload_gate.payload_gate(frame, attributes=attributes, policy=policy, campaign_id=work.campaign_id),
    )


def campaign_outcome(conn: Warehouse, policy: Policy, work: CampaignWork, transport: str) -> CampaignOutcome:
    """The counts every stage reports (sync and batch alike), before this stage adds its own."""
    campaign = policy.campaigns[work.campaign_id]
    outcome = CampaignOutcome(work.campaign_id, work.provider, work.model, work.version)
    outcome.mode, outcome.transport, outcome.approval = work.mode, transport, campaign.approval
    outcome.budget_usd = campaign.budget_usd
    outcome.audience = len(work.audience)
    outcome.dropped_before_vendor = len(work.audience) - len(work.sendable)
    outcome.cohorts = len(work.cohorts)
    outcome.units = len(work.requests)
    return outcome


def add_ledger_totals(conn: Warehouse, outcome: CampaignOutcome) -> None:
    """What the ledger says this campaign version has cost and left failed, across every run."""
    totals = conn.execute(
        """
        select coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), coalesce(sum(cost_usd), 0),
               coalesce(sum(estimated_cost_usd) filter (where status <> 'succeeded'), 0),
               count(*) filter (where status = 'failed')
        from ops.generation_ledger where campaign_id = ? and prompt_version = ? and model = ?
        """,
        [outcome.campaign_id, outcome.prompt_version, outcome.model],
    ).fetchone()
    assert totals is not None
    outcome.input_tokens, outcome.output_tokens = int(totals[0]), int(totals[1])
    outcome.cost_usd, outcome.estimated_cost_usd = round(float(totals[2]), 8), round(float(totals[3]), 8)
    outcome.failed_units = int(totals[4])


def prepare_campaign(
    campaign_id: str,
    *,
    conn: Warehouse,
    policy: Policy,
    provider: str,
    model: str,
    transport: str,
    as_of: datetime,
    run_id: str,
) -> CampaignOutcome:
    """Gate the audience, record the intent for every unit still to draft, and check the budget.

    Raises:
        ModeRefused: individual mode without a DPA, a transfer safeguard or a DPIA reference.
        GenerationBlocked: a blocking assessment finding affects the campaign's purpose (assessment.py).
        GateFailed: the campaign-audience gate failed (nothing is sent, nothing written).
        BudgetExceeded: spent + estimate would exceed the campaign's budget_usd (nothing is sent).
    """
    from governed_marketing.generation.cost import check_budget, pricing_for
    from governed_marketing.generation.request import body_options, completion_body
    from governed_marketing.validation import audience as audience_gate

    campaign = policy.campaigns[campaign_id]
    if campaign.personalization == "individual" and provider != "offline":
        refusal = individual_mode_refusal(policy, campaign_id, provider)
        if refusal:
            raise ModeRefused(f"campaigns.{campaign_id}.personalization is individual, but {refusal}; nothing was sent")
    from governed_marketing.assessment import check_generation_allowed

    check_generation_allowed(policy, campaign_id, as_of.date())  # a blocking finding stops this purpose only
    gate = audience_gate.gate_campaign_audience(
        conn, policy=policy, campaign_id=campaign_id, as_of=as_of, run_id=run_id
    )
    _enforce(conn, run_id, gate)

    work = load_work(conn, policy, campaign_id, provider=provider, model=model, as_of=as_of)
    to_request, _ = units_to_request(conn, work)
    pricing = pricing_for(policy, provider, model, transport=transport)
    estimates = {
        r.unit_id: pricing.estimate(completion_body(r, model=model, **body_options(policy, provider)))
        for r in to_request
    }
    unit_kind = "cohort" if work.mode == "cohort" else "recipient"
    ledger.plan(
        conn,
        to_request,
        model=model,
        provider=provider,
        transport=transport,
        unit_kind=unit_kind,
        run_id=run_id,
        estimates=estimates,
    )
    spent = conn.execute(
        "select coalesce(sum(cost_usd), 0) from ops.generation_ledger where campaign_id = ?", [campaign_id]
    ).fetchone()
    estimated = sum(e.cost_usd for e in estimates.values())
    check_budget(
        policy,
        campaign_id,
        vendor=provider,
        model=model,
        pricing=pricing,
        spent_usd=float(spent[0] if spent else 0),
        estimated_usd=estimated,
        units=len(to_request),
    )
    outcome = campaign_outcome(conn, policy, work, transport)
    outcome.reused_drafts = len(work.requests) - len(to_request)
    add_ledger_totals(conn, outcome)
    outcome.estimated_cost_usd = round(estimated, 8)
    return outcome


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
    """Draft every unit still to request, one call each; each draft is stored the moment it arrives.

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

    def submitted(self, group: list[DraftRequest]) -> None:
        # Marked as each request is handed to the transport, so `submitted` means "maybe at the vendor".
        ledger.mark_submitted(self.conn, [r.custom_id for r in group], run_id=self.run_id)
        if len(group) > 1:
            ledger.mark_shared(self.conn, group[0].custom_id, [r.custom_id for r in group[1:]])

    def stored(self, request: DraftRequest, result: DraftResult) -> None:
        cost = self.pricing.cost_of(result.input_tokens, result.output_tokens)
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
                return provider.draft_many(
                    to_request, on_result=recorder.stored, on_failure=recorder.failed, on_submit=recorder.submitted
                )
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


def _write_outbox(path: Path, rows: list[dict]) -> None:
    """Rewrite the campaign's outbox file atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".jsonl.partial")
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)


def outbox_path(outbox_root: Path, campaign_id: str, version: str) -> Path:
    return outbox_root / campaign_id / f"{version.replace('@', '-')}.jsonl"


def publish_campaign(
    campaign_id: str,
    *,
    conn: Warehouse,
    policy: Policy,
    provider: str,
    model: str,
    transport: str,
    as_of: datetime,
    run_id: str,
    outbox_root: Path,
) -> CampaignOutcome:
    """Consent again, names merged locally, the content gate, then the outbox (rewritten atomically).

    Raises:
        UnitsFailed: some units have no draft yet (failed or still in flight): nothing is written.
        GateFailed: the generated-content gate failed: nothing is written; drafts whose own text broke
            a rule are marked rejected in the ledger and drafted again on the next run.
    """
    from governed_marketing.consent import still_eligible

    work = load_work(conn, policy, campaign_id, provider=provider, model=model, as_of=as_of)
    outcome = campaign_outcome(conn, policy, work, transport)
    _require_every_draft(conn, work, model, outcome)
    # Consent again, just before names are merged and the outbox is written.
    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    final = work.sendable[work.sendable["recipient_pseudonym"].isin(allowed)]
    outcome.dropped_before_outbox = len(work.sendable) - len(final)
    messages = _drafted_messages(conn, work, model)
    messages = messages[messages["recipient_pseudonym"].isin(set(final["recipient_pseudonym"]))]
    rows = [_outbox_row(message, policy, work) for message in messages.itertuples(index=False)]
    _check_content(conn, run_id, policy, work, model, final, messages, rows)
    outbox_file = outbox_path(outbox_root, campaign_id, work.version)
    _write_outbox(outbox_file, rows)
    outcome.messages = len(rows)
    outcome.outbox_file = str(outbox_file)
    add_ledger_totals(conn, outcome)
    log.info(
        "campaign %s: %d recipients, %d units, %d messages", campaign_id, outcome.audience, outcome.units, len(rows)
    )
    return outcome


def _require_every_draft(conn: Warehouse, work: CampaignWork, model: str, outcome: CampaignOutcome) -> None:
    """Every unit must have an accepted draft: a unit still in a vendor batch, failed or never drafted
    would otherwise drop its recipients from the outbox without a word."""
    stored = ledger.rows(conn, work.campaign_id, work.version, model)
    missing = [r for r in work.requests.values() if r.unit_id not in stored or stored[r.unit_id].status != "succeeded"]
    if missing:
        add_ledger_totals(conn, outcome)
        raise UnitsFailed(
            f"{len(missing)} of {len(work.requests)} unit(s) of {work.campaign_id} have no accepted draft yet; "
            "nothing was written to the outbox (see ops.generation_ledger)"
        )


def _drafted_messages(conn: Warehouse, work: CampaignWork, model: str) -> pd.DataFrame:
    """One row per recipient of the campaign with the draft of its unit (read on our side only)."""
    unit_column = "a.cohort_id" if work.mode == "cohort" else "a.recipient_pseudonym"
    return conn.execute(
        f"""
        select r.recipient_pseudonym, c.contact_id, c.email_normalized as email, c.first_name,
               g.language, g.subject, g.preheader, g.body, g.model, g.generated_at,
               a.cohort_id as audience_cohort_id, g.unit_id as cohort_id
        from marts.campaign_recipients r
        join raw.crm_contacts c using (contact_id)
        join marts.campaign_audience a
          on a.campaign_id = r.campaign_id and a.recipient_pseudonym = r.recipient_pseudonym
        join ops.generated_content g
          on g.campaign_id = r.campaign_id and g.unit_id = {unit_column}
         and g.prompt_version = ? and g.model = ?
        where r.campaign_id = ?
        order by c.contact_id
        """,
        [work.version, model, work.campaign_id],
    ).df()


def _outbox_row(message: Any, policy: Policy, work: CampaignWork) -> dict:
    """One outbox line: our greeting, the vendor's body, our notice (the format the delivery reads)."""
    # Vendor text is never evaluated as a template, and the name is data: it only ever fills our own
    # greeting, and a value that does not read as a name gets the greeting without a name.
    body = f"{greeting(message.language, message.first_name)}\n\n{message.body.strip()}"
    notice = objection_notice(message.language, controller=policy.controller.name, url=policy.content.unsubscribe_url)
    return {
        "campaign_id": work.campaign_id,
        "contact_id": message.contact_id,
        "email": message.email,
        "language": message.language,
        "subject": message.subject,
        "body": f"{body.rstrip()}\n\n--\n{notice}",
        "prompt_version": work.version,
        "model": message.model,
        "cohort_id": message.audience_cohort_id,
        "generated_at": pd.Timestamp(message.generated_at).isoformat() + "Z",
    }


def _check_content(
    conn: Warehouse,
    run_id: str,
    policy: Policy,
    work: CampaignWork,
    model: str,
    final: pd.DataFrame,
    messages: pd.DataFrame,
    rows: list[dict],
) -> None:
    """The generated-content gate over the rows about to be written; drafts it rejects are drafted again."""
    from governed_marketing.validation import content as content_gate

    identifiers = content_gate.audience_identifiers(conn, work.campaign_id)
    if work.mode == "cohort":
        expected = content_gate.expected_languages(final, work.cohorts, policy)
    else:
        expected = pd.Series(
            final["language"].fillna(policy.content.default_language).to_numpy(),
            index=final["recipient_pseudonym"].to_numpy(),
        )
    content = content_gate.content_frame(
        messages, rows, expected_language=expected, identifiers=identifiers, policy=policy
    )
    result = content_gate.content_gate(content, policy=policy, campaign_id=work.campaign_id)
    record_gate(conn, run_id, result)
    if not result.success:
        rejected = content_gate.rejected_drafts(content, policy)
        if rejected:
            ledger.mark_rejected(conn, work.campaign_id, rejected, prompt_version=work.version, model=model)
        note = (
            f"{len(rejected)} draft(s) rejected; they will be drafted again on the next run"
            if rejected
            else "no draft's own text broke a rule; the merged messages did (nothing was rejected)"
        )
        raise GateFailed(result, note=note)


def run_campaign(
    campaign_id: str,
    *,
    conn: Warehouse,
    policy: Policy,
    provider: ContentProvider,
    as_of: datetime,
    run_id: str,
    outbox_root: Path,
    transport: str | None = None,
) -> CampaignOutcome:
    """Prepare, draft (sync) and publish one campaign in one go: the three DAG steps back to back."""
    transport = transport or ("offline" if provider.name == "offline" else "sync")
    common = {"conn": conn, "policy": policy, "as_of": as_of, "run_id": run_id}
    prepared = prepare_campaign(
        campaign_id, provider=provider.name, model=provider.model, transport=transport, **common
    )
    drafted = draft_sync(campaign_id, provider=provider, transport=transport, **common)
    published = publish_campaign(
        campaign_id,
        provider=provider.name,
        model=provider.model,
        transport=transport,
        outbox_root=outbox_root,
        **common,
    )
    published.vendor_calls = drafted.vendor_calls
    published.reused_drafts = prepared.reused_drafts
    published.estimated_cost_usd = prepared.estimated_cost_usd
    return published
