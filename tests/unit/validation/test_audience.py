"""The campaign-audience gate: passes on a minimized, eligible audience; each expectation fails on its violation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pandas as pd
import pytest
from governed_marketing.validation.audience import audience_gate, audience_gate_frame

from expectations.campaign_audience import STILL_ELIGIBLE
from tests.unit.validation.conftest import CAMPAIGN, covered, failed, stored

SECRET = "ann.secret@example-crm.test"


def audience() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "campaign_id": [CAMPAIGN] * 3,
            "recipient_pseudonym": ["a" * 64, "b" * 64, "c" * 64],
            "cohort_id": ["c1", "c1", "c2"],
            "language": ["de", "de", "fr"],
            "country": ["DE", "DE", "FR"],
            "lifecycle_stage": ["customer", "lead", "subscriber"],
            "interests": ["garden;books", "garden", None],
            "last_purchase_category": ["books", None, "shoes"],
            STILL_ELIGIBLE: [True, True, True],
        }
    )


def _set(column: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[1, column] = value
        return frame

    return mutate


VIOLATIONS: dict[tuple[str, str | None], Callable[[pd.DataFrame], pd.DataFrame]] = {
    ("expect_table_columns_to_match_set", None): lambda f: f.assign(email=SECRET),
    ("expect_column_values_to_not_be_null", "recipient_pseudonym"): _set("recipient_pseudonym", None),
    ("expect_column_values_to_match_regex", "recipient_pseudonym"): _set("recipient_pseudonym", SECRET),
    ("expect_column_values_to_be_unique", "recipient_pseudonym"): _set("recipient_pseudonym", "a" * 64),
    ("expect_column_values_to_not_be_null", "cohort_id"): _set("cohort_id", None),
    ("expect_column_values_to_be_in_set", "campaign_id"): _set("campaign_id", "another_campaign"),
    ("expect_column_values_to_be_in_set", STILL_ELIGIBLE): _set(STILL_ELIGIBLE, False),
    ("expect_column_values_to_be_in_set", "lifecycle_stage"): _set("lifecycle_stage", "vip"),
    ("expect_column_values_to_match_regex", "language"): _set("language", "German"),
    ("expect_column_values_to_match_regex", "country"): _set("country", "Germany"),
}


def test_a_minimized_eligible_audience_passes(policy):
    result = audience_gate(audience(), policy=policy, campaign_id=CAMPAIGN)
    assert result.success, result.one_line()


def test_every_expectation_has_a_seeded_violation(policy):
    result = audience_gate(audience(), policy=policy, campaign_id=CAMPAIGN)
    assert covered(result) == set(VIOLATIONS)


@pytest.mark.parametrize("expectation", list(VIOLATIONS), ids=lambda e: f"{e[0]}[{e[1]}]")
def test_each_seeded_violation_fails_its_expectation_and_stores_no_value(policy, expectation):
    result = audience_gate(VIOLATIONS[expectation](audience()), policy=policy, campaign_id=CAMPAIGN)
    assert not result.success
    assert expectation in failed(result)
    assert SECRET not in stored(result)
    assert "Germany" not in stored(result)  # country is quasi: counts only


def test_a_column_the_policy_no_longer_allows_fails_the_column_set(policy):
    narrowed = policy.model_copy(
        update={
            "purposes": {
                "ai_personalized_email": policy.purposes["ai_personalized_email"].model_copy(
                    update={"fields": ["language", "country", "lifecycle_stage", "last_purchase_category"]}
                )
            }
        }
    )
    result = audience_gate(audience(), policy=narrowed, campaign_id=CAMPAIGN)
    assert failed(result) == {("expect_table_columns_to_match_set", None)}


# ---- the independent re-check against the raw data ------------------------------------------------


@pytest.fixture
def warehouse(tmp_path):
    """Raw CRM tables and the two marts the re-check reads: three recipients with both consents."""
    from governed_marketing.warehouse import connect

    conn = connect(tmp_path / "w.duckdb")
    conn.execute("create schema marts")
    conn.execute(
        "create table marts.campaign_recipients (campaign_id varchar, recipient_pseudonym varchar, contact_id varchar)"
    )
    conn.execute("create table marts.audience_funnel (campaign_id varchar, as_of timestamp)")
    conn.execute("insert into marts.audience_funnel values (?, ?)", [CAMPAIGN, datetime(2026, 11, 15, 12)])
    for n, pseudonym in enumerate(audience()["recipient_pseudonym"], start=1):
        conn.execute(
            "insert into raw.crm_contacts (contact_id, email, email_normalized, updated_at, load_id) "
            "values (?, ?, ?, ?, 'l1')",
            [f"c{n}", f"p{n}@example.com", f"p{n}@example.com", datetime(2026, 1, 1)],
        )
        conn.execute("insert into marts.campaign_recipients values (?, ?, ?)", [CAMPAIGN, pseudonym, f"c{n}"])
        for purpose in ("email_marketing", "ai_personalization"):
            conn.execute(
                "insert into raw.crm_consent_events values (?, ?, ?, 'grant', 'web', 'v1', ?, 'l1')",
                [f"e{n}{purpose}", f"c{n}", purpose, datetime(2026, 3, 1)],
            )
    yield conn
    conn.close()


def _withdraw(conn, contact_id: str, when) -> None:
    conn.execute(
        "insert into raw.crm_consent_events values (?, ?, 'email_marketing', 'withdraw', 'web', 'v1', ?, 'l1')",
        [f"w-{contact_id}", contact_id, when],
    )


def test_the_recheck_passes_when_the_raw_data_agrees_with_the_mart(policy, warehouse):
    raw = audience().drop(columns=[STILL_ELIGIBLE])
    frame = audience_gate_frame(warehouse, raw, policy=policy, campaign_id=CAMPAIGN, as_of=datetime(2026, 11, 20))
    assert frame[STILL_ELIGIBLE].all()
    assert audience_gate(frame, policy=policy, campaign_id=CAMPAIGN).success


def test_a_recipient_the_raw_data_shows_withdrawn_at_build_time_fails_the_gate(policy, warehouse):
    _withdraw(warehouse, "c2", datetime(2026, 10, 1))
    raw = audience().drop(columns=[STILL_ELIGIBLE])
    frame = audience_gate_frame(warehouse, raw, policy=policy, campaign_id=CAMPAIGN, as_of=datetime(2026, 11, 20))
    result = audience_gate(frame, policy=policy, campaign_id=CAMPAIGN)
    assert failed(result) == {("expect_column_values_to_be_in_set", STILL_ELIGIBLE)}
    assert "1 rows" in result.one_line()


def test_a_withdrawal_after_the_build_is_left_to_the_last_moment_check(policy, warehouse):
    """Checked at the mart's as-of time: a later withdrawal is dropped and counted, not a gate failure."""
    _withdraw(warehouse, "c2", datetime(2026, 11, 18))
    raw = audience().drop(columns=[STILL_ELIGIBLE])
    frame = audience_gate_frame(warehouse, raw, policy=policy, campaign_id=CAMPAIGN, as_of=datetime(2026, 11, 20))
    assert audience_gate(frame, policy=policy, campaign_id=CAMPAIGN).success
