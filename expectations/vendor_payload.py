"""The vendor-payload gate: exactly what a content provider is about to receive, checked before it leaves.

One row per draft request: the unit id, the language and the cohort attributes. Fails closed: no
request reaches the vendor unless every one of them passes, and no free-text attribute carries a
value outside its vocabulary in governance.yml.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
from governed_marketing.policy import Policy
from governed_marketing.validation.patterns import IDENTIFIER_PATTERNS

UNIT = "unit_id"


def holders_column(attribute: str) -> str:
    """Computed by the gate: how many audience members hold the attribute's value (k-anonymity)."""
    return f"{attribute}_holders"


def vocabulary_column(attribute: str) -> str:
    """Computed by the gate: how many sent items of a free-text attribute are not terms of its vocabulary."""
    return f"{attribute}_outside_vocabulary"


def vocabulary_checked(attributes: list[str], policy: Policy) -> list[str]:
    """The attributes whose every sent value must be a term of a vocabulary (free text in the CRM)."""
    return [a for a in attributes if policy.vocabulary_of(a) is not None]


def payload_columns(attributes: list[str], *, cohort_mode: bool, checked: list[str] = ()) -> list[str]:
    computed = [vocabulary_column(a) for a in checked]
    computed += [holders_column(a) for a in attributes] if cohort_mode else []
    return [UNIT, *attributes, *computed]


def computed_columns(attributes: list[str], checked: list[str] = ()) -> dict[str, str]:
    return {
        UNIT: "none",
        **{holders_column(a): "none" for a in attributes},
        **{vocabulary_column(a): "none" for a in checked},
    }


def build_suite(policy: Policy, campaign_id: str, *, attributes: list[str]) -> gx.ExpectationSuite:
    """Exact key set, no identifier-looking value, free text only from its vocabulary, and (cohort mode)
    no value held by fewer than k.

    Args:
        attributes: the keys a request may carry (the columns of generation_cohorts it is built from).
    """
    cohort_mode = policy.campaigns[campaign_id].personalization == "cohort"
    checked = vocabulary_checked(attributes, policy)
    suite = gx.ExpectationSuite(name=f"vendor_payload.{campaign_id}")
    suite.add_expectation(
        gxe.ExpectTableColumnsToMatchSet(
            column_set=payload_columns(attributes, cohort_mode=cohort_mode, checked=checked), exact_match=True
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
    for attribute in checked:  # 0 items outside the vocabulary; null: the attribute is not sent
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=vocabulary_column(attribute), value_set=[0]))
    if cohort_mode:
        for attribute in attributes:
            suite.add_expectation(
                gxe.ExpectColumnValuesToBeBetween(column=holders_column(attribute), min_value=policy.cohorts.k)
            )
    return suite
