"""The pipeline's steps as plain functions: what each DAG task calls, in one or two lines.

Every step returns counts (never rows) and records them in `ops.pipeline_steps`, which the
summary and the report read.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from governed_marketing import warehouse
from governed_marketing.policy import load_policy
from governed_marketing.privacy import audit
from governed_marketing.settings import get_settings

log = logging.getLogger(__name__)

STEPS_DDL = """
create schema if not exists ops;
create table if not exists ops.pipeline_steps (
    run_id varchar not null,
    step varchar not null,
    subject varchar not null,
    counts_json varchar not null,
    recorded_at timestamp not null,
    primary key (run_id, step, subject)
);
"""


def parse_as_of(value: str | datetime | None) -> datetime:
    """The run's as-of time as naive UTC; a zone-less ISO string is UTC; None is now."""
    if value is None or value == "":
        return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"as_of {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def record_step(conn, run_id: str, step: str, subject: str, counts: dict) -> None:
    conn.execute(STEPS_DDL)
    conn.execute(
        "insert or replace into ops.pipeline_steps values (?, ?, ?, ?, ?)",
        [run_id, step, subject, json.dumps(counts, sort_keys=True, default=str), datetime.now(UTC)],
    ).fetchall()


def ingest(crm_dir: str | Path | None, *, run_id: str) -> dict:
    """Load the CRM export (DAG param, else GMP_CRM_DIR) into the raw tables."""
    from governed_marketing.crm.ingest import ingest_export
    from governed_marketing.governance_tables import write_governance_tables

    settings = get_settings()
    source = crm_dir or settings.crm_dir
    if not source:
        raise ValueError("no CRM export given: pass crm_dir in the DAG run conf or set GMP_CRM_DIR")
    policy = load_policy()
    with warehouse.session(settings.warehouse_path) as conn:
        try:
            result = ingest_export(Path(source), conn=conn, policy=policy, landing_root=settings.path("landing"))
        except Exception as exc:
            record_step(conn, run_id, "ingest", "crm", {"failed": str(exc)})
            raise
        write_governance_tables(conn, policy)
        counts = result.counts()
        record_step(conn, run_id, "ingest", "crm", counts)
        audit.record_step(conn, run_id, "ingest", "crm", counts)  # hash-chained, counts only
    return counts


def campaign_ids() -> list[str]:
    return load_policy().campaign_ids()


def generate(campaign_id: str, *, run_id: str, as_of: str | datetime | None) -> dict:
    """Gate, draft and write the outbox for one campaign (see generation.campaign)."""
    from governed_marketing.generation.campaign import run_campaign
    from governed_marketing.generation.providers import build_provider

    settings = get_settings()
    policy = load_policy()
    provider = build_provider(settings, policy, vendor_allowed=True)
    with warehouse.session(settings.warehouse_path) as conn:
        try:
            outcome = run_campaign(
                campaign_id,
                conn=conn,
                policy=policy,
                provider=provider,
                as_of=parse_as_of(as_of),
                run_id=run_id,
                outbox_root=settings.path("outbox"),
            )
        except Exception as exc:
            record_step(conn, run_id, "generate", campaign_id, {"failed": str(exc)})
            raise
        counts = outcome.counts()
        record_step(conn, run_id, "generate", campaign_id, counts)
        audit.record_step(conn, run_id, "generate", campaign_id, counts)  # hash-chained, counts only
    return counts
