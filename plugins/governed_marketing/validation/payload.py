"""The vendor-payload gate's input: one row per draft request, exactly as the provider receives it.

Besides the attributes, computed columns: how many audience members hold each value (k-anonymity,
cohort mode) and, for each free-text attribute, how many of its values are not terms of its
vocabulary in governance.yml (`vocabularies`): the gate requires none.
"""

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


def _outside_vocabulary(value: object, terms: frozenset[str]) -> int | None:
    """How many of a sent value's items (`;`-separated) are not terms; None when nothing is sent."""
    if value is None:
        return None
    return sum(1 for item in str(value).split(";") if item not in terms)


def payload_frame(
    requests: list[DraftRequest], *, attributes: list[str], audience: pd.DataFrame, policy: Policy
) -> pd.DataFrame:
    """Requests as rows; every allowed attribute is a column, any other key becomes an extra column.

    `<attribute>_holders` counts the audience members holding each value (the policy's fallback
    language, which says nothing about anyone, is not counted); `<attribute>_outside_vocabulary`
    counts the sent items of a free-text attribute that are not terms of its vocabulary.
    """
    from expectations.vendor_payload import UNIT, holders_column, vocabulary_checked, vocabulary_column

    rows = [{UNIT: r.unit_id, "language": r.language, **r.attributes} for r in requests]
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in (UNIT, *attributes)]
    frame = frame.reindex(columns=[UNIT, *attributes, *extra]).astype(object)
    frame = frame.where(frame.notna(), None)
    for attribute in vocabulary_checked(attributes, policy):
        vocabulary = policy.vocabulary_of(attribute)
        terms = frozenset(vocabulary.terms if vocabulary else ())
        outside = frame[attribute].map(lambda v, terms=terms: _outside_vocabulary(v, terms))
        frame[vocabulary_column(attribute)] = outside.astype(object)
    individual = bool(requests) and policy.campaigns[requests[0].campaign_id].personalization != "cohort"
    if individual:  # each request is one recipient's allow-listed fields by design: no k to count
        return frame
    for attribute in attributes:
        counts = _holder_counts(audience, attribute, policy)
        holders = frame[attribute].map(lambda v, counts=counts: None if v is None else int(counts.get(v, 0)))
        if attribute == "language":
            holders = holders.where(frame[attribute] != policy.cohorts.fallback_language, None)
        frame[holders_column(attribute)] = holders.astype(object)
    return frame


def _holder_counts(audience: pd.DataFrame, attribute: str, policy: Policy) -> dict[str, int]:
    """Audience members per value, counted as the value is sent (free text mapped onto its vocabulary)."""
    read = _AUDIENCE_VALUE.get(attribute)
    if read is None or audience.empty:
        return {}
    values = read(audience).dropna().astype(str)
    vocabulary = policy.vocabulary_of(attribute)
    if vocabulary is not None:
        values = values.map(vocabulary.map).dropna()
    return values.value_counts().to_dict()


def payload_gate(frame: pd.DataFrame, *, attributes: list[str], policy: Policy, campaign_id: str) -> GateResult:
    from expectations.vendor_payload import build_suite, computed_columns, vocabulary_checked

    model = "generation_cohorts" if policy.campaigns[campaign_id].personalization == "cohort" else "campaign_audience"
    classes = column_classes(model, extra=computed_columns(attributes, vocabulary_checked(attributes, policy)))
    return run_gate(
        "vendor_payload",
        campaign_id,
        lambda: build_suite(policy, campaign_id, attributes=attributes),
        frame,
        classes=classes,
    )
