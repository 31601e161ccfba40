"""The campaign-audience gate's input: the mart's rows plus an independent eligibility re-check."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from governed_marketing.policy import Policy
from governed_marketing.validation.classification import column_classes
from governed_marketing.validation.gates import GateResult, run_gate
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
    from governed_marketing.consent import still_eligible

    moment = built_as_of(conn, campaign_id) or as_of
    # The rules only, as the models apply them: the suppression list is honoured by the later
    # last-moment checks, which drop and count rather than fail the whole campaign.
    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=moment, honour_suppression_list=False)
    return audience.assign(**{STILL_ELIGIBLE: audience["recipient_pseudonym"].isin(allowed)})


def audience_gate(frame: pd.DataFrame, *, policy: Policy, campaign_id: str) -> GateResult:
    from expectations.campaign_audience import COMPUTED_COLUMNS, build_suite

    classes = column_classes("campaign_audience", extra=COMPUTED_COLUMNS)
    return run_gate("campaign_audience", campaign_id, lambda: build_suite(policy, campaign_id), frame, classes=classes)
