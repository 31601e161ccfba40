"""The reference eligibility rules, pinned edge by edge on small hand-written exports."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from governed_marketing.crm.contract import CONSENT_EVENTS, CONTACTS, DSR_REQUESTS
from governed_marketing.policy import Policy, parse_policy

from tests.support.reference_eligibility import (
    RECIPIENT,
    RULE_AGE,
    RULE_CONSENT,
    RULE_DSR,
    RULE_DUPLICATE_EMAIL,
    RULE_INVALID_ROW,
    compare_contact_ids,
    evaluate,
    excluded_by_reason,
    expected_recipients,
)

AS_OF = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
CAMPAIGN = "newsletter"

POLICY_YAML = """
version: 1
controller: {name: Test Shop, contact: privacy@example.com, dpo: dpo@example.com}
purposes:
  ai_email:
    description: test purpose
    lawful_basis: consent
    requires_consent: [email_marketing, ai_personalization]
    consent_max_age_days: 730
    fields: [language, country]
    dpia: {required: false}
campaigns:
  newsletter: {purpose: ai_email, prompt: prompt.md}
minimum_age: {default: 16, BE: 13, DK: 13}
unknown_age: UNKNOWN_AGE
cohorts: {k: 5, generalize: [country], fallback_language: en}
content: {default_language: en, max_body_chars: 2000, unsubscribe_url: https://example.com/p}
ingest: {max_quarantine_share: 0.2, max_future_skew: 1d}
retention: {raw_crm: 30d}
dsr: {deadline: 1 month, extension: 2 months}
"""


def make_policy(directory: Path, unknown_age: str = "include") -> Policy:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "prompt.md").write_text("stub prompt\n", encoding="utf-8")
    text = POLICY_YAML.replace("UNKNOWN_AGE", unknown_age)
    return parse_policy(text, path=directory / "governance.yml")


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return make_policy(tmp_path / "policy")


def contact(contact_id: str, **fields: str) -> dict[str, str]:
    row = {column: "" for column in CONTACTS.columns}
    row.update(
        contact_id=contact_id,
        email=f"person.{contact_id.strip() or 'x'}@example.test",
        birth_date="1990-05-05",
        country="DE",
        language="de",
        lifecycle_stage="customer",
        created_at="2025-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
    )
    row.update(fields)
    return row


_event_ids = iter(range(1, 1_000_000))


def event(contact_id: str, purpose: str, action: str, at: str, event_id: str | None = None) -> dict[str, str]:
    return {
        "event_id": event_id or f"e{next(_event_ids)}",
        "contact_id": contact_id,
        "purpose": purpose,
        "action": action,
        "source": "test",
        "notice_version": "v1",
        "occurred_at": at,
    }


def consented(contact_id: str, at: str = "2026-06-01T00:00:00Z") -> list[dict[str, str]]:
    return [
        event(contact_id, "email_marketing", "grant", at),
        event(contact_id, "ai_personalization", "grant", at),
    ]


def request(
    email: str, request_type: str, received_at: str = "2026-10-01T00:00:00Z", details: str = "{}"
) -> dict[str, str]:
    return {
        "request_id": f"r-{email}-{request_type}",
        "email": email,
        "request_type": request_type,
        "details": details,
        "received_at": received_at,
    }


def write_export(
    directory: Path,
    contacts: list[dict[str, str] | list[str]],
    events: list[dict[str, str]],
    requests: list[dict[str, str]] | None = None,
) -> Path:
    """Write an export; a contact given as a list is written as that raw record (wrong field counts)."""
    directory.mkdir(parents=True, exist_ok=True)

    def write(name: str, columns: tuple[str, ...], rows: list) -> None:
        with (directory / name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow(row if isinstance(row, list) else [row[c] for c in columns])

    write(CONTACTS.name, CONTACTS.columns, contacts)
    write(CONSENT_EVENTS.name, CONSENT_EVENTS.columns, events)
    write(
        "activity.csv",
        ("event_id", "contact_id", "event_type", "product_category", "amount", "occurred_at"),
        [],
    )
    if requests is not None:
        write(DSR_REQUESTS.name, DSR_REQUESTS.columns, requests)
    return directory


def decide(tmp_path: Path, policy: Policy, contacts, events, requests=None, as_of: datetime = AS_OF) -> dict[str, str]:
    crm = write_export(tmp_path / "crm", contacts, events, requests)
    return evaluate(crm, policy, CAMPAIGN, as_of).decisions


# ---- the baseline ----------------------------------------------------------------------------


def test_a_valid_consented_adult_receives_the_campaign(tmp_path, policy):
    crm = write_export(tmp_path / "crm", [contact("1")], consented("1"), [])
    assert expected_recipients(crm, policy, CAMPAIGN, AS_OF) == {"1"}


def test_a_missing_dsr_file_is_allowed(tmp_path, policy):
    assert decide(tmp_path, policy, [contact("1")], consented("1"), requests=None) == {"1": RECIPIENT}


# ---- rule 1: the row is valid ----------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "not-an-email"},
        {"email": "a@b"},
        {"email": ""},
        {"birth_date": "31/02/1990"},
        {"birth_date": "1990-02-31"},
        {"birth_date": "19900505"},
        {"created_at": "yesterday"},
        {"updated_at": ""},
    ],
    ids=lambda fields: "-".join(f"{k}={v or 'empty'}" for k, v in fields.items()),
)
def test_a_row_failing_validation_is_not_a_recipient(tmp_path, policy, fields):
    assert decide(tmp_path, policy, [contact("1", **fields)], consented("1")) == {"1": RULE_INVALID_ROW}


def test_rows_without_contact_id_or_with_the_wrong_field_count_are_invalid(tmp_path, policy):
    rows = [contact(""), contact("   ", email="x@example.test"), ["3", "short@example.test", "Only", "Three"]]
    crm = write_export(tmp_path / "crm", rows, consented("3"))
    evaluation = evaluate(crm, policy, CAMPAIGN, AS_OF)
    assert evaluation.decisions == {"3": RULE_INVALID_ROW}
    assert evaluation.excluded_by_reason()[RULE_INVALID_ROW] == 3


def test_email_is_valid_after_trim_and_lower_case_and_ids_are_trimmed(tmp_path, policy):
    rows = [contact(" 7 ", email="  Mixed.Case@Example.TEST ")]
    assert decide(tmp_path, policy, rows, consented(" 7")) == {"7": RECIPIENT}


def test_zone_less_offset_and_space_separated_timestamps_parse(tmp_path, policy):
    rows = [
        contact("1", created_at="2025-01-01T00:00:00", updated_at="2026-01-01T10:00:00+02:00"),
        contact("2", created_at="2025-01-01 00:00:00", updated_at="2026-01-01"),
    ]
    assert decide(tmp_path, policy, rows, consented("1") + consented("2")) == {"1": RECIPIENT, "2": RECIPIENT}


def test_of_several_valid_lines_for_a_contact_id_the_latest_updated_at_is_the_contact(tmp_path, policy):
    newer_first = [
        contact("1", birth_date="1990-01-01", updated_at="2026-05-01T00:00:00Z"),
        contact("1", birth_date="2015-01-01", updated_at="2026-01-01T00:00:00Z"),  # older version, later line
    ]
    crm = write_export(tmp_path / "crm", newer_first, consented("1"))
    evaluation = evaluate(crm, policy, CAMPAIGN, AS_OF)
    assert evaluation.decisions == {"1": RECIPIENT}
    assert evaluation.superseded_lines == [3]


def test_of_two_versions_with_the_same_updated_at_the_later_line_is_the_contact(tmp_path, policy):
    same_time = [contact("1", birth_date="1990-01-01"), contact("1", birth_date="2015-01-01")]
    assert decide(tmp_path, policy, same_time, consented("1")) == {"1": RULE_AGE}


def test_an_invalid_line_does_not_hide_a_valid_line_of_the_same_contact(tmp_path, policy):
    rows = [contact("1", email="broken", updated_at="2026-09-01T00:00:00Z"), contact("1")]
    assert decide(tmp_path, policy, rows, consented("1")) == {"1": RECIPIENT}


# ---- rule 2: no suppressing request ----------------------------------------------------------


@pytest.mark.parametrize("request_type", ["erasure", "objection", "restriction", " Objection "])
def test_a_suppressing_request_excludes_the_email(tmp_path, policy, request_type):
    requests = [request("person.1@example.test", request_type)]
    assert decide(tmp_path, policy, [contact("1")], consented("1"), requests) == {"1": RULE_DSR}


@pytest.mark.parametrize("request_type", ["access", "rectification", "portability"])
def test_other_requests_do_not_suppress(tmp_path, policy, request_type):
    requests = [request("person.1@example.test", request_type)]
    assert decide(tmp_path, policy, [contact("1")], consented("1"), requests) == {"1": RECIPIENT}


def test_a_request_matches_by_normalized_email_and_suppresses_every_contact_with_it(tmp_path, policy):
    rows = [contact("1", email="Anna@Example.test"), contact("2", email=" anna@example.test")]
    requests = [request("  ANNA@EXAMPLE.TEST ", "objection")]
    decisions = decide(tmp_path, policy, rows, consented("1") + consented("2"), requests)
    assert decisions == {"1": RULE_DSR, "2": RULE_DSR}


@pytest.mark.parametrize(
    ("request_type", "received_at", "details", "expected"),
    [
        ("erasure", "2026-11-15T12:00:00Z", "{}", RULE_DSR),
        ("erasure", "2026-11-15T14:00:00+02:00", "{}", RULE_DSR),
        ("erasure", "2026-11-15T12:00:01Z", "{}", RULE_DSR),  # received after as-of: suppresses all the same
        ("objection", "2026-12-07T09:00:00Z", "{}", RULE_DSR),
        ("restriction", "2026-12-01T09:00:00Z", "{}", RULE_DSR),
        ("restriction", "2026-12-01T09:00:00Z", '{"lifted_at": "2026-12-03T09:00:00Z"}', RECIPIENT),
    ],
)
def test_a_request_counts_from_its_receipt_whatever_the_as_of(
    tmp_path, policy, request_type, received_at, details, expected
):
    requests = [request("person.1@example.test", request_type, received_at=received_at, details=details)]
    assert decide(tmp_path, policy, [contact("1")], consented("1"), requests) == {"1": expected}


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        ('{"lifted_at": "2026-11-15T12:00:00Z"}', RECIPIENT),  # lifted exactly at as-of
        ('{"lifted_at": "2026-10-01T00:00:00"}', RECIPIENT),
        ('{"lifted_at": "2026-11-15T12:00:01Z"}', RULE_DSR),  # lifted only after as-of
        ('{"reason": "accuracy contested"}', RULE_DSR),
        ("{}", RULE_DSR),
        ("not json", RULE_DSR),
    ],
)
def test_a_restriction_counts_until_it_is_lifted(tmp_path, policy, details, expected):
    requests = [request("person.1@example.test", "restriction", details=details)]
    assert decide(tmp_path, policy, [contact("1")], consented("1"), requests) == {"1": expected}


# ---- rule 3: consent -------------------------------------------------------------------------


def test_a_withdrawal_after_the_grant_excludes(tmp_path, policy):
    events = [*consented("1"), event("1", "ai_personalization", "withdraw", "2026-07-01T00:00:00Z")]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RULE_CONSENT}


@pytest.mark.parametrize("withdraw_first", [True, False])
def test_on_equal_occurred_at_withdraw_wins_whatever_the_line_order(tmp_path, policy, withdraw_first):
    pair = [
        event("1", "email_marketing", "withdraw", "2026-07-01T12:00:00Z"),
        event("1", "email_marketing", "grant", "2026-07-01T14:00:00+02:00"),  # the same instant
    ]
    events = consented("1") + (pair if withdraw_first else pair[::-1])
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RULE_CONSENT}


def test_a_grant_after_a_withdrawal_restores_consent_even_when_written_first(tmp_path, policy):
    events = [
        event("1", "email_marketing", "grant", "2026-09-01T00:00:00Z"),
        *consented("1", at="2026-01-01T00:00:00Z"),
        event("1", "email_marketing", "withdraw", "2026-03-01T00:00:00Z"),
    ]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RECIPIENT}


@pytest.mark.parametrize(
    ("granted_at", "expected"),
    [
        ("2024-11-15T12:00:00Z", RECIPIENT),  # exactly 730 days: still valid
        ("2024-11-15T13:00:00+01:00", RECIPIENT),  # the same instant with an offset
        ("2024-11-15T11:59:59Z", RULE_CONSENT),  # one second older
        ("2024-11-14T12:00:00", RULE_CONSENT),  # 731 days
    ],
)
def test_a_grant_is_valid_up_to_exactly_consent_max_age_days(tmp_path, policy, granted_at, expected):
    events = [
        event("1", "email_marketing", "grant", "2026-06-01T00:00:00Z"),
        event("1", "ai_personalization", "grant", granted_at),
    ]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": expected}


def test_only_the_latest_grant_counts_for_age_an_older_renewal_does_not_help(tmp_path, policy):
    events = [
        event("1", "email_marketing", "grant", "2026-06-01T00:00:00Z"),
        event("1", "ai_personalization", "grant", "2026-01-01T00:00:00Z"),
        event("1", "ai_personalization", "grant", "2023-01-01T00:00:00Z"),
    ]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RECIPIENT}


def test_every_required_consent_is_needed(tmp_path, policy):
    events = [event("1", "email_marketing", "grant", "2026-06-01T00:00:00Z")]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RULE_CONSENT}


def test_events_after_as_of_are_not_yet_counted(tmp_path, policy):
    events = [*consented("1"), event("1", "email_marketing", "withdraw", "2026-11-15T12:00:01Z")]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RECIPIENT}
    late_grant = [
        event("2", "email_marketing", "grant", "2026-06-01T00:00:00Z"),
        event("2", "ai_personalization", "grant", "2026-11-16T00:00:00Z"),
    ]
    assert decide(tmp_path / "b", policy, [contact("2")], late_grant) == {"2": RULE_CONSENT}


def test_an_event_exactly_at_as_of_counts(tmp_path, policy):
    events = [*consented("1"), event("1", "email_marketing", "withdraw", "2026-11-15T12:00:00Z")]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RULE_CONSENT}


def test_purpose_and_action_are_trimmed_and_lower_cased(tmp_path, policy):
    events = [
        event("1", " Email_Marketing ", "GRANT", "2026-06-01T00:00:00Z"),
        event("1", "AI_PERSONALIZATION", " Grant ", "2026-06-01T00:00:00Z"),
    ]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RECIPIENT}


def test_unknown_actions_and_other_purposes_are_ignored(tmp_path, policy):
    events = [
        *consented("1"),
        event("1", "ai_personalization", "requested", "2026-08-01T00:00:00Z"),
        event("1", "ai_personalization", "withdrawn", "2026-08-02T00:00:00Z"),
        event("1", "sms_marketing", "withdraw", "2026-08-03T00:00:00Z"),
    ]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RECIPIENT}


def test_a_duplicated_event_id_counts_once(tmp_path, policy):
    grant = event("1", "email_marketing", "grant", "2026-06-01T00:00:00Z", event_id="dup")
    events = [grant, event("1", "ai_personalization", "grant", "2026-06-01T00:00:00Z"), dict(grant)]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RECIPIENT}


def test_of_conflicting_lines_sharing_an_event_id_the_first_counts(tmp_path, policy):
    reused = event("1", "email_marketing", "withdraw", "2026-08-01T00:00:00Z", event_id="e-reused")
    first = dict(reused, action="grant", occurred_at="2026-06-01T00:00:00Z")
    events = [first, event("1", "ai_personalization", "grant", "2026-06-01T00:00:00Z"), reused]
    assert decide(tmp_path, policy, [contact("1")], events) == {"1": RECIPIENT}


def test_events_are_matched_to_the_contact_id_not_the_email(tmp_path, policy):
    rows = [contact("1"), contact("2")]
    assert decide(tmp_path, policy, rows, consented("2")) == {"1": RULE_CONSENT, "2": RECIPIENT}


# ---- rule 4: age -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth_date", "country", "expected"),
    [
        ("2010-11-15", "DE", RECIPIENT),  # 16th birthday on the as-of date
        ("2010-11-16", "DE", RULE_AGE),  # 16 tomorrow
        ("2013-11-15", "BE", RECIPIENT),  # 13th birthday on the as-of date, BE minimum 13
        ("2013-11-16", "BE", RULE_AGE),
        ("2012-01-01", "DK", RECIPIENT),
        ("2011-06-01", " be ", RECIPIENT),  # 15: trimmed and upper-cased to BE
        ("2011-06-01", "FR", RULE_AGE),  # 15: default minimum 16
        ("2011-06-01", "", RULE_AGE),  # no country: the default
        ("1950-02-28", "DE", RECIPIENT),
    ],
)
def test_age_is_whole_years_at_the_as_of_date_against_the_country_minimum(
    tmp_path, policy, birth_date, country, expected
):
    rows = [contact("1", birth_date=birth_date, country=country)]
    assert decide(tmp_path, policy, rows, consented("1")) == {"1": expected}


def test_age_is_taken_on_the_utc_date_of_as_of(tmp_path, policy):
    late_evening = datetime.fromisoformat("2026-11-15T23:30:00-02:00")  # 2026-11-16 in UTC
    rows = [contact("1", birth_date="2010-11-16")]
    assert decide(tmp_path, policy, rows, consented("1"), as_of=late_evening) == {"1": RECIPIENT}


def test_born_on_29_february_turns_a_year_older_on_1_march_in_common_years(tmp_path, policy):
    rows = [contact("1", birth_date="2008-02-29", country="BE")]  # 13 in 2021
    events = consented("1", at="2020-06-01T00:00:00Z")
    on_28_february = decide(tmp_path, policy, rows, events, as_of=datetime(2021, 2, 28, 12, tzinfo=UTC))
    on_1_march = decide(tmp_path / "b", policy, rows, events, as_of=datetime(2021, 3, 1, 12, tzinfo=UTC))
    assert (on_28_february, on_1_march) == ({"1": RULE_AGE}, {"1": RECIPIENT})


@pytest.mark.parametrize(("unknown_age", "expected"), [("include", RECIPIENT), ("exclude", RULE_AGE)])
def test_an_unknown_birth_date_is_decided_by_unknown_age(tmp_path, unknown_age, expected):
    policy = make_policy(tmp_path / "policy", unknown_age=unknown_age)
    rows = [contact("1", birth_date=""), contact("2", birth_date="  ")]
    events = consented("1") + consented("2")
    assert decide(tmp_path, policy, rows, events) == {"1": expected, "2": expected}


# ---- rule 5: one message per email -----------------------------------------------------------


def test_of_contacts_sharing_an_email_the_latest_updated_at_receives(tmp_path, policy):
    rows = [
        contact("5", email="Same@example.test", updated_at="2026-03-01T00:00:00Z"),
        contact("4", email=" same@example.test ", updated_at="2026-03-02T00:00:00Z"),
    ]
    decisions = decide(tmp_path, policy, rows, consented("4") + consented("5"))
    assert decisions == {"4": RECIPIENT, "5": RULE_DUPLICATE_EMAIL}


def test_on_equal_updated_at_the_higher_contact_id_as_an_integer_receives(tmp_path, policy):
    rows = [
        contact("9", email="same@example.test", updated_at="2026-03-01T00:00:00Z"),
        contact("10", email="SAME@example.test", updated_at="2026-03-01T01:00:00+01:00"),
    ]
    decisions = decide(tmp_path, policy, rows, consented("9") + consented("10"))
    assert decisions == {"10": RECIPIENT, "9": RULE_DUPLICATE_EMAIL}


def test_non_numeric_contact_ids_compare_as_strings(tmp_path, policy):
    rows = [contact("C-9", email="same@example.test"), contact("C-10", email="same@example.test")]
    decisions = decide(tmp_path, policy, rows, consented("C-9") + consented("C-10"))
    assert decisions == {"C-9": RECIPIENT, "C-10": RULE_DUPLICATE_EMAIL}


def test_compare_contact_ids():
    assert compare_contact_ids("10", "9") == 1
    assert compare_contact_ids("007", "7") == 0
    assert compare_contact_ids("C-10", "C-9") == -1
    assert compare_contact_ids("10", "9a") == -1


def test_an_ineligible_newer_duplicate_does_not_take_the_message_from_an_eligible_one(tmp_path, policy):
    rows = [
        contact("1", email="same@example.test", updated_at="2026-01-01T00:00:00Z"),
        contact("2", email="same@example.test", updated_at="2026-09-01T00:00:00Z", birth_date="2015-01-01"),
    ]
    decisions = decide(tmp_path, policy, rows, consented("1") + consented("2"))
    assert decisions == {"1": RECIPIENT, "2": RULE_AGE}


# ---- the counts ------------------------------------------------------------------------------


def test_excluded_by_reason_counts_the_first_failing_rule(tmp_path, policy):
    rows = [
        contact("1"),
        contact("2", birth_date="2015-01-01"),  # suppressed and a minor and unconsented: rule 2 first
        contact("3", birth_date="2015-01-01"),  # a minor: rule 4
        contact("4"),  # no consent
        contact("5", email="person.1@example.test", updated_at="2025-06-01T00:00:00Z"),
        contact("6", email="bad"),
    ]
    events = consented("1") + consented("3") + consented("5")
    crm = write_export(tmp_path / "crm", rows, events, [request("person.2@example.test", "erasure")])
    assert excluded_by_reason(crm, policy, CAMPAIGN, AS_OF) == {
        RULE_INVALID_ROW: 1,
        RULE_DSR: 1,
        RULE_CONSENT: 1,
        RULE_AGE: 1,
        RULE_DUPLICATE_EMAIL: 1,
    }
    assert expected_recipients(crm, policy, CAMPAIGN, AS_OF) == {"1"}
