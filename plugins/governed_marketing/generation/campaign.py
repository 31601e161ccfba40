"""Generate a campaign's content and write its outbox, with nothing personal sent to the vendor.

Three stages (three DAG tasks; `run.run_campaign` runs them back to back), each failing closed:
1. `prepare_campaign` (here): the campaign-audience gate (Great Expectations), the last-moment
   consent check, one unit per cohort cell (cohort mode) or per recipient (individual mode, only
   where governance.yml allows it), the intent recorded in the generation ledger with a cost
   estimate, and the budget check. A failure here sends nothing.
2. `sync_flow.draft_sync` or `batch_flow` (the Batch API): the units still to do are drafted.
3. `publish.publish_campaign`: consent again, names merged locally, the content gate, the outbox.

What every stage shares lives here: the campaign's work rebuilt from the warehouse (XCom carries
counts, never rows), which units are still to request, the payload gate, and the counts reported.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from governed_marketing.generation import ledger
from governed_marketing.generation.base import DraftRequest
from governed_marketing.policy import Policy
from governed_marketing.validation import GateFailed, GateResult, record_gate

if TYPE_CHECKING:
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
    dropped_before_vendor: int = 0  # by the last-moment check of this stage (load_work), since the models
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
    outbox_rewritten: bool | None = None  # False: the outbox already held exactly these messages

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
    from governed_marketing.arrow_text import isin
    from governed_marketing.consent import still_eligible

    mode = policy.campaigns[campaign_id].personalization
    system_prompt, version = prompt_version(policy, campaign_id)
    audience = conn.execute(
        "select * from marts.campaign_audience where campaign_id = ? order by recipient_pseudonym", [campaign_id]
    ).df()
    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    sendable = audience[isin(audience["recipient_pseudonym"], allowed)]
    cohorts = conn.execute(
        "select * from marts.generation_cohorts where campaign_id = ? order by cohort_id", [campaign_id]
    ).df()
    cohorts = cohorts[isin(cohorts["cohort_id"], sendable["cohort_id"])]

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
