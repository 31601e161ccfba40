"""Generate a campaign's content and write its outbox, with nothing personal sent to the vendor.

Order of work, each step failing closed:
1. read the minimized audience (campaign_audience) and its cohorts (generation_cohorts);
2. the campaign-audience gate (Great Expectations); a failure stops here: no vendor call, no outbox;
3. the last-moment consent check against the raw data; whoever became ineligible is dropped;
4. one draft per cohort cell (cohort mode): only the cell's attributes go to the provider, and only
   units not already in the content store are requested, so a rerun pays for nothing twice;
5. the consent check again, then names merged locally into the `{{ first_name }}` placeholder, the
   right-to-object notice appended, and the outbox file rewritten atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from governed_marketing.generation.base import ContentProvider, DraftRequest, DraftResult
from governed_marketing.generation.notices import objection_notice
from governed_marketing.policy import Policy
from governed_marketing.validation import GateFailed, GateResult, record_gate

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\{\{\s*first_name\s*\}\}")

#: The attributes of a cohort cell that may be sent (columns of generation_cohorts).
COHORT_ATTRIBUTES = ("language", "country", "lifecycle_stage", "interest", "last_purchase_category")

CONTENT_DDL = """
create schema if not exists ops;
create table if not exists ops.generated_content (
    campaign_id varchar not null,
    unit_id varchar not null,
    prompt_version varchar not null,
    provider varchar not null,
    model varchar not null,
    language varchar not null,
    subject varchar not null,
    preheader varchar,
    body varchar not null,
    input_tokens bigint not null,
    output_tokens bigint not null,
    vendor_request_id varchar,
    generated_at timestamp not null,
    primary key (campaign_id, unit_id, prompt_version, model)
);
"""


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
    vendor_calls: int = 0
    reused_drafts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    messages: int = 0
    outbox_file: str | None = None

    def counts(self) -> dict:
        return asdict(self)


def prompt_version(policy: Policy, campaign_id: str) -> tuple[str, str]:
    """The prompt text and its version: file stem plus a content hash, so an edit is a new version."""
    path = policy.prompt_path(campaign_id)
    text = path.read_text(encoding="utf-8")
    return text, f"{path.stem}@{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _enforce(conn: duckdb.DuckDBPyConnection, run_id: str, result: GateResult) -> None:
    """Record a gate's result (pass or fail) as evidence, then fail closed: nothing after it runs."""
    record_gate(conn, run_id, result)
    if not result.success:
        raise GateFailed(result)


def _cohort_requests(
    cohorts: pd.DataFrame, *, campaign_id: str, version: str, system_prompt: str
) -> list[DraftRequest]:
    requests = []
    for row in cohorts.itertuples(index=False):
        attributes = {name: getattr(row, name) for name in COHORT_ATTRIBUTES if name != "language"}
        attributes = {k: (None if pd.isna(v) else str(v)) for k, v in attributes.items()}
        requests.append(
            DraftRequest(
                campaign_id=campaign_id,
                unit_id=row.cohort_id,
                prompt_version=version,
                system_prompt=system_prompt,
                language=row.language,
                attributes={k: v for k, v in attributes.items() if v is not None},
            )
        )
    return requests


