"""The campaign-audience gate inside Postgres: GX's SQL datasource validates a query, not a frame.

Own module, so its own fresh database: raw CRM tables and the marts the gate and its independent
re-check read, three recipients with both consents. Each test plants its violation in
marts.campaign_audience (or the raw consent events) and removes it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime

import pytest
from governed_marketing.validation import record_gate
from governed_marketing.validation.audience import audience_gate, audience_gate_frame, audience_gate_in_database
from governed_marketing.warehouse.postgres import PostgresResult, PostgresWarehouse

from expectations.campaign_audience import STILL_ELIGIBLE
from tests.postgres.conftest import PgServer
from tests.unit.validation.conftest import CAMPAIGN, REPO, failed, stored
from tests.unit.validation.test_audience import SECRET, audience

pytestmark = pytest.mark.postgres

AS_OF = datetime(2026, 11, 20)
RUN_ID = "manual__2026-11-20T00:00:00+00:00"  # Airflow-shaped: colons and a plus inside the query


@pytest.fixture(scope="module")
def policy():
    from governed_marketing.policy import load_policy

    return load_policy(REPO / "governance.yml")


@pytest.fixture(scope="module")
def conn(pg_server: PgServer, pg_database: str) -> Iterator[PostgresWarehouse]:
    from governed_marketing.warehouse import schema

    pg = PostgresWarehouse(pg_server.connect(pg_database))
    schema.ensure(pg)
    pg.execute("create schema marts")
    pg.execute(
        "create table marts.campaign_recipients (campaign_id varchar, recipient_pseudonym varchar, contact_id varchar)"
    )
    pg.execute("create table marts.audience_funnel (campaign_id varchar, as_of timestamp)")
    pg.execute("insert into marts.audience_funnel values (?, ?)", [CAMPAIGN, datetime(2026, 11, 15, 12)])
    pg.execute(
        "create table marts.campaign_audience (campaign_id varchar, recipient_pseudonym varchar, cohort_id varchar,"
        " language varchar, country varchar, lifecycle_stage varchar, interests varchar,"
        " last_purchase_category varchar)"
    )
    rows = audience().drop(columns=[STILL_ELIGIBLE])
    for row in rows.itertuples(index=False):
        pg.execute("insert into marts.campaign_audience values (?, ?, ?, ?, ?, ?, ?, ?)", list(row))
    for n, pseudonym in enumerate(rows["recipient_pseudonym"], start=1):
        pg.execute(
            "insert into raw.crm_contacts (contact_id, email, email_normalized, updated_at, load_id) "
            "values (?, ?, ?, ?, 'l1')",
            [f"c{n}", f"p{n}@example.com", f"p{n}@example.com", datetime(2026, 1, 1)],
        )
        pg.execute("insert into marts.campaign_recipients values (?, ?, ?)", [CAMPAIGN, pseudonym, f"c{n}"])
        for purpose in ("email_marketing", "ai_personalization"):
            pg.execute(
                "insert into raw.crm_consent_events values (?, ?, ?, 'grant', 'web', 'v1', ?, 'l1')",
                [f"e{n}{purpose}", f"c{n}", purpose, datetime(2026, 3, 1)],
            )
    yield pg
    pg.close()


@pytest.fixture
def no_frames(monkeypatch):
    """No pandas frame of warehouse rows may be built: the gate must run in the database."""

    def refuse(self):
        raise AssertionError("a frame was read from Postgres on the in-database gate path")

    monkeypatch.setattr(PostgresResult, "df", refuse)


def in_database(conn, policy):
    return audience_gate_in_database(conn, policy=policy, campaign_id=CAMPAIGN, as_of=AS_OF, run_id=RUN_ID)


def frame_based(conn, policy):
    """The frame path (what DuckDB runs) on the same rows: the reference for the one-line reason."""
    rows = conn.execute(
        "select * from marts.campaign_audience where campaign_id = ? order by recipient_pseudonym", [CAMPAIGN]
    ).df()
    frame = audience_gate_frame(conn, rows, policy=policy, campaign_id=CAMPAIGN, as_of=AS_OF)
    return audience_gate(frame, policy=policy, campaign_id=CAMPAIGN)


def recheck_rows_left(conn) -> int:
    return conn.execute("select count(*) from ops.audience_recheck").fetchone()[0]


def test_the_gate_runs_inside_postgres_and_passes(conn, policy, no_frames):
    result = in_database(conn, policy)
    assert result.success, result.one_line()
    meta = result.validation["meta"]
    assert meta["gmp"]["execution"] == {"datasource": "postgres", "engine": "SqlAlchemyExecutionEngine"}
    assert meta["active_batch_definition"]["datasource_name"] == "campaign_audience_postgres"
    assert "marts.campaign_audience" in meta["batch_spec"]["query"]
    assert result.rows == 3 and len(result.outcomes) == 10
    assert recheck_rows_left(conn) == 0  # the re-check's pseudonyms are gone after the gate


def test_the_stored_result_has_the_frame_paths_shape(conn, policy):
    sql_result = in_database(conn, policy)
    frame_result = frame_based(conn, policy)
    assert sql_result.one_line() == frame_result.one_line()
    assert [(o.expectation, o.column, o.success, o.result_format) for o in sql_result.outcomes] == [
        (o.expectation, o.column, o.success, o.result_format) for o in frame_result.outcomes
    ]
    # never more than the frame path stores (pandas adds row positions, SQL has none)
    for sql_item, frame_item in zip(sql_result.validation["results"], frame_result.validation["results"], strict=True):
        assert set(sql_item["result"]) <= set(frame_item["result"])
        assert set(frame_item["result"]) - set(sql_item["result"]) <= {"partial_unexpected_index_list"}


@pytest.mark.parametrize(
    ("plant", "expectation"),
    [
        (  # a duplicated pseudonym
            "insert into marts.campaign_audience select * from marts.campaign_audience"
            " where recipient_pseudonym = repeat('a', 64)",
            ("expect_column_values_to_be_unique", "recipient_pseudonym"),
        ),
        (  # a non-hex "pseudonym": an e-mail address where a pseudonym should be
            f"insert into marts.campaign_audience values ('{CAMPAIGN}', '{SECRET}', 'c1', 'de', 'DE', 'lead',"
            " 'Germany', null)",
            ("expect_column_values_to_match_regex", "recipient_pseudonym"),
        ),
    ],
    ids=["duplicated-pseudonym", "non-hex-pseudonym"],
)
def test_a_planted_bad_row_fails_closed_with_the_frame_paths_reason_and_stores_no_value(
    conn, policy, monkeypatch, plant, expectation
):
    conn.execute(plant)
    try:
        reference = frame_based(conn, policy)
        with monkeypatch.context() as patched:
            patched.setattr(PostgresResult, "df", lambda self: pytest.fail("frame built on the SQL path"))
            result = in_database(conn, policy)
        record_gate(conn, RUN_ID, result)
        (text,) = conn.execute(
            "select result_json from ops.gate_results where run_id = ? order by validated_at desc limit 1", [RUN_ID]
        ).fetchone()
    finally:
        conn.execute("delete from marts.campaign_audience where recipient_pseudonym = ?", [SECRET])
        conn.execute(
            "delete from marts.campaign_audience where ctid in (select ctid from (select ctid, row_number() over"
            " (partition by recipient_pseudonym order by ctid) as n from marts.campaign_audience) d where n > 1)"
        )
    assert not result.success
    assert expectation in failed(result)
    assert result.one_line() == reference.one_line()
    assert result.validation["meta"]["gmp"]["execution"]["datasource"] == "postgres"
    for evidence in (stored(result), text):
        assert SECRET not in evidence
        assert "Germany" not in evidence
    # counts only for the personal column: no sample of its values at all
    personal = [r for r in json.loads(text)["validation"]["results"] if r["expectation_config"]["kwargs"].get("column")
                == "recipient_pseudonym"]  # fmt: skip
    assert personal and all("partial_unexpected_list" not in r["result"] for r in personal)
    assert recheck_rows_left(conn) == 0


def test_a_recipient_the_raw_data_shows_withdrawn_fails_the_eligibility_recheck_in_sql(conn, policy):
    conn.execute(
        "insert into raw.crm_consent_events values ('w-c2', 'c2', 'email_marketing', 'withdraw', 'web', 'v1', ?, 'l1')",
        [datetime(2026, 10, 1)],
    )
    try:
        result = in_database(conn, policy)
        reference = frame_based(conn, policy)
    finally:
        conn.execute("delete from raw.crm_consent_events where event_id = 'w-c2'")
    assert failed(result) == {("expect_column_values_to_be_in_set", STILL_ELIGIBLE)}
    assert result.one_line() == reference.one_line()
    assert "1 rows" in result.one_line()
