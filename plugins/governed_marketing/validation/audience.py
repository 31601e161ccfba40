"""The campaign-audience gate's input: the mart's rows plus an independent eligibility re-check.

DuckDB: a pandas frame (the mart's rows with `is_still_eligible`), validated by GX's pandas engine.
Postgres: the gate runs inside the database. The re-check's pseudonyms are written to
`ops.audience_recheck` (a real table keyed by run and campaign: GX validates over its own SQLAlchemy
connection, which cannot see TEMP tables or uncommitted rows), the gate's input is a SQL query
joining marts.campaign_audience with it, and the same suite (expectations/campaign_audience.py)
validates that query through GX's Postgres datasource. The rows are deleted after the gate, passed
or failed. No frame of the audience is built on that path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import duckdb
import pandas as pd

from governed_marketing.policy import Policy
from governed_marketing.validation.classification import column_classes
from governed_marketing.validation.gates import GateResult, SqlBatch, run_gate
from governed_marketing.warehouse import scalar, table_exists


def built_as_of(conn: duckdb.DuckDBPyConnection, campaign_id: str) -> datetime | None:
    """The as-of time the audience mart was built for (marts.audience_funnel), if recorded."""
    if not table_exists(conn, "marts", "audience_funnel"):
        return None
    return scalar(conn, "select max(as_of) from marts.audience_funnel where campaign_id = ?", [campaign_id])


def audience_gate_frame(
    conn: duckdb.DuckDBPyConnection, audience: pd.DataFrame, *, policy: Policy, campaign_id: str, as_of: datetime
) -> pd.DataFrame:
    """The audience with `is_still_eligible`: consent and suppression re-checked on the raw data.

    The re-check runs at the as-of time the mart was built for, so a disagreement means the models
    and the raw data disagree (fail closed); people who became ineligible since are dropped and
    counted by the later last-moment check instead.
    """
    from expectations.campaign_audience import STILL_ELIGIBLE

    allowed = recheck(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    return audience.assign(**{STILL_ELIGIBLE: audience["recipient_pseudonym"].isin(allowed)})


def recheck(conn: duckdb.DuckDBPyConnection, *, policy: Policy, campaign_id: str, as_of: datetime) -> set[str]:
    """Pseudonyms the independent re-check allows, at the as-of time the mart was built for."""
    from governed_marketing.consent import still_eligible

    moment = built_as_of(conn, campaign_id) or as_of
    # The rules only, as the models apply them: the suppression list is honoured by the later
    # last-moment checks, which drop and count rather than fail the whole campaign.
    return still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=moment, honour_suppression_list=False)


def audience_gate(frame: pd.DataFrame | SqlBatch, *, policy: Policy, campaign_id: str) -> GateResult:
    from expectations.campaign_audience import COMPUTED_COLUMNS, build_suite

    classes = column_classes("campaign_audience", extra=COMPUTED_COLUMNS)
    return run_gate("campaign_audience", campaign_id, lambda: build_suite(policy, campaign_id), frame, classes=classes)


# ---- Postgres: the gate inside the database ------------------------------------------------------

RECHECK_TABLE = "ops.audience_recheck"
RECHECK_DDL = """
create schema if not exists ops;
create table if not exists ops.audience_recheck (
    run_id varchar not null,
    campaign_id varchar not null,
    recipient_pseudonym varchar not null,
    primary key (run_id, campaign_id, recipient_pseudonym)
);
"""


@contextmanager
def recheck_rows(conn, allowed: set[str], *, run_id: str, campaign_id: str) -> Iterator[None]:
    """The re-check's pseudonyms in ops.audience_recheck (committed, so GX's connection sees them)
    for the duration of the gate; deleted afterwards, and any rows an earlier, interrupted gate of
    this campaign left behind are deleted first."""
    import pyarrow as pa
    from psycopg2 import sql as pgsql

    from governed_marketing.warehouse_postgres import copy_batches

    conn.execute(RECHECK_DDL)
    conn.execute("delete from ops.audience_recheck where campaign_id = ?", [campaign_id]).fetchall()
    try:
        table = pa.table(
            {
                "run_id": pa.array([run_id] * len(allowed), pa.string()),
                "campaign_id": pa.array([campaign_id] * len(allowed), pa.string()),
                "recipient_pseudonym": pa.array(sorted(allowed), pa.string()),
            }
        )
        if table.num_rows:
            with conn.cursor() as cur:
                copy_batches(cur, pgsql.Identifier("ops", "audience_recheck"), table.column_names, table.to_batches())
        yield
    finally:
        conn.execute(
            "delete from ops.audience_recheck where run_id = ? and campaign_id = ?", [run_id, campaign_id]
        ).fetchall()


def audience_gate_query(conn, *, run_id: str, campaign_id: str) -> str:
    """The gate's input as SQL: the mart's rows plus `is_still_eligible` from ops.audience_recheck.

    The same columns, in the same order, as `audience_gate_frame`; `exists` (not a join) so the
    mart's rows are neither multiplied nor dropped. Literals are quoted by psycopg2.
    """
    from psycopg2 import sql as pgsql

    from expectations.campaign_audience import STILL_ELIGIBLE

    query = pgsql.SQL(
        "select a.*, exists ("
        "select 1 from ops.audience_recheck r where r.run_id = {run_id} and r.campaign_id = {campaign_id}"
        " and r.recipient_pseudonym = a.recipient_pseudonym) as {flag}"
        " from marts.campaign_audience a where a.campaign_id = {campaign_id}"
    ).format(
        run_id=pgsql.Literal(run_id), campaign_id=pgsql.Literal(campaign_id), flag=pgsql.Identifier(STILL_ELIGIBLE)
    )
    return query.as_string(conn.raw)


def audience_gate_in_database(conn, *, policy: Policy, campaign_id: str, as_of: datetime, run_id: str) -> GateResult:
    """Postgres: the campaign-audience gate run by GX's SQL datasource inside the database.

    Same suite, same result formats and scrubbing, same GateResult as `audience_gate` on a frame.
    """
    from governed_marketing.dialect import sqlalchemy_url
    from governed_marketing.validation.gates import SqlBatch

    allowed = recheck(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    query = audience_gate_query(conn, run_id=run_id, campaign_id=campaign_id)
    with recheck_rows(conn, allowed, run_id=run_id, campaign_id=campaign_id):
        described = conn.execute(f"select * from ({query}) gate_input limit 0")
        rows = scalar(conn, f"select count(*) from ({query}) gate_input")
        batch = SqlBatch(
            connection_string=sqlalchemy_url(conn), query=query, columns=tuple(described.columns), rows=int(rows)
        )
        return audience_gate(batch, policy=policy, campaign_id=campaign_id)
