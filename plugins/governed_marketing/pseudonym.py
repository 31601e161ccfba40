"""Keyed pseudonyms (HMAC-SHA256 of the normalized email): stable per person, useless without the key.

A plain hash of an email is reversible by anyone with a list of emails; a keyed HMAC is not
(EDPB pseudonymisation guidelines). The key comes from settings and never reaches SQL text or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import re

PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"

#: Least key material for an HMAC key (GMP_PSEUDONYM_KEY, GMP_AUDIT_KEY): the SHA-256 block of entropy.
MIN_KEY_BYTES = 32

_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


def key_material_bytes(value: str) -> int:
    """How many bytes of key material a configured key holds.

    A value of hex digits only (an even number of them) counts as the bytes it decodes to, two digits
    a byte (`secrets.token_hex(32)` gives 32); any other value counts its UTF-8 bytes.
    """
    return len(value) // 2 if _HEX.match(value) else len(value.encode("utf-8"))


def check_key(name: str, value: str) -> None:
    """Refuse a key with less than MIN_KEY_BYTES of material, naming the variable (never the value)."""
    held = key_material_bytes(value)
    if held < MIN_KEY_BYTES:
        raise RuntimeError(
            f"{name} holds {held} bytes of key material; at least {MIN_KEY_BYTES} are required "
            f'(hex counts two digits a byte). Generate one: python -c "import secrets; print(secrets.token_hex(32))"'
        )


def pseudonym(key: bytes, normalized_email: str) -> str:
    return hmac.new(key, normalized_email.encode("utf-8"), hashlib.sha256).hexdigest()
