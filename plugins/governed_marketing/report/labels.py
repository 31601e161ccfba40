"""Plain-language rules for the expectations of the four gates, as a reviewer reads them."""

from __future__ import annotations

from typing import Any

from governed_marketing.validation.patterns import TEMPLATE_SYNTAX

_COMPUTED = {
    "is_still_eligible": "every recipient is still eligible by an independent re-check of consent and suppression",
    "is_contact_known": "every event belongs to a contact the CRM exported",
    "draft_has_known_identifier": "the vendor's text holds no name, email or phone number of any audience member",
    "has_objection_notice": "every message carries the right-to-object notice with the unsubscribe link",
    "draft_has_template_syntax": "no draft carries template syntax or a placeholder (the greeting is added locally)",
    "draft_has_contact_shape": "no draft holds an email, phone number or URL outside content.allowed_urls",
}


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def describe(expectation: str, kwargs: dict[str, Any]) -> str:
    """One sentence for an expectation: what it requires, never a value it found."""
    column = kwargs.get("column")
    low, high = _number(kwargs.get("min_value")), _number(kwargs.get("max_value"))
    if expectation == "expect_table_columns_to_match_set":
        return f"exactly these columns: {', '.join(sorted(kwargs.get('column_set') or []))}"
    if column in _COMPUTED and expectation == "expect_column_values_to_be_in_set":
        return _COMPUTED[column]
    if str(column).endswith("_outside_vocabulary") and expectation == "expect_column_values_to_be_in_set":
        attribute = str(column).removesuffix("_outside_vocabulary")
        return f"every {attribute} value sent is a term of its vocabulary in governance.yml (vocabularies)"
    if expectation == "expect_column_values_to_not_be_null":
        return f"{column} is always present"
    if expectation == "expect_column_values_to_be_unique":
        return f"{column} is unique"
    if expectation == "expect_column_values_to_match_regex":
        return f"{column} has the expected format"
    if expectation == "expect_column_values_to_be_in_set" and str(column).endswith("_outside_vocabulary"):
        attribute = str(column).removesuffix("_outside_vocabulary")
        return f"every {attribute} value sent is a term of vocabularies.{attribute} in governance.yml"
    if expectation == "expect_column_values_to_be_in_set":
        return f"{column} is one of {', '.join(map(str, kwargs.get('value_set') or []))}"
    if expectation == "expect_column_values_to_not_match_regex_list":
        count = len(kwargs.get("regex_list") or [])
        kinds = "an email, phone number, IBAN or card number" if count >= 4 else "an email or phone number"
        return f"no {column} value looks like {kinds}"
    if expectation == "expect_column_values_to_not_match_regex":
        if kwargs.get("regex") == TEMPLATE_SYNTAX:
            return f"no unfilled placeholder or template syntax in the {column}"
        return f"no URL outside content.allowed_urls in the {column}"
    if expectation == "expect_column_value_lengths_to_be_between":
        return f"{column} length between {low} and {high or 'any'} characters"
    if expectation == "expect_column_values_to_be_between":
        if str(column).endswith("_holders"):
            attribute = str(column).removesuffix("_holders")
            return f"every {attribute} value sent is held by at least {low} audience members"
        if column == "draft_body_length":
            return f"every draft body is at most {high} characters"
        return f"{column} between {low} and {high}"
    if expectation == "expect_column_pair_values_to_be_equal":
        return "every message is in the recipient's language (or the policy's fallback language)"
    if expectation == "expect_column_values_to_be_of_type":
        return f"{column} has type {kwargs.get('type_')}"
    if expectation == "expect_column_values_to_be_in_type_list":
        return f"{column} has one of the types {', '.join(kwargs.get('type_list') or [])}"
    if expectation == "expect_column_values_to_be_json_parseable":
        return f"{column} is valid JSON"
    return expectation.removeprefix("expect_").replace("_", " ") + (f" ({column})" if column else "")
