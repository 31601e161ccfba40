"""governance.yml as tables in the warehouse, so dbt models join policy instead of copying it.

The tables are derived, never edited: they are rewritten from governance.yml before every dbt
run (by the DuckDB plugin dbt loads, and by the pipeline), so a threshold lives in one place only.
"""

from __future__ import annotations

import pandas as pd

from governed_marketing.policy import Policy


def governance_frames(policy: Policy) -> dict[str, pd.DataFrame]:
    purposes = pd.DataFrame(
        [
            {
                "purpose_id": pid,
                "lawful_basis": p.lawful_basis,
                "consent_max_age_days": p.consent_max_age_days,
                "dpia_required": p.dpia.required,
                "dpia_reference": p.dpia.reference,
            }
            for pid, p in policy.purposes.items()
        ]
    )
    purpose_consents = pd.DataFrame(
        [{"purpose_id": pid, "consent_purpose": c} for pid, p in policy.purposes.items() for c in p.requires_consent],
        columns=["purpose_id", "consent_purpose"],
    )
    purpose_fields = pd.DataFrame(
        [{"purpose_id": pid, "field_name": f} for pid, p in policy.purposes.items() for f in p.fields]
    )
    campaigns = pd.DataFrame(
        [
            {"campaign_id": cid, "purpose_id": c.purpose, "personalization": c.personalization}
            for cid, c in policy.campaigns.items()
        ]
    )
    minimum_ages = pd.DataFrame(
        [{"country": k, "minimum_age": v} for k, v in policy.minimum_age.items() if k != "default"],
        columns=["country", "minimum_age"],
    ).astype({"country": "string", "minimum_age": "int64"})
    age_policy = pd.DataFrame(
        [
            {
                "default_minimum_age": policy.minimum_age["default"],
                "include_unknown_age": policy.unknown_age == "include",
            }
        ]
    )
    cohort_policy = pd.DataFrame([{"k": policy.cohorts.k, "fallback_language": policy.cohorts.fallback_language}])
    cohort_generalization = pd.DataFrame(
        [{"attribute": a, "drop_rank": i + 1} for i, a in enumerate(policy.cohorts.generalize)]
    )
    freshness = policy.ingest.freshness
    crm_freshness = pd.DataFrame(
        [freshness.model_dump()] if freshness else [], columns=["warn_after_hours", "error_after_hours"]
    ).astype("int64")
    return {
        "purposes": purposes,
        "purpose_consents": purpose_consents,
        "purpose_fields": purpose_fields,
        "campaigns": campaigns,
        "minimum_ages": minimum_ages,
        "age_policy": age_policy,
        "cohort_policy": cohort_policy,
        "cohort_generalization": cohort_generalization,
        "crm_freshness": crm_freshness,
    }


def write_governance_tables(conn, policy: Policy) -> None:
    """Rewrite the governance schema in one transaction.

    On Postgres (a `dialect.PostgresConnection`) this is `warehouse_postgres.write_governance_tables`
    plus the keyed pseudonym function the models call (dbt-postgres has no plugin hook to do it).
    """
    from governed_marketing.dialect import is_postgres

    if is_postgres(conn):
        from governed_marketing import warehouse_postgres
        from governed_marketing.settings import get_settings

        key, _ = get_settings().resolve_pseudonym_key()
        conn.raw.autocommit = False
        try:
            warehouse_postgres.install_pseudonym_key(conn.raw, key)
            warehouse_postgres.write_governance_tables(conn.raw, policy)
        finally:
            conn.raw.autocommit = True
        return
    conn.execute("create schema if not exists governance")
    conn.execute("begin transaction")
    try:
        for name, frame in governance_frames(policy).items():
            conn.register("policy_frame", frame)
            conn.execute(f"create or replace table governance.{name} as select * from policy_frame")
            conn.unregister("policy_frame")
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
