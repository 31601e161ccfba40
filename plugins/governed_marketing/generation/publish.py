"""Publish one campaign: consent again, names merged locally, the content gate, then the outbox.

The third stage. The greeting is composed locally from the language table and the recipient's
first name (a name that does not read as a name gets the greeting without a name), the
right-to-object notice appended, the generated-content gate run, and the outbox file replaced
atomically when its content changed. Drafts whose own text the gate rejects are marked in the
ledger and drafted again; a recipient's name never rejects a draft. The outbox format is what delivery reads: keep it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from governed_marketing.generation import ledger
from governed_marketing.generation.campaign import (
    CampaignOutcome,
    CampaignWork,
    UnitsFailed,
    add_ledger_totals,
    campaign_outcome,
    load_work,
)
from governed_marketing.generation.notices import greeting, objection_notice
from governed_marketing.policy import Policy
from governed_marketing.validation import GateFailed, record_gate

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)


def _write_outbox(path: Path, rows: list[dict]) -> bool:
    """Replace the campaign's outbox file atomically (a reader never sees half a file), unless it already
    holds exactly these bytes: a rerun that changed nothing leaves the file, and its time, alone.

    Returns whether the file was written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".jsonl.partial")
    digest = hashlib.sha256()
    with partial.open("w", encoding="utf-8") as handle:
        for row in rows:
            line = json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n"
            digest.update(line.encode("utf-8"))
            handle.write(line)
        handle.flush()
        if path.exists() and path.stat().st_size == handle.tell() and _sha256(path) == digest.digest():
            partial.unlink()
            return False
        os.fsync(handle.fileno())
    partial.replace(path)
    return True


def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


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
    """Consent again, names merged locally, the content gate, then the outbox (replaced atomically if changed).

    Raises:
        UnitsFailed: some units have no draft yet (failed or still in flight): nothing is written.
        GateFailed: the generated-content gate failed: nothing is written; drafts whose own text broke
            a rule are marked rejected in the ledger and drafted again on the next run.
    """
    # load_work is the last-moment check (consent, suppression, restriction, objection), here just
    # before names are merged and the outbox is written; `work.sendable` is who passed it. The
    # recipients it dropped since the models were built are counted in `dropped_before_vendor`.
    work = load_work(conn, policy, campaign_id, provider=provider, model=model, as_of=as_of)
    outcome = campaign_outcome(conn, policy, work, transport)
    _require_every_draft(conn, work, model, outcome)
    messages = _drafted_messages(conn, work, model)
    messages = messages[messages["recipient_pseudonym"].isin(set(work.sendable["recipient_pseudonym"]))]
    rows = _outbox_rows(messages, policy, work)
    _check_content(conn, run_id, policy, work, model, work.sendable, messages, rows)
    outbox_file = outbox_path(outbox_root, campaign_id, work.version)
    outcome.outbox_rewritten = _write_outbox(outbox_file, rows)
    outcome.messages = len(rows)
    outcome.outbox_file = str(outbox_file)
    add_ledger_totals(conn, outcome)
    log.info(
        "campaign %s: %d recipients, %d units, %d messages (outbox %s)",
        campaign_id,
        outcome.audience,
        outcome.units,
        len(rows),
        "written" if outcome.outbox_rewritten else "unchanged",
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


def _outbox_rows(messages: pd.DataFrame, policy: Policy, work: CampaignWork) -> list[dict]:
    """One outbox line per message: our greeting, the vendor's body, our notice (the format the delivery reads).

    Vendor text is never evaluated as a template, and the name is data: it only ever fills our own
    greeting, and a value that does not read as a name gets the greeting without a name. Greetings,
    notices and timestamps repeat across a campaign (a few thousand first names for a million
    messages), so each is worked out once per value.
    """
    greet = functools.cache(greeting)

    @functools.cache
    def notice(language: str | None) -> str:
        return objection_notice(language, controller=policy.controller.name, url=policy.content.unsubscribe_url)

    @functools.cache
    def stamp(generated_at: Any) -> str:
        return pd.Timestamp(generated_at).isoformat() + "Z"

    rows = []
    for message in messages.itertuples(index=False):
        body = f"{greet(message.language, message.first_name)}\n\n{message.body.strip()}"
        rows.append(
            {
                "campaign_id": work.campaign_id,
                "contact_id": message.contact_id,
                "email": message.email,
                "language": message.language,
                "subject": message.subject,
                "body": f"{body.rstrip()}\n\n--\n{notice(message.language)}",
                "prompt_version": work.version,
                "model": message.model,
                "cohort_id": message.audience_cohort_id,
                "generated_at": stamp(message.generated_at),
            }
        )
    return rows


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
