"""The generated-content gate: every message as it would be written to the outbox, checked first.

One row per message. Vendor text is checked before names are merged (draft_* columns, computed per
draft: a draft must carry no template syntax, since the greeting is composed locally), the final
message after (subject, body). Fails closed: nothing is written to the outbox
unless every message passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class ContentRule:
    """One rule over one column, read both by the GX suite and by the per-draft verdict.

    `bounds` (a length or a value range, from the policy) or, without it, a flag that must equal `must_be`.
    `judges_draft`: the column says something about the vendor's own text, so a row breaking the
    rule rejects its draft (drafted again); the other rules are about our merged message.
    """

    column: str
    problem: str
    judges_draft: bool = True
    bounds: Callable[[Policy], tuple[int, int]] | None = None
    length: bool = False  # bounds apply to the value's length, not to the value
    must_be: bool = False  # a flag rule: the value every row must have

    def expectation(self, policy: Policy) -> Any:
        if self.bounds is None:
            return gxe.ExpectColumnValuesToBeInSet(column=self.column, value_set=[self.must_be])
        low, high = self.bounds(policy)
        if self.length:
            return gxe.ExpectColumnValueLengthsToBeBetween(column=self.column, min_value=low, max_value=high)
        return gxe.ExpectColumnValuesToBeBetween(column=self.column, min_value=low, max_value=high)

    def broken(self, value: Any, policy: Policy) -> bool:
        if self.bounds is None:
            return bool(value) != self.must_be
        low, high = self.bounds(policy)
        measured = len(value or "") if self.length else value
        return not low <= measured <= high


#: The column rules, in the suite's order. The per-draft verdict (`validation.content.rejected_drafts`)
#: applies those with `judges_draft` to decide which drafts are drafted again.
CONTENT_RULES: tuple[ContentRule, ...] = (
    ContentRule("subject", "subject length", bounds=lambda _: (1, MAX_SUBJECT_CHARS), length=True),
    ContentRule("draft_has_known_identifier", "contains a known identifier of an audience member"),
    ContentRule("has_objection_notice", "the right-to-object notice is missing", judges_draft=False, must_be=True),
    ContentRule("draft_has_template_syntax", "contains template syntax"),
    ContentRule(
        "draft_has_contact_shape", "contains an email address, phone number or URL outside content.allowed_urls"
    ),
    ContentRule(
        "draft_body_length",
        "body length outside content.max_body_chars",
        bounds=lambda policy: (1, policy.content.max_body_chars),
    ),
)


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
    for rule in CONTENT_RULES:
        suite.add_expectation(rule.expectation(policy))
    suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column="language", regex=r"^[a-z]{2}$"))
    suite.add_expectation(gxe.ExpectColumnPairValuesToBeEqual(column_A="language", column_B="expected_language"))
    return suite