def _store_drafts(
    conn: duckdb.DuckDBPyConnection,
    results: dict[str, DraftResult],
    requests: dict[str, DraftRequest],
    provider: ContentProvider,
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    for unit_id, result in sorted(results.items()):
        request = requests[unit_id]
        conn.execute(
            "insert into ops.generated_content values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict do nothing",
            [
                request.campaign_id,
                unit_id,
                request.prompt_version,
                provider.name,
                provider.model,
                request.language,
                result.draft.subject,
                result.draft.preheader,
                result.draft.body,
                result.input_tokens,
                result.output_tokens,
                result.vendor_request_id,
                now,
            ],
        ).fetchall()


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


def run_campaign(
    campaign_id: str,
    *,
    conn: duckdb.DuckDBPyConnection,
    policy: Policy,
    provider: ContentProvider,
    as_of: datetime,
    run_id: str,
    outbox_root: Path,
) -> CampaignOutcome:
    """Gate, draft and write the outbox for one campaign.

    Raises:
        GateFailed: the audience gate failed (nothing was sent, nothing written), the vendor-payload
            gate failed (nothing was sent) or the generated-content gate failed (nothing written).
    """
    from governed_marketing.consent import still_eligible
    from governed_marketing.validation import audience as audience_gate
    from governed_marketing.validation import content as content_gate
    from governed_marketing.validation import payload as payload_gate

    campaign = policy.campaigns[campaign_id]
    if campaign.personalization != "cohort":
        raise NotImplementedError(
            f"campaigns.{campaign_id}.personalization: individual mode is not available yet; use cohort"
        )
    conn.execute(CONTENT_DDL)
    system_prompt, version = prompt_version(policy, campaign_id)
    outcome = CampaignOutcome(campaign_id, provider.name, provider.model, version)

    audience = conn.execute(
        "select * from marts.campaign_audience where campaign_id = ? order by recipient_pseudonym",
        [campaign_id],
    ).df()
    outcome.audience = len(audience)
    checked = audience_gate.audience_gate_frame(conn, audience, policy=policy, campaign_id=campaign_id, as_of=as_of)
    _enforce(conn, run_id, audience_gate.audience_gate(checked, policy=policy, campaign_id=campaign_id))

    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    sendable = audience[audience["recipient_pseudonym"].isin(allowed)]
    outcome.dropped_before_vendor = len(audience) - len(sendable)

    cohorts = conn.execute(
        "select * from marts.generation_cohorts where campaign_id = ? order by cohort_id", [campaign_id]
    ).df()
    cohorts = cohorts[cohorts["cohort_id"].isin(set(sendable["cohort_id"]))]
    outcome.cohorts = len(cohorts)
    requests = {
        r.unit_id: r
        for r in _cohort_requests(cohorts, campaign_id=campaign_id, version=version, system_prompt=system_prompt)
    }
    stored = conn.execute(
        "select unit_id from ops.generated_content where campaign_id = ? and prompt_version = ? and model = ?",
        [campaign_id, version, provider.model],
    ).fetchall()
    done = {row[0] for row in stored}
    missing = [request for unit_id, request in sorted(requests.items()) if unit_id not in done]
    outcome.reused_drafts = len(requests) - len(missing)
    attributes = payload_gate.payload_attributes()
    payload = payload_gate.payload_frame(missing, attributes=attributes, audience=audience, policy=policy)
    _enforce(
        conn, run_id, payload_gate.payload_gate(payload, attributes=attributes, policy=policy, campaign_id=campaign_id)
    )
    if missing:
        results = provider.draft_many(missing)
        absent = [r.unit_id for r in missing if r.unit_id not in results]
        if absent:
            raise RuntimeError(f"{provider.name} returned no draft for {len(absent)} cohort(s) of {campaign_id}")
        outcome.vendor_calls = len(results) if provider.name != "offline" else 0
        outcome.input_tokens = sum(r.input_tokens for r in results.values())
        outcome.output_tokens = sum(r.output_tokens for r in results.values())
        _store_drafts(conn, results, requests, provider)

    # Consent again, just before names are merged and the outbox is written.
    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    final = sendable[sendable["recipient_pseudonym"].isin(allowed)]
    outcome.dropped_before_outbox = len(sendable) - len(final)

    messages = conn.execute(
        """
        select r.recipient_pseudonym, c.contact_id, c.email_normalized as email, c.first_name,
               g.language, g.subject, g.preheader, g.body, g.model, g.generated_at, g.unit_id as cohort_id
        from marts.campaign_recipients r
        join raw.crm_contacts c using (contact_id)
        join marts.campaign_audience a
          on a.campaign_id = r.campaign_id and a.recipient_pseudonym = r.recipient_pseudonym
        join ops.generated_content g
          on g.campaign_id = r.campaign_id and g.unit_id = a.cohort_id
         and g.prompt_version = ? and g.model = ?
        where r.campaign_id = ?
        order by c.contact_id
        """,
        [version, provider.model, campaign_id],
    ).df()
    messages = messages[messages["recipient_pseudonym"].isin(set(final["recipient_pseudonym"]))]
    rows = []
    for message in messages.itertuples(index=False):
        first_name = message.first_name if isinstance(message.first_name, str) and message.first_name else ""
        # Vendor text is never evaluated as a template: only the one placeholder is replaced.
        greeting = first_name or _reader(message.language)
        body = PLACEHOLDER.sub(lambda _, name=greeting: name, message.body)
        notice = objection_notice(
            message.language, controller=policy.controller.name, url=policy.content.unsubscribe_url
        )
        rows.append(
            {
                "campaign_id": campaign_id,
                "contact_id": message.contact_id,
                "email": message.email,
                "language": message.language,
                "subject": message.subject,
                "body": f"{body.rstrip()}\n\n--\n{notice}",
                "prompt_version": version,
                "model": message.model,
                "cohort_id": message.cohort_id,
                "generated_at": pd.Timestamp(message.generated_at).isoformat() + "Z",
            }
        )
    identifiers = content_gate.audience_identifiers(conn, campaign_id)
    expected = content_gate.expected_languages(final, cohorts, policy)
    content = content_gate.content_frame(
        messages, rows, expected_language=expected, identifiers=identifiers, policy=policy
    )
    _enforce(conn, run_id, content_gate.content_gate(content, policy=policy, campaign_id=campaign_id))
    outbox_file = outbox_root / campaign_id / f"{version.replace('@', '-')}.jsonl"
    _write_outbox(outbox_file, rows)
    outcome.messages = len(rows)
    outcome.outbox_file = str(outbox_file)
    log.info(
        "campaign %s: %d recipients, %d cohorts, %d vendor calls, %d messages",
        campaign_id,
        outcome.audience,
        outcome.cohorts,
        outcome.vendor_calls,
        outcome.messages,
    )
    return outcome


_READER = {
    "en": "there",
    "de": "zusammen",
    "fr": "à vous",
    "es": "a todos",
    "it": "a tutti",
    "nl": "allemaal",
}


def _reader(language: str) -> str:
    """Greeting word when the CRM holds no first name ("Hello there")."""
    return _READER.get(language, "")
