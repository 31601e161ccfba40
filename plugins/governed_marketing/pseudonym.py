"""Keyed pseudonyms (HMAC-SHA256 of the normalized email): stable per person, useless without the key.

A plain hash of an email is reversible by anyone with a list of emails; a keyed HMAC is not
(EDPB pseudonymisation guidelines). The key comes from settings and never reaches SQL text or logs.
"""

from __future__ import annotations

import hashlib
import hmac

PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"


def pseudonym(key: bytes, normalized_email: str) -> str:
    return hmac.new(key, normalized_email.encode("utf-8"), hashlib.sha256).hexdigest()
