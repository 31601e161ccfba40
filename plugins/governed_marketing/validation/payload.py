"""The vendor-payload gate's input: one row per draft request, exactly as the provider receives it."""

from __future__ import annotations

import pandas as pd

from governed_marketing.generation.base import DraftRequest
from governed_marketing.policy import Policy
from governed_marketing.validation.classification import column_classes, manifest_classes
from governed_marketing.validation.gates import GateResult, run_gate

#: generation_cohorts columns that are bookkeeping, not attributes sent to a vendor.
COHORT_BOOKKEEPING = ("campaign_id", "cohort_id", "generalization_level", "member_count")
#: How each cohort attribute is read from a campaign_audience row (interest: the first of interests).
_AUDIENCE_VALUE = {
    "language": lambda a: a["language"],
    "country": lambda a: a["country"],
    "lifecycle_stage": lambda a: a["lifecycle_stage"],
    "interest": lambda a: a["interests"].str.split(";").str[0].str.strip().replace("", pd.NA),
    "last_purchase_category": lambda a: a["last_purchase_category"],
}


def payload_attributes(
    mode: str = "cohort", *, policy: Policy | None = None, campaign_id: str | None = None
) -> list[str]:
    """The keys a request may carry.

    Cohort mode: the columns of generation_cohorts (the dbt contract), in order. Individual mode: the
    purpose's allow-listed fields (governance.yml) that campaign_audience carries.
    """
    if mode == "cohort":
        columns = manifest_classes().get("generation_cohorts", {})
        return [name for name in columns if name not in COHORT_BOOKKEEPING]
    if policy is None or campaign_id is None:
        raise ValueError("individual mode: the policy and campaign decide the allowed fields")
    audience_columns = manifest_classes().get("campaign_audience", {})
    return [f for f in policy.purpose_of(campaign_id).fields if f in audience_columns]


def payload_frame(
    requests: list[DraftRequest], *, attributes: list[str], audience: pd.DataFrame, policy: Policy
) -> pd.DataFrame:
    """Requests as rows; every allowed attribute is a column, any other key becomes an extra column.

    `<attribute>_holders` counts the audience members holding each value (the policy's fallback
    language, which says nothing about anyone, is not counted).
    """
    from expectations.vendor_payload import UNIT, holders_column

    rows = [{UNIT: r.unit_id, "language": r.language, **r.attributes} for r in requests]
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in (UNIT, *attributes)]
    frame = frame.reindex(columns=[UNIT, *attributes, *extra]).astype(object)
    frame = frame.where(frame.notna(), None)
    individual = bool(requests) and policy.campaigns[requests[0].campaign_id].personalization != "cohort"
    if individual:  # each request is one recipient's allow-listed fields by design: no k to count
        return frame
    for attribute in attributes:
        counts = _holder_counts(audience, attribute)
        holders = frame[attribute].map(lambda v, counts=counts: None if v is None else int(counts.get(v, 0)))
        if attribute == "language":
            holders = holders.where(frame[attribute] != policy.cohorts.fallback_language, None)
        frame[holders_column(attribute)] = holders.astype(object)
    return frame


def _holder_counts(audience: pd.DataFrame, attribute: str) -> dict[str, int]:
    read = _AUDIENCE_VALUE.get(attribute)
    if read is None or audience.empty:
        return {}
    return read(audience).dropna().astype(str).value_counts().to_dict()


def payload_gate(frame: pd.DataFrame, *, attributes: list[str], policy: Policy, campaign_id: str) -> GateResult:
    from expectations.vendor_payload import build_suite, computed_columns

    model = "generation_cohorts" if policy.campaigns[campaign_id].personalization == "cohort" else "campaign_audience"
    classes = column_classes(model, extra=computed_columns(attributes))
    return run_gate(
        "vendor_payload",
        campaign_id,
        lambda: build_suite(policy, campaign_id, attributes=attributes),
        frame,
        classes=classes,
    )
