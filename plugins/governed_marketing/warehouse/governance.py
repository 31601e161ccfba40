"""governance.yml as tables in the warehouse, so dbt models join policy instead of copying it.

The tables are derived, never edited. They are rewritten when the policy they show changed: the
hash of their content is stored beside them, so opening a dbt connection or ingesting an export
with the same policy writes nothing (it used to rewrite nine tables on every dbt connection).
"""

from __future__ import annotations

import hashlib

import pandas as pd

from governed_marketing.policy import Policy
from governed_marketing.warehouse.base import Warehouse

SCHEMA = "governance"
#: One row: the sha256 of the frames the governance tables were last written from.
VERSION_TABLE = "policy_version"


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


def frames_sha256(frames: dict[str, pd.DataFrame]) -> str:
    """Content and column types: a changed threshold, a new column or a new dtype all change it."""
    digest = hashlib.sha256()
    for name in sorted(frames):
        frame = frames[name]
        digest.update(f"{name}\x1f{dict(frame.dtypes.astype(str))}\x1f".encode())
        digest.update(frame.to_csv(index=False).encode())
    return digest.hexdigest()


def _written_sha256(conn: Warehouse) -> str | None:
    found = conn.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [SCHEMA, VERSION_TABLE],
    ).fetchall()[0][0]
    if not found:
        return None
    rows = conn.execute(f"select sha256 from {SCHEMA}.{VERSION_TABLE}").fetchall()
    return rows[0][0] if rows else None


def write_governance_tables(conn: Warehouse, policy: Policy) -> dict[str, int]:
    """Rewrite the governance schema in one transaction when the policy changed; rows per table."""
    frames = governance_frames(policy)
    counts = {name: len(frame) for name, frame in frames.items()}
    sha256 = frames_sha256(frames)
    if _written_sha256(conn) == sha256:
        return counts
    conn.execute(f"create schema if not exists {SCHEMA}").fetchall()
    with conn.transaction():
        for name, frame in frames.items():
            conn.replace_table(SCHEMA, name, frame)
        conn.replace_table(SCHEMA, VERSION_TABLE, pd.DataFrame({"sha256": [sha256]}, dtype="string"))
    return counts


def prepare_for_dbt(conn: Warehouse, policy: Policy, key: bytes) -> None:
    """What dbt's models need from the warehouse besides the raw tables: the policy and the pseudonym."""
    conn.install_pseudonym_key(key)
    write_governance_tables(conn, policy)
