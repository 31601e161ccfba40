"""The last-moment check: the rules re-read from raw data, plus the suppression list, which wins.

It is a deliberately independent twin of the dbt SQL's rules 2 and 3; the last test holds the two
(and the reference rules of tests/support) against each other on the hand-written external export.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from governed_marketing.consent import still_eligible
from governed_marketing.policy import load_policy
from governed_marketing.privacy.suppression import suppress
from governed_marketing.warehouse import connect

from tests.conftest import PROJECT_ROOT
from tests.support.built_warehouse import build_home
from tests.support.reference_eligibility import RULE_CONSENT, RULE_DSR, RULE_INVALID_ROW, evaluate

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


EXTERNAL_CRM = PROJECT_ROOT / "tests" / "fixtures" / "external_crm"
EXTERNAL_AS_OF = "2026-11-15T12:00:00"  # as in its EXPECTED.md
# Hard cases of rules 2 and 3 in that export (EXPECTED.md): same-instant withdraw and grant (1004), a grant
# exactly 730 days old (1006) and one a day older (1007), a re-grant (1005), an objection (1017), an
# erasure with a differently written email (1018), a restriction in force (1019) and one lifted (1020).
HARD_CASES = {"1004": False, "1005": True, "1006": True, "1007": False, "1017": False, "1018": False, "1019": False}
HARD_CASES |= {"1020": True, "1021": True}


@pytest.fixture(scope="module")
def external_build(tmp_path_factory) -> Path:
    """The external export ingested and its dbt models built (a real dbt build on DuckDB)."""
    return build_home(tmp_path_factory.mktemp("twins"), as_of=EXTERNAL_AS_OF, export=EXTERNAL_CRM)


@pytest.mark.dbt
def test_the_recheck_and_the_dbt_rules_agree_on_consent_and_requests(external_build, tmp_path):
    """Offered every valid contact (not only the mart's recipients), the re-check passes exactly those
    the dbt SQL does not exclude by rule 2 (a request) or rule 3 (consent), and the reference agrees."""
    policy = load_policy()
    as_of = datetime.fromisoformat(EXTERNAL_AS_OF)
    shutil.copy(external_build / "warehouse.duckdb", tmp_path / "w.duckdb")
    conn = connect(tmp_path / "w.duckdb")
    try:
        flags = conn.execute(
            "select contact_id, is_erasure_requested or is_objecting or is_restricted"
            " or lacks_consent or has_expired_consent"
            " from intermediate.int_campaign_eligibility where campaign_id = 'spring_newsletter'"
        ).fetchall()
        mart = {
            row[0]
            for row in conn.execute(
                "select contact_id from marts.campaign_recipients where campaign_id = 'spring_newsletter'"
            ).fetchall()
        }
        conn.execute("delete from marts.campaign_recipients")
        conn.execute(
            "insert into marts.campaign_recipients (campaign_id, recipient_pseudonym, contact_id)"
            " select distinct 'spring_newsletter', contact_id, contact_id from raw.crm_contacts"
        )
        rechecked = still_eligible(
            conn, policy=policy, campaign_id="spring_newsletter", as_of=as_of, honour_suppression_list=False
        )
    finally:
        conn.close()
    by_sql = {contact_id for contact_id, excluded in flags if not excluded}
    reference = evaluate(EXTERNAL_CRM, policy, "spring_newsletter", as_of)
    failing_2_or_3 = (RULE_INVALID_ROW, RULE_DSR, RULE_CONSENT)
    by_reference = {c for c, rule in reference.decisions.items() if rule not in failing_2_or_3}
    assert rechecked == by_sql == by_reference
    assert mart <= rechecked  # at the build's own as-of the re-check drops no recipient
    assert {c: c in rechecked for c in HARD_CASES} == HARD_CASES
