"""The campaign-audience gate's input: the mart's rows plus an independent eligibility re-check.

A warehouse GX cannot open itself (the DuckDB file, held by this connection): a pandas frame (the
mart's rows with `is_still_eligible`), validated by GX's pandas engine.
A warehouse with a SQLAlchemy URL (Postgres): the gate runs inside the database. The re-check's
pseudonyms are written to `ops.audience_recheck` (a real table keyed by run and campaign: GX
validates over its own SQLAlchemy connection, which cannot see TEMP tables or uncommitted rows),
the gate's input is a SQL query joining marts.campaign_audience with it, and the same suite
(expectations/campaign_audience.py) validates that query through GX's Postgres datasource. The
rows are deleted after the gate, passed or failed. No frame of the audience is built on that path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pandas as pd

from governed_marketing.arrow_text import isin
from governed_marketing.policy import Policy
from governed_marketing.validation.classification import column_classes
from governed_marketing.validation.gates import GateResult, SqlBatch, run_gate
from governed_marketing.warehouse import Warehouse, scalar, table_exists


def built_as_of(conn: Warehouse, campaign_id: str) -> datetime | None:
    """The as-of time the audience mart was built for (marts.audience_funnel), if recorded."""
    if not table_exists(conn, "marts", "audience_funnel"):
        return None
    return scalar(conn, "select max(as_of) from marts.audience_funnel where campaign_id = ?", [campaign_id])


def audience_gate_frame(
    conn: Warehouse, audience: pd.DataFrame, *, policy: Policy, campaign_id: str, as_of: datetime
) -> pd.DataFrame:
    """The audience with `is_still_eligible`: consent and suppression re-checked on the raw data.

    The re-check runs at the as-of time the mart was built for, so a disagreement means the models
    and the raw data disagree (fail closed); people who became ineligible since are dropped and
    counted by the later last-moment check instead.
    """
    from expectations.campaign_audience import STILL_ELIGIBLE

    allowed = recheck(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    return audience.assign(**{STILL_ELIGIBLE: isin(audience["recipient_pseudonym"], allowed)})


def recheck(conn: Warehouse, *, policy: Policy, campaign_id: str, as_of: datetime) -> set[str]:
    """Pseudonyms the independent re-check allows, at the as-of time the mart was built for."""
    from governed_marketing.consent import still_eligible

    moment = built_as_of(conn, campaign_id) or as_of
    # The rules only, as the models apply them: the suppression list is honoured by the later
    # last-moment checks, which drop and count rather than fail the whole campaign.
    return still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=moment, honour_suppression_list=False)


def gate_campaign_audience(
    conn: Warehouse, *, policy: Policy, campaign_id: str, as_of: datetime, run_id: str
) -> GateResult:
    """The gate inside the database when GX can open it, else on a frame of the mart."""
    if conn.sqlalchemy_url() is not None:
        return audience_gate_in_database(conn, policy=policy, campaign_id=campaign_id, as_of=as_of, run_id=run_id)
    audience = conn.execute(
        "select * from marts.campaign_audience where campaign_id = ? order by recipient_pseudonym", [campaign_id]
    ).df()
    checked = audience_gate_frame(conn, audience, policy=policy, campaign_id=campaign_id, as_of=as_of)
    return audience_gate(checked, policy=policy, campaign_id=campaign_id)


def audience_gate(frame: pd.DataFrame | SqlBatch, *, policy: Policy, campaign_id: str) -> GateResult:
    from expectations.campaign_audience import COMPUTED_COLUMNS, build_suite

    classes = column_classes("campaign_audience", extra=COMPUTED_COLUMNS)
    return run_gate("campaign_audience", campaign_id, lambda: build_suite(policy, campaign_id), frame, classes=classes)


# ---- Postgres: the gate inside the database ------------------------------------------------------

RECHECK_TABLE = "ops.audience_recheck"


@contextmanager
def recheck_rows(conn, allowed: set[str], *, run_id: str, campaign_id: str) -> Iterator[None]:
    """The re-check's pseudonyms in ops.audience_recheck (committed, so GX's connection sees them)
    for the duration of the gate; deleted afterwards, and any rows an earlier, interrupted gate of
    this campaign left behind are deleted first."""
    conn.execute("delete from ops.audience_recheck where campaign_id = ?", [campaign_id]).fetchall()
    try:
        pseudonyms = pd.DataFrame({"recipient_pseudonym": sorted(allowed)}, dtype="string")
        conn.temp_table("audience_recheck_rows", pseudonyms)  # bulk-loaded (COPY on Postgres)
        conn.execute(
            "insert into ops.audience_recheck (run_id, campaign_id, recipient_pseudonym)"
            " select ?, ?, recipient_pseudonym from audience_recheck_rows",
            [run_id, campaign_id],
        ).fetchall()
        yield
    finally:
        conn.execute(
            "delete from ops.audience_recheck where run_id = ? and campaign_id = ?", [run_id, campaign_id]
        ).fetchall()


def audience_gate_query(*, run_id: str, campaign_id: str) -> str:
    """The gate's input as SQL: the mart's rows plus `is_still_eligible` from ops.audience_recheck.

    The same columns, in the same order, as `audience_gate_frame`; `exists` (not a join) so the
    mart's rows are neither multiplied nor dropped. GX takes SQL text, not parameters: the values
    are quoted as standard SQL string literals (quotes doubled).
    """
    from expectations.campaign_audience import STILL_ELIGIBLE

    def literal(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    flag = '"' + STILL_ELIGIBLE.replace('"', '""') + '"'
    return (
        "select a.*, exists ("
        f"select 1 from ops.audience_recheck r where r.run_id = {literal(run_id)}"
        f" and r.campaign_id = {literal(campaign_id)}"
        f" and r.recipient_pseudonym = a.recipient_pseudonym) as {flag}"
        f" from marts.campaign_audience a where a.campaign_id = {literal(campaign_id)}"
    )


def audience_gate_in_database(conn, *, policy: Policy, campaign_id: str, as_of: datetime, run_id: str) -> GateResult:
    """Postgres: the campaign-audience gate run by GX's SQL datasource inside the database.

    Same suite, same result formats and scrubbing, same GateResult as `audience_gate` on a frame.
    """
    from governed_marketing.validation.gates import SqlBatch

    allowed = recheck(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    query = audience_gate_query(run_id=run_id, campaign_id=campaign_id)
    with recheck_rows(conn, allowed, run_id=run_id, campaign_id=campaign_id):
        described = conn.execute(f"select * from ({query}) gate_input limit 0")
        rows = scalar(conn, f"select count(*) from ({query}) gate_input")
        batch = SqlBatch(
            connection_string=conn.sqlalchemy_url(), query=query, columns=tuple(described.columns), rows=int(rows)
        )
        return audience_gate(batch, policy=policy, campaign_id=campaign_id)
