"""The last-moment check: the rules re-read from raw data, plus the suppression list, which wins."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from governed_marketing.consent import still_eligible
from governed_marketing.policy import load_policy
from governed_marketing.privacy.suppression import suppress
from governed_marketing.warehouse import connect

AS_OF = datetime(2026, 11, 15, 12, 0, 0)
KEY = b"unit-test-key-0123456789abcdef0123"


@pytest.fixture
def conn(tmp_path: Path):
    connection = connect(tmp_path / "w.duckdb")
    connection.execute("create schema if not exists marts")
    connection.execute(
        "create table marts.campaign_recipients (campaign_id varchar, recipient_pseudonym varchar, contact_id varchar)"
    )
    for n, email in ((1, "ann@example-crm.test"), (2, "bob@example-crm.test")):
        connection.execute(
            "insert into raw.crm_contacts (contact_id, email, email_normalized, updated_at, load_id) "
            "values (?, ?, ?, ?, 'l')",
            [str(n), email, email, AS_OF],
        )
        connection.execute(
            "insert into marts.campaign_recipients values ('spring_newsletter', ?, ?)", [f"p{n}", str(n)]
        )
        for i, consent in enumerate(("email_marketing", "ai_personalization")):
            connection.execute(
                "insert into raw.crm_consent_events values (?, ?, ?, 'grant', 'web', 'v1', ?, 'l')",
                [f"e{n}{i}", str(n), consent, datetime(2026, 6, 1)],
            )
    yield connection
    connection.close()


def test_both_recipients_with_fresh_consent_are_still_eligible(conn):
    policy = load_policy()
    assert still_eligible(conn, policy=policy, campaign_id="spring_newsletter", as_of=AS_OF) == {"p1", "p2"}


def test_a_person_on_the_suppression_list_is_dropped_whatever_the_as_of(conn, monkeypatch):
    monkeypatch.setenv("GMP_PSEUDONYM_KEY", KEY.decode())
    from governed_marketing.settings import reset_settings

    reset_settings()
    try:
        suppress(conn, key=KEY, email="bob@example-crm.test", contact_ids=["2"], reason="objection", request_id="R1")
        policy = load_policy()
        assert still_eligible(conn, policy=policy, campaign_id="spring_newsletter", as_of=AS_OF) == {"p1"}
        rules_only = still_eligible(
            conn, policy=policy, campaign_id="spring_newsletter", as_of=AS_OF, honour_suppression_list=False
        )
        assert rules_only == {"p1", "p2"}
    finally:
        reset_settings()


def test_a_withdrawal_loaded_after_the_build_is_seen(conn):
    conn.execute(
        "insert into raw.crm_consent_events values ('w1', '1', 'email_marketing', 'withdraw', 'web', 'v1', ?, 'l2')",
        [datetime(2026, 11, 1)],
    )
    policy = load_policy()
    assert still_eligible(conn, policy=policy, campaign_id="spring_newsletter", as_of=AS_OF) == {"p2"}


@pytest.mark.parametrize(
    ("request_type", "details", "still"),
    [
        ("erasure", "{}", {"p1"}),
        ("objection", "{}", {"p1"}),
        ("restriction", "{}", {"p1"}),
        ("restriction", '{"lifted_at": "2026-12-03T09:00:00Z"}', {"p1", "p2"}),  # lifted: in force neither then nor now
    ],
)
def test_a_request_received_after_the_as_of_suppresses_in_a_back_dated_run(conn, request_type, details, still):
    conn.execute(
        "insert into raw.crm_dsr_requests values ('R9', 'bob@example-crm.test', ?, ?, ?, 'gmp_cli', 'gmp_cli')",
        [request_type, details, datetime(2026, 12, 1, 9, 0, 0)],
    )
    policy = load_policy()
    assert still_eligible(conn, policy=policy, campaign_id="spring_newsletter", as_of=AS_OF) == still
