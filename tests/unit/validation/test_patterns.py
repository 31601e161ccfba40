"""The identifier shapes the payload and content gates look for: strict enough not to flag content."""

from __future__ import annotations

import re

import pytest
from governed_marketing.validation.patterns import (
    CARD_LIKE,
    EMAIL_LIKE,
    IBAN_LIKE,
    PHONE_LIKE,
    TEMPLATE_SYNTAX,
    url_outside_allow_list,
)


@pytest.mark.parametrize(
    "text",
    [
        "+49 5550 123 456",
        "0049-5550-123-456",
        "+353 (1) 555 0123",
        "030 1234567",
        "(030) 123-4567",
        "call 0176/5550123",
    ],
)
def test_phone_numbers_in_their_usual_shapes_are_found(text):
    assert re.search(PHONE_LIKE, text)


@pytest.mark.parametrize(
    "text",
    ["Spring ideas 12345678", "season (01234567)", "order 2026-11-15", "20% off until 2027", "version 1.2.3"],
)
def test_years_dates_and_hex_ids_are_not_phone_numbers(text):
    assert not re.search(PHONE_LIKE, text)


def test_emails_ibans_and_card_numbers_are_found():
    assert re.search(EMAIL_LIKE, "write to Ann.Lee+news@Example.co.uk today")
    assert re.search(IBAN_LIKE, "DE89 3704 0044 0532 0130 00")
    assert re.search(IBAN_LIKE, "gb82west12345698765432")
    assert re.search(CARD_LIKE, "4111 1111 1111 1111")
    assert not re.search(CARD_LIKE, "order 12345")


def test_a_url_is_allowed_only_under_an_allowed_prefix_ending_at_a_boundary():
    outside = url_outside_allow_list(["https://example.com"])
    for allowed in (
        "unsubscribe here: https://example.com/preferences",
        "see https://example.com.",
        "https://example.com?x=1",
    ):
        assert not re.search(outside, allowed), allowed
    for other in ("https://example.com.evil.test/x", "http://example.com/x", "www.example.com", "https://shop.test"):
        assert re.search(outside, other), other


def test_with_no_allowed_url_every_url_is_outside():
    assert re.search(url_outside_allow_list([]), "https://example.com")


def test_template_syntax_of_common_engines_is_found():
    for text in ("Hi {{ first_name }}", "{% if x %}", "${name}", "{# note #}"):
        assert re.search(TEMPLATE_SYNTAX, text)
    assert not re.search(TEMPLATE_SYNTAX, "Hi Ann, {curly} is fine")
