"""Keyed HMACs that name a message without naming its recipient.

A Message-ID and an unsubscribe URL travel with the mail, get forwarded and logged by mail systems:
neither may carry the email, the contact id or the marketing pseudonym. Both are built from
`message_key`, a keyed HMAC (GMP_DELIVERY_KEY) of campaign, contact and content version: stable, so a
rerun builds the same Message-ID, and opaque to anyone without the key. The token adds a second
HMAC over the key, so a guessed or altered token is refused without a lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_KEY_CHARS = 32
_TOKEN = re.compile(r"^([0-9a-f]{32})\.([0-9a-f]{32})$")


def _mac(key: bytes, domain: str, *parts: str) -> str:
    return hmac.new(key, "\x00".join((domain, *parts)).encode(), hashlib.sha256).hexdigest()[:_KEY_CHARS]


def message_key(key: bytes, campaign_id: str, contact_id: str, content_version: str) -> str:
    """The message's opaque name: the Message-ID's local part and the token's subject."""
    return _mac(key, "gmp-message", campaign_id, str(contact_id), content_version)


def unsubscribe_token(key: bytes, message_key: str) -> str:
    return f"{message_key}.{_mac(key, 'gmp-unsubscribe', message_key)}"


def verify(key: bytes, token: str) -> str | None:
    """The message key a token was made for, or None for anything we did not sign (compared in constant time)."""
    match = _TOKEN.match((token or "").strip().lower())
    if not match:
        return None
    expected = _mac(key, "gmp-unsubscribe", match.group(1))
    return match.group(1) if hmac.compare_digest(expected, match.group(2)) else None
