"""The hand-written external export: its hand-derived answer agrees with the reference rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from governed_marketing.policy import Policy, load_policy

from tests.support.reference_eligibility import RECIPIENT, RULE_INVALID_ROW, RULES, evaluate

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / "tests" / "fixtures" / "external_crm"
AS_OF = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
CAMPAIGN = "spring_newsletter"
ROW = re.compile(r"^\| (?P<id>\S+) \| (?P<receives>yes|no) \| (?P<rule>-|rule [1-5]) \|", re.MULTILINE)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "governance.yml")


def documented() -> dict[str, tuple[bool, str]]:
    """contact_id -> (receives, decided by) from the table in EXPECTED.md."""
    text = (FIXTURE / "EXPECTED.md").read_text(encoding="utf-8")
    return {m["id"]: (m["receives"] == "yes", m["rule"]) for m in ROW.finditer(text)}


def expected_from_table() -> set[str]:
    return {contact_id for contact_id, (receives, _) in documented().items() if receives}


def test_the_reference_finds_exactly_the_expected_recipients(policy):
    expected = set((FIXTURE / "expected_recipients.txt").read_text(encoding="utf-8").split())
    assert expected_from_table() == expected, "EXPECTED.md and expected_recipients.txt disagree"
    assert evaluate(FIXTURE, policy, CAMPAIGN, AS_OF).recipients == expected


def test_every_documented_exclusion_fails_the_documented_rule_first(policy):
    evaluation = evaluate(FIXTURE, policy, CAMPAIGN, AS_OF)
    table = documented()
    contacts = {contact_id: row for contact_id, row in table.items() if contact_id != "(blank)"}
    assert set(contacts) == set(evaluation.decisions), "EXPECTED.md must list every contact_id of the export"
    for contact_id, (receives, rule) in contacts.items():
        expected = RECIPIENT if receives else RULES[int(rule.removeprefix("rule ")) - 1]
        assert evaluation.decisions[contact_id] == expected, contact_id
    rule_1_rows = sum(1 for receives, rule in table.values() if not receives and rule == "rule 1")
    assert evaluation.excluded_by_reason()[RULE_INVALID_ROW] == rule_1_rows


def test_the_fixture_keeps_its_foreign_style():
    contacts = (FIXTURE / "contacts.csv").read_bytes()
    assert contacts.startswith(b"\xef\xbb\xbf"), "contacts.csv lost its BOM"
    for name in ("contacts.csv", "consent_events.csv", "activity.csv", "dsr_requests.csv"):
        data = (FIXTURE / name).read_bytes()
        assert data.count(b"\n") == data.count(b"\r\n"), f"{name} lost its CRLF line endings"
        assert data.lstrip(b"\xef\xbb\xbf").startswith(b'"'), f"{name}: fields should be quoted"
