"""The last-moment consent check, run against the raw data just before content leaves.

The dbt marts were built earlier in the run; a withdrawal, an objection, an erasure or a
restriction may have arrived since (a new export, `gmp dsr submit`). This check reads the raw
tables again and returns who is still allowed to receive.

Eligibility rules 2 (requests) and 3 (consent) therefore live twice, on purpose: in the dbt SQL
(`int_contacts_suppressed`, `int_consents_latest`, `int_campaign_eligibility`), which builds the
audience, and here, written independently so that one mistake cannot pass both. A change of either
rule changes both; `tests/unit/test_consent.py` holds them against each other on the hard cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from governed_marketing.crm.contract import SUPPRESSING_DSR_TYPES
from governed_marketing.policy import Policy

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

# Portable SQL (DuckDB and Postgres). Suppressing requests are read by `_suppressed_emails`: a lifted
# restriction's `details.lifted_at` is parsed in Python, the same way on both engines.
_STILL_ELIGIBLE = """
with recipients as (
    select r.recipient_pseudonym, c.contact_id, c.email_normalized
    from marts.campaign_recipients r
    join raw.crm_contacts c on c.contact_id = r.contact_id
    where r.campaign_id = $campaign_id{only_contacts}
),
events as (
    select distinct on (event_id) contact_id, lower(trim(purpose)) as consent, action, occurred_at
    from raw.crm_consent_events
    where occurred_at <= $as_of and contact_id in (select contact_id from recipients)
    order by event_id, occurred_at
),
ranked as (
    select contact_id, consent, action, occurred_at,
        row_number() over (
            partition by contact_id, consent
            order by occurred_at desc, case when action = 'withdraw' then 1 else 0 end desc
        ) as rank_
    from events
),
latest as (
    select contact_id, consent, action, occurred_at as decided_at
    from ranked
    where rank_ = 1
),
required as (
    select unnest(cast($required as varchar[])) as consent
),
-- Contacts lacking a required consent (no decision, not a grant, or a grant too old), as one set:
-- a subquery per recipient made Postgres re-rank the consent events for each of them.
lacking as (
    select distinct r.contact_id
    from recipients r
    cross join required req
    left join latest l on l.contact_id = r.contact_id and l.consent = req.consent
    where l.action is distinct from 'grant'
       or l.decided_at < $as_of - $max_age_days * interval '1 day'
)
select r.recipient_pseudonym, r.email_normalized
from recipients r
where not exists (select 1 from lacking x where x.contact_id = r.contact_id)
"""

# Every suppressing request counts from its receipt, whatever the as-of: a back-dated run never
# sends to someone who has objected since (a right never waits for the clock).
_SUPPRESSING = """
select email_normalized, request_type, details, received_at
from raw.crm_dsr_requests
where request_type = any(cast(? as varchar[]))
"""


def _lifted_at(details: str | None) -> datetime | None:
    """The restriction's `details.lifted_at` as naive UTC; None when absent or unreadable (still in force)."""
    import json

    try:
        lifted = json.loads(details or "{}").get("lifted_at")
        moment = datetime.fromisoformat(str(lifted).strip().replace("Z", "+00:00")) if lifted else None
    except (ValueError, AttributeError, TypeError):
        return None
    if moment is not None and moment.tzinfo is not None:
        from datetime import UTC

        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _restriction_in_force(details: str | None, received_at: datetime, as_of: datetime) -> bool:
    """In force at as-of (received by then, not lifted by then), or not lifted at all (in force now)."""
    lifted = _lifted_at(details)
    return lifted is None or (received_at <= as_of < lifted)


def _suppressed_emails(conn, as_of: datetime) -> set[str]:
    rows = conn.execute(_SUPPRESSING, [list(SUPPRESSING_DSR_TYPES)]).fetchall()
    return {
        email
        for email, request_type, details, received_at in rows
        if request_type != "restriction" or _restriction_in_force(details, received_at, as_of)
    }


def still_eligible(
    conn: Warehouse,
    *,
    policy: Policy,
    campaign_id: str,
    as_of: datetime,
    honour_suppression_list: bool = True,
    contact_ids: Sequence[str] | None = None,
) -> set[str]:
    """Pseudonyms of the campaign's recipients that still have consent and no suppressing request.

    `contact_ids`: only these recipients (the SMTP sender checks one batch at a time, so its memory
    does not grow with the campaign); None: all of them.
    """
    purpose = policy.purpose_of(campaign_id)
    as_of = as_of.replace(tzinfo=None)
    params = {
        "campaign_id": campaign_id,
        "as_of": as_of,
        "required": list(purpose.requires_consent),
        "max_age_days": purpose.consent_max_age_days,
    }
    only = ""
    if contact_ids is not None:
        only = " and r.contact_id = any(cast($contact_ids as varchar[]))"
        params["contact_ids"] = list(contact_ids)
    consented = conn.execute(_STILL_ELIGIBLE.replace("{only_contacts}", only), params).fetchall()
    blocked = _suppressed_emails(conn, as_of)
    rows = [(pseudonym, email) for pseudonym, email in consented if email not in blocked]
    suppressed = _suppression_list(conn) if honour_suppression_list else set()
    if not suppressed:
        return {row[0] for row in rows}
    from governed_marketing.privacy.suppression import subject_ref
    from governed_marketing.settings import get_settings

    key, _ = get_settings().resolve_pseudonym_key()
    # Objections and erasures are for good, whatever the run's as-of time: the suppression list wins.
    return {pseudonym for pseudonym, email in rows if subject_ref(key, email) not in suppressed}


def _suppression_list(conn: Warehouse) -> set[str]:
    exists = conn.execute(
        "select count(*) from information_schema.tables where table_schema = 'ops' and table_name = 'suppression'"
    ).fetchall()[0][0]
    if not exists:
        return set()
    rows = conn.execute("select subject_hmac from ops.suppression where identifier = 'email'").fetchall()
    return {row[0] for row in rows}
