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
from collections.abc import Iterable, Iterator
from datetime import datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from governed_marketing.arrow_text import isin
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


def _write_outbox(path: Path, lines: Iterable[str]) -> bool:
    """Replace the campaign's outbox file atomically (a reader never sees half a file), unless it already
    holds exactly these bytes: a rerun that changed nothing leaves the file, and its time, alone.

    Returns whether the file was written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".jsonl.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for line in lines:
                digest.update(line.encode("utf-8"))
                handle.write(line)
            handle.flush()
            if path.exists() and path.stat().st_size == handle.tell() and _sha256(path) == digest.digest():
                partial.unlink()
                return False
            os.fsync(handle.fileno())
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
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
    messages = OutboxMessages(_recipients(conn, work), _drafts(conn, work, model), policy, work)
    _check_content(conn, run_id, policy, work, model, messages)
    outbox_file = outbox_path(outbox_root, campaign_id, work.version)
    outcome.outbox_rewritten = _write_outbox(outbox_file, messages.lines())
    outcome.messages = len(messages)
    outcome.outbox_file = str(outbox_file)
    add_ledger_totals(conn, outcome)
    log.info(
        "campaign %s: %d recipients, %d units, %d messages (outbox %s)",
        campaign_id,
        outcome.audience,
        outcome.units,
        len(messages),
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


def _drafts(conn: Warehouse, work: CampaignWork, model: str) -> pd.DataFrame:
    """The accepted draft of each unit (a few thousand in cohort mode), indexed by unit id."""
    return (
        conn.execute(
            """
        select unit_id, language, subject, preheader, body, model, generated_at
        from ops.generated_content
        where campaign_id = ? and prompt_version = ? and model = ?
        """,
            [work.campaign_id, work.version, model],
        )
        .df()
        .set_index("unit_id")
    )


def _recipients(conn: Warehouse, work: CampaignWork) -> pd.DataFrame:
    """One row per recipient who may still be sent to, with the unit whose draft they get (read on our
    side only). The drafts' texts are not repeated per recipient: a million copies of a few thousand
    drafts was most of publish's memory."""
    unit_column = "a.cohort_id" if work.mode == "cohort" else "a.recipient_pseudonym"
    recipients = conn.execute(
        f"""
        select r.recipient_pseudonym, c.contact_id, c.email_normalized as email, c.first_name,
               a.cohort_id, a.language as audience_language, {unit_column} as unit_id
        from marts.campaign_recipients r
        join raw.crm_contacts c using (contact_id)
        join marts.campaign_audience a
          on a.campaign_id = r.campaign_id and a.recipient_pseudonym = r.recipient_pseudonym
        where r.campaign_id = ?
        order by c.contact_id
        """,
        [work.campaign_id],
    ).df()
    if len(work.sendable) < len(work.audience):  # the last-moment check dropped someone
        recipients = recipients[isin(recipients["recipient_pseudonym"], work.sendable["recipient_pseudonym"])]
    return recipients.reset_index(drop=True)


