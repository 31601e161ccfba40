"""The generated-content gate: every message as it would be written to the outbox, checked first.

One row per message. Vendor text is checked before names are merged (draft_* columns, computed per
draft: a draft must carry no template syntax, since the greeting is composed locally), the final
message after (subject, body). Fails closed: nothing is written to the outbox
unless every message passes.
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
from governed_marketing.policy import Policy
from governed_marketing.validation.patterns import EMAIL_LIKE, PHONE_LIKE, TEMPLATE_SYNTAX, url_outside_allow_list

#: Free text addressed to a person: always treated as personal data (counts only in results).
TEXT_COLUMNS = {"subject": "direct", "body": "direct"}
#: Computed by the gate (counts and flags): safe to sample.
COMPUTED_COLUMNS = {
    "cohort_id": "none",
    "language": "none",
    "expected_language": "none",
    "draft_has_template_syntax": "none",
    "draft_has_contact_shape": "none",
    "draft_body_length": "none",
    "draft_has_known_identifier": "none",
    "has_objection_notice": "none",
}
CONTENT_COLUMNS = [
    "cohort_id",
    "language",
    "expected_language",
    "subject",
    "body",
    "draft_has_template_syntax",
    "draft_has_contact_shape",
    "draft_body_length",
    "draft_has_known_identifier",
    "has_objection_notice",
]
#: The longest subject the draft schema allows.
MAX_SUBJECT_CHARS = 200


def build_suite(policy: Policy, campaign_id: str) -> gx.ExpectationSuite:
    """No email, phone or unlisted URL; no template syntax; no known identifier; the notice; length and language."""
    outside = url_outside_allow_list(policy.content.allowed_urls)
    suite = gx.ExpectationSuite(name=f"generated_content.{campaign_id}")
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=CONTENT_COLUMNS, exact_match=True))
    for column in ("subject", "body"):
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
        suite.add_expectation(
            gxe.ExpectColumnValuesToNotMatchRegexList(column=column, regex_list=[EMAIL_LIKE, PHONE_LIKE])
        )
        suite.add_expectation(gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=outside))
        suite.add_expectation(gxe.ExpectColumnValuesToNotMatchRegex(column=column, regex=TEMPLATE_SYNTAX))
    suite.add_expectation(
        gxe.ExpectColumnValueLengthsToBeBetween(column="subject", min_value=1, max_value=MAX_SUBJECT_CHARS)
    )
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="draft_has_known_identifier", value_set=[False]))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="has_objection_notice", value_set=[True]))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="draft_has_template_syntax", value_set=[False]))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="draft_has_contact_shape", value_set=[False]))
    suite.add_expectation(
        gxe.ExpectColumnValuesToBeBetween(
            column="draft_body_length", min_value=1, max_value=policy.content.max_body_chars
        )
    )
    suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="language", regex=r"^[a-z]{2}$"))
    suite.add_expectation(gxe.ExpectColumnPairValuesToBeEqual(column_A="language", column_B="expected_language"))
    return suite
