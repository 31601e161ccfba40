"""The vendor-payload gate: exactly what a content provider is about to receive, checked before it leaves.

One row per draft request: the unit id, the language and the cohort attributes. Fails closed: no
request reaches the vendor unless every one of them passes.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
from governed_marketing.policy import Policy
from governed_marketing.validation.patterns import CARD_LIKE, EMAIL_LIKE, IBAN_LIKE, PHONE_LIKE

UNIT = "unit_id"
#: What no attribute value may look like: contact data that slipped into a cohort attribute.
IDENTIFIER_PATTERNS = [EMAIL_LIKE, PHONE_LIKE, IBAN_LIKE, CARD_LIKE]


def holders_column(attribute: str) -> str:
    """Computed by the gate: how many audience members hold the attribute's value (k-anonymity)."""
    return f"{attribute}_holders"


def payload_columns(attributes: list[str], *, cohort_mode: bool) -> list[str]:
    computed = [holders_column(a) for a in attributes] if cohort_mode else []
    return [UNIT, *attributes, *computed]


def computed_columns(attributes: list[str]) -> dict[str, str]:
    return {UNIT: "none", **{holders_column(a): "none" for a in attributes}}


def build_suite(policy: Policy, campaign_id: str, *, attributes: list[str]) -> gx.ExpectationSuite:
    """Exact key set, no identifier-looking value, and (cohort mode) no value held by fewer than k.

    Args:
        attributes: the keys a request may carry (the columns of generation_cohorts it is built from).
    """
    cohort_mode = policy.campaigns[campaign_id].personalization == "cohort"
    suite = gx.ExpectationSuite(name=f"vendor_payload.{campaign_id}")
    suite.add_expectation(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=payload_columns(attributes, cohort_mode=cohort_mode), exact_match=True
        )
    )
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=UNIT))
    suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=UNIT))
    if "language" in attributes:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column="language"))
        suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="language", regex=r"^[a-z]{2}$"))
    for attribute in attributes:
        suite.add_expectation(
            gxe.ExpectColumnValuesToNotMatchRegexList(column=attribute, regex_list=IDENTIFIER_PATTERNS)
        )
    if cohort_mode:
        for attribute in attributes:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(column=holders_column(attribute), min_value=policy.cohorts.k)
            )
    return suite