class OutboxMessages:
    """The campaign's messages: our greeting, the vendor's body, our notice, one per recipient.

    Vendor text is never evaluated as a template, and the name is data: it only ever fills our own
    greeting, and a value that does not read as a name gets the greeting without a name. Greetings,
    notices and the drafts' own fields repeat across a campaign (a few thousand first names and
    drafts for a million messages), so each is worked out, and JSON-encoded, once per value; a
    message is built when it is read, in slices, so no list of a million rows is ever held.
    The outbox lines are byte for byte what `json.dumps(row, ensure_ascii=False)` writes.
    """

    SLICE = 100_000

    def __init__(self, recipients: pd.DataFrame, drafts: pd.DataFrame, policy: Policy, work: CampaignWork) -> None:
        self.recipients = recipients
        self.drafts = drafts
        self.work = work
        self._greeting = functools.cache(greeting)
        controller, url = policy.controller.name, policy.content.unsubscribe_url
        self.notice = functools.cache(lambda language: objection_notice(language, controller=controller, url=url))

    def __len__(self) -> int:
        return len(self.recipients)

    @functools.cached_property
    def _units(self) -> dict[str, tuple[str | None, str, str, str, str]]:
        """unit id -> (language, draft text, and the line's JSON: "language" to "subject", "prompt_version"
        and "model", the time stamp)."""
        version = _json(self.work.version)
        units = {}
        for unit_id, draft in zip(self.drafts.index, self.drafts.itertuples(index=False), strict=True):
            stamp = pd.Timestamp(draft.generated_at).isoformat() + "Z"
            before_body = f'"language": {_json(draft.language)}, "subject": {_json(draft.subject)}'
            after_body = f'"prompt_version": {version}, "model": {_json(draft.model)}'
            units[unit_id] = (draft.language, draft.body.strip(), before_body, after_body, _json(stamp))
        return units

    def _body(self, language: str | None, first_name: object, draft: str) -> str:
        body = f"{self._greeting(language, first_name)}\n\n{draft}"
        return f"{body.rstrip()}\n\n--\n{self.notice(language)}"

    def _slices(self, columns: list[str]) -> Iterator[list[list[Any]]]:
        for start in range(0, len(self.recipients), self.SLICE):
            part = self.recipients.iloc[start : start + self.SLICE]
            yield [_python_values(part[column]) for column in columns]

    def bodies(self) -> Iterator[str]:
        """Each message's final body, in outbox order."""
        units = self._units
        for unit_ids, first_names in self._slices(["unit_id", "first_name"]):
            for unit_id, first_name in zip(unit_ids, first_names, strict=True):
                language, draft, *_ = units[unit_id]
                yield self._body(language, first_name, draft)

    def languages(self) -> list[str | None]:
        """Each message's language (its draft's), in outbox order."""
        units = self._units
        return [units[unit_id][0] for unit_id in _python_values(self.recipients["unit_id"])]

    def lines(self) -> Iterator[str]:
        """The outbox lines (JSON, one message each), in order."""
        units = self._units
        campaign = _json(self.work.campaign_id)
        for unit_ids, contacts, emails, first_names, cohorts in self._slices(
            ["unit_id", "contact_id", "email", "first_name", "cohort_id"]
        ):
            for unit_id, contact, email, first_name, cohort in zip(
                unit_ids, contacts, emails, first_names, cohorts, strict=True
            ):
                language, draft, before_body, after_body, stamp = units[unit_id]
                body = _json(self._body(language, first_name, draft))
                yield (
                    f'{{"campaign_id": {campaign}, "contact_id": {_json(contact)}, "email": {_json(email)}, '
                    f'{before_body}, "body": {body}, {after_body}, "cohort_id": {_json(cohort)}, '
                    f'"generated_at": {stamp}}}\n'
                )


def _python_values(column: pd.Series) -> list[Any]:
    """A column as Python values, missing ones as None (pandas' text columns hold NaN for missing)."""
    return column.astype(object).where(column.notna(), None).tolist()


def _json(value: Any) -> str:
    """What `json.dumps(value, ensure_ascii=False)` writes for a text, None or number."""
    if isinstance(value, str):
        return encode_basestring(value)
    return json.dumps(value, ensure_ascii=False)


def _check_content(
    conn: Warehouse, run_id: str, policy: Policy, work: CampaignWork, model: str, messages: OutboxMessages
) -> None:
    """The generated-content gate over the messages about to be written; drafts it rejects are drafted again."""
    from governed_marketing.validation import content as content_gate

    identifiers = content_gate.audience_identifiers(conn, work.campaign_id)
    recipients = messages.recipients
    if work.mode == "cohort":
        audience = recipients[["recipient_pseudonym", "cohort_id"]].assign(language=recipients["audience_language"])
        expected = content_gate.expected_languages(audience, work.cohorts, policy).to_numpy()
    else:
        expected = recipients["audience_language"].fillna(policy.content.default_language).to_numpy()
    content = content_gate.content_frame(
        content_gate.final_messages(
            unit_id=recipients["unit_id"],
            cohort_id=recipients["cohort_id"],
            language=messages.languages(),
            expected_language=expected,
            subject=recipients["unit_id"].map(messages.drafts["subject"]),
            bodies=messages.bodies(),
            notice=messages.notice,
        ),
        messages.drafts,
        identifiers=identifiers,
        policy=policy,
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
