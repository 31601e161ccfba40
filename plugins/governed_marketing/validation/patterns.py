"""Regular expressions for what must never leave: emails, phone numbers, IBANs, card numbers, stray URLs.

They are plain strings so that Great Expectations can carry them in its expectation kwargs (and the
Data Docs show the rule, never the value that broke it). Shapes are deliberately strict about
separators so that ordinary content (a year, a short hex id) is not mistaken for a phone number.
"""

from __future__ import annotations

import re

#: An email address anywhere in a value.
EMAIL_LIKE = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"

#: A phone number: international (+49 / 0049 ...) with at least seven more digits, or a national one
#: with a trunk 0 and a separator after the area code ("030 1234567", "(030) 123-4567").
PHONE_LIKE = (
    r"(?<![\w+])(?:(?:\+|00)\d{1,3}[\s./-]?(?:\(\d{1,4}\)[\s./-]?)?\d(?:[\s./-]?\d){5,}"
    r"|\(?0\d{1,4}\)?[\s./-]\d(?:[\s./-]?\d){4,})(?!\w)"
)

#: An IBAN: country code, two check digits, 11 to 30 alphanumerics (spaces allowed in groups).
IBAN_LIKE = r"(?i)\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b"

#: A payment card number: 13 to 19 digits, optionally grouped by spaces or dashes.
CARD_LIKE = r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"

#: Template syntax of any common engine: left in a message it means a placeholder was not filled.
TEMPLATE_SYNTAX = r"\{\{|\}\}|\{%|%\}|\{#|#\}|\$\{"

#: Where a URL starts in running text.
URL_START = r"(?:\bhttps?://|\bwww\.)"

NAMED_IDENTIFIER_PATTERNS = {
    "email": EMAIL_LIKE,
    "phone": PHONE_LIKE,
    "iban": IBAN_LIKE,
    "card number": CARD_LIKE,
}
#: What no value sent to a vendor may look like: contact data that slipped into a cohort attribute.
IDENTIFIER_PATTERNS = list(NAMED_IDENTIFIER_PATTERNS.values())


def url_outside_allow_list(allowed_prefixes: list[str]) -> str:
    """A regex matching any URL that does not start with one of the allowed prefixes.

    An allowed prefix must end at a URL boundary, so `https://example.com.evil.test` is not allowed
    by `https://example.com`; a sentence's full stop after the URL is fine.
    """
    boundary = r"(?:[/?#:\s)\]>,;!'\"]|\.(?:\s|$)|$)"
    allowed = "|".join(re.escape(prefix.rstrip("/")) for prefix in allowed_prefixes if prefix.strip())
    if not allowed:
        return f"(?i){URL_START}"
    return f"(?i)(?!(?:{allowed}){boundary}){URL_START}"
