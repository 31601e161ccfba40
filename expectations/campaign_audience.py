"""The campaign-audience gate: what the generation stage may read, checked before anything leaves.

Fails closed: any failed expectation stops generation for the campaign.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
from governed_marketing.crm.contract import LIFECYCLE_STAGES
from governed_marketing.policy import Policy
from governed_marketing.pseudonym import PSEUDONYM_PATTERN

#: Columns the audience carries besides the purpose's allow-listed fields.
KEY_COLUMNS = ["campaign_id", "recipient_pseudonym", "cohort_id"]
#: Computed by the gate: the recipient is still eligible by an independent re-check of consent and
#: suppression against the raw data (governed_marketing.consent), at the as-of time of the build.
STILL_ELIGIBLE = "is_still_eligible"
COMPUTED_COLUMNS = {STILL_ELIGIBLE: "none"}


def audience_columns(policy: Policy, campaign_id: str) -> list[str]:
    return KEY_COLUMNS + list(policy.purpose_of(campaign_id).fields)


def build_suite(policy: Policy, campaign_id: str) -> gx.ExpectationSuite:
    """Exact column set (the allow-list), pseudonym format, one row per recipient, every row eligible."""
    fields = policy.purpose_of(campaign_id).fields
    suite = gx.ExpectationSuite(name=f"campaign_audience.{campaign_id}")
    suite.add_expectation(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*audience_columns(policy, campaign_id), STILL_ELIGIBLE], exact_match=True
        )
    )
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="recipient_pseudonym"))
    suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="recipient_pseudonym", regex=PSEUDONYM_PATTERN))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column="recipient_pseudonym"))
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="cohort_id"))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="campaign_id", value_set=[campaign_id]))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=STILL_ELIGIBLE, value_set=[True]))
    if "lifecycle_stage" in fields:
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeInSet(column="lifecycle_stage", value_set=list(LIFECYCLE_STAGES))
        )
    if "language" in fields:
        suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="language", regex=r"^[a-z]{2}$"))
    if "country" in fields:
        suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="country", regex=r"^[A-Z]{2}$"))
    return suite
