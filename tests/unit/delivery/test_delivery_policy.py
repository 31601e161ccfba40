"""governance.yml `delivery:`: errors name the key; no block means delivery is off."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from governed_marketing.policy import PolicyError, parse_policy

from tests.conftest import PROJECT_ROOT

TEXT = (PROJECT_ROOT / "governance.yml").read_text(encoding="utf-8")


def test_the_project_policy_delivers_spring_newsletter():
    delivery = parse_policy(TEXT, path=Path("governance.yml")).delivery
    assert delivery is not None and "spring_newsletter" in delivery.campaigns
    assert delivery.unsubscribe_url.startswith("https://")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("    spring_newsletter: {sender:", "    autumn: {sender:", "delivery.campaigns.autumn"),
        ("unsubscribe_url: https://marketing", "unsubscribe_url: http://marketing", "delivery.unsubscribe_url"),
        ("per_minute_cap: 6000", "per_minute_cap: 0", "delivery.per_minute_cap"),
        ("connections: 2 ", "connections: 0 ", "delivery.connections"),
    ],
)
def test_a_bad_delivery_block_names_the_key(old, new, key):
    assert old in TEXT
    with pytest.raises(PolicyError, match=re.escape(key)):
        parse_policy(TEXT.replace(old, new, 1), path=Path("governance.yml"))


def test_without_a_delivery_block_delivery_is_off():
    start = TEXT.index("\n# Sending the outbox by SMTP")
    end = TEXT.index("\n# Review metadata")
    assert parse_policy(TEXT[:start] + TEXT[end:], path=Path("governance.yml")).delivery is None
