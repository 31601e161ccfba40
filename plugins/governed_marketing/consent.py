"""The last-moment consent check, run against the raw data just before content leaves.

The dbt marts were built earlier in the run; a withdrawal, an objection, an erasure or a
restriction may have arrived since (a new export, `gmp dsr submit`). This check reads the raw
tables again, independently of the dbt SQL, and returns who is still allowed to receive.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from governed_marketing.crm.contract import SUPPRESSING_DSR_TYPES
from governed_marketing.policy import Policy

_STILL_ELIGIBLE = """
with recipients as (
    select r.recipient_pseudonym, c.contact_id, c.email_normalized
    from marts.campaign_recipients r
    join raw.crm_contacts c using (contact_id)
    where r.campaign_id = $campaign_id
),
suppressed as (
    select distinct email_normalized
    from raw.crm_dsr_requests
    where request_type in (select unnest($suppressing))
      and received_at <= $as_of
      and not (
        request_type = 'restriction'
        and try_cast(json_extract_string(details, '$.lifted_at') as timestamptz) <= $as_of
      )
),
events as (
    select distinct on (event_id) contact_id, lower(trim(purpose)) as consent, action, occurred_at
    from raw.crm_consent_events
    where occurred_at <= $as_of and contact_id in (select contact_id from recipients)
    order by event_id, occurred_at
),
latest as (
    select contact_id, consent, arg_max(action, (occurred_at, case when action = 'withdraw' then 1 else 0 end))
        as action,
        max(occurred_at) as decided_at
    from events
    group by contact_id, consent
),
consented as (
    select r.recipient_pseudonym
    from recipients r
    where not exists (
        select 1 from (select unnest($required) as consent) req
        left join latest l on l.contact_id = r.contact_id and l.consent = req.consent
        where l.action is distinct from 'grant'
           or l.decided_at < $as_of - $max_age_days * interval '1 day'
    )
)
select r.recipient_pseudonym, r.email_normalized
from recipients r
where r.recipient_pseudonym in (select recipient_pseudonym from consented)
  and r.email_normalized not in (select email_normalized from suppressed)
"""


def still_eligible(
    conn: duckdb.DuckDBPyConnection,
    *,
    policy: Policy,
    campaign_id: str,
    as_of: datetime,
    honour_suppression_list: bool = True,
) -> set[str]:
    """Pseudonyms of the campaign's recipients that still have consent and no suppressing request."""
    purpose = policy.purpose_of(campaign_id)
    rows = conn.execute(
        _STILL_ELIGIBLE,
        {
            "campaign_id": campaign_id,
            "suppressing": list(SUPPRESSING_DSR_TYPES),
            "as_of": as_of.replace(tzinfo=None),
            "required": list(purpose.requires_consent),
            "max_age_days": purpose.consent_max_age_days,
        },
    ).fetchall()
    suppressed = _suppression_list(conn) if honour_suppression_list else set()
    if not suppressed:
        return {row[0] for row in rows}
    from governed_marketing.privacy.suppression import subject_ref
    from governed_marketing.settings import get_settings

    key, _ = get_settings().resolve_pseudonym_key()
    # Objections and erasures are for good, whatever the run's as-of time: the suppression list wins.
    return {pseudonym for pseudonym, email in rows if subject_ref(key, email) not in suppressed}


def _suppression_list(conn: duckdb.DuckDBPyConnection) -> set[str]:
    exists = conn.execute(
        "select count(*) from information_schema.tables where table_schema = 'ops' and table_name = 'suppression'"
    ).fetchall()[0][0]
    if not exists:
        return set()
    rows = conn.execute("select subject_hmac from ops.suppression where identifier = 'email'").fetchall()
    return {row[0] for row in rows}
