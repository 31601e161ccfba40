"""The whole pipeline on Postgres (GMP_WAREHOUSE=postgres): `gmp run`, then erasure, then the purge.

Own module, so its own fresh database. One `gmp run` in a subprocess, as a user runs it (tests/e2e's
run_gmp), on a small sample export with offline templates: ingest into Postgres, privacy requests,
dbt build through Cosmos with the postgres target, gates, ledger and outbox. Then a data-subject
erasure through `gmp dsr`, and the retention purge, both on the same database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from governed_marketing.policy import load_policy
from governed_marketing.pseudonym import pseudonym
from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF, write_sample_export
from psycopg2 import sql

from tests.e2e.conftest import TEST_KEY, Run, run_gmp
from tests.postgres.conftest import PgServer
from tests.support.reference_eligibility import expected_recipients

pytestmark = pytest.mark.postgres

CONTACTS = 300
SEED = 7
AS_OF = SAMPLE_AS_OF.replace(tzinfo=None).isoformat()


@dataclass
class PgRun:
    run: Run
    crm: Path
    env: dict[str, str]
    database: str

    def gmp(self, *args: str) -> Run:
        return run_gmp(self.run.home, *args, extra_env=self.env)


@pytest.fixture(scope="module")
def pg_run(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer, pg_database: str) -> Iterator[PgRun]:
    base = tmp_path_factory.mktemp("gmp_on_postgres")
    crm = base / "crm"
    write_sample_export(crm, contacts=CONTACTS, seed=SEED)
    env = {"GMP_WAREHOUSE": "postgres", "GMP_LLM_PROVIDER": "offline", **pg_server.env(pg_database)}
    run = run_gmp(base / "home", "run", "--crm", str(crm), "--as-of", AS_OF, extra_env=env, timeout=900)
    assert run.ok, run.result.stdout[-3000:] + run.result.stderr[-3000:]
    yield PgRun(run, crm, env, pg_database)


def _all_text_cells(conn) -> dict[str, set[tuple[str, str]]]:
    """Every table of the database (all schemas but the system's) as its set of (column, value)."""
    with conn.cursor() as cur:
        cur.execute(
            "select table_schema, table_name from information_schema.tables where table_type = 'BASE TABLE'"
            " and table_schema not in ('pg_catalog', 'information_schema')"
        )
        tables = cur.fetchall()
        cells: dict[str, set[str]] = {}
        for schema, table in tables:
            cur.execute(sql.SQL("select row_to_json(t)::text from {} t").format(sql.Identifier(schema, table)))
            cells[f"{schema}.{table}"] = {
                (column, str(value).strip().lower())
                for (row,) in cur.fetchall()
                for column, value in json.loads(row).items()
                if value is not None
            }
    return cells


def _holding(cells: dict[str, set[tuple[str, str]]], *, substrings: set[str], ids: set[str]) -> dict[str, list[str]]:
    """Tables with any cell containing one of `substrings`, or a contact_id column holding one of `ids`."""
    found = {}
    for table, values in cells.items():
        texts = {v for _, v in values}
        contact_ids = {v for c, v in values if c == "contact_id"}
        hits = sorted({n for n in substrings if any(n in v for v in texts)} | (ids & contact_ids))
        if hits:
            found[table] = hits
    return found


def _filenodes(conn) -> dict[str, int]:
    with conn.cursor() as cur:
        cur.execute(
            "select c.oid::regclass::text, pg_relation_filenode(c.oid) from pg_class c"
            " join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r'"
            " and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
        )
        return dict(cur.fetchall())


def test_gmp_run_on_postgres_sends_exactly_to_those_the_eligibility_rules_allow(pg_run: PgRun) -> None:
    expected = expected_recipients(pg_run.crm, load_policy(), "spring_newsletter", SAMPLE_AS_OF)
    assert expected, "the sample export should have recipients"
    assert pg_run.run.recipients("spring_newsletter") == expected


def test_gmp_run_on_postgres_keeps_everything_in_postgres(pg_run: PgRun, pg_server: PgServer) -> None:
    assert not (pg_run.run.home / "warehouse.duckdb").exists(), "a DuckDB warehouse was opened beside Postgres"
    conn = pg_server.connect(pg_run.database)
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) from raw.crm_contacts")
            assert cur.fetchone()[0] > 0
            cur.execute("select count(*) from marts.campaign_recipients")
            assert cur.fetchone()[0] == len(pg_run.run.recipients("spring_newsletter"))
            cur.execute("select count(*) from ops.generation_ledger where status = 'succeeded'")
            assert cur.fetchone()[0] > 0
            cur.execute("select count(*) from ops.gate_results where not success")
            assert cur.fetchone()[0] == 0
            cur.execute("select distinct step from ops.pipeline_steps")
            assert {"ingest", "generate"} <= {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


def test_gmp_run_on_postgres_runs_the_audience_gate_inside_the_database(pg_run: PgRun, pg_server: PgServer) -> None:
    """GX's SQL datasource validated the audience query in Postgres; its re-check rows are gone."""
    conn = pg_server.connect(pg_run.database)
    try:
        with conn.cursor() as cur:
            cur.execute("select result_json from ops.gate_results where gate = 'campaign_audience'")
            results = [json.loads(row[0]) for row in cur.fetchall()]
            cur.execute("select count(*) from ops.audience_recheck")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
    assert results
    for result in results:
        assert result["success"]
        meta = result["validation"]["meta"]
        assert meta["gmp"]["execution"] == {"datasource": "postgres", "engine": "SqlAlchemyExecutionEngine"}
        assert "marts.campaign_audience" in meta["batch_spec"]["query"]


def test_erasure_on_postgres_leaves_no_trace_in_any_table_and_rewrites_the_files(
    pg_run: PgRun, pg_server: PgServer
) -> None:
    conn = pg_server.connect(pg_run.database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select c.email_normalized, c.contact_id from marts.campaign_recipients r"
                " join raw.crm_contacts c using (contact_id) order by c.contact_id limit 1"
            )
            email, contact_id = cur.fetchone()
            cur.execute("select contact_id from raw.crm_contacts where email_normalized = %s", [email])
            contact_ids = {row[0] for row in cur.fetchall()}
        before = _all_text_cells(conn)
        files_before = _filenodes(conn)
    finally:
        conn.close()
    person = pseudonym(TEST_KEY.encode(), email)
    ids = {c.lower() for c in contact_ids}
    held = _holding(before, substrings={email, person}, ids=ids)
    assert any(person in hits for hits in held.values()), "the marts hold the pseudonym"

    submitted = pg_run.gmp("dsr", "submit", "--type", "erasure", "--email", email.upper())
    assert submitted.ok, submitted.result.stdout + submitted.result.stderr
    processed = pg_run.gmp("dsr", "process")
    assert processed.ok, processed.result.stdout + processed.result.stderr

    conn = pg_server.connect(pg_run.database)
    try:
        after = _all_text_cells(conn)
        files_after = _filenodes(conn)
        with conn.cursor() as cur:
            cur.execute("select status from ops.dsr_requests where request_type = 'erasure' order by received_at desc")
            assert cur.fetchone()[0] == "done"
    finally:
        conn.close()
    assert _holding(after, substrings={email, person}, ids=ids) == {}, "the erased person is still here"
    receipts = list((pg_run.run.home / "receipts").glob("*.json"))
    assert receipts and all(json.loads(p.read_text())["verification"]["verified"] for p in receipts)
    # VACUUM FULL ran: every table the person was deleted from was rewritten into a new file.
    touched = sorted(held)
    assert "raw.crm_contacts" in touched
    for table in touched:
        assert files_after[table] != files_before[table], f"{table} was not rewritten (VACUUM FULL)"


def test_purge_on_postgres_removes_what_retention_no_longer_allows(pg_run: PgRun, pg_server: PgServer) -> None:
    from governed_marketing.privacy.retention import purge
    from governed_marketing.settings import reset_settings

    later = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=120)  # past raw_crm, content, outbox periods
    with pytest.MonkeyPatch.context() as env:
        for name, value in {**pg_run.env, "GMP_HOME": str(pg_run.run.home), "GMP_PSEUDONYM_KEY": TEST_KEY}.items():
            env.setenv(name, value)
        reset_settings()
        try:
            conn = pg_server.connect(pg_run.database)
            try:
                files_before = _filenodes(conn)
            finally:
                conn.close()
            result = purge(now=later)
        finally:
            reset_settings()
    counts = result.counts()
    assert counts, counts
    conn = pg_server.connect(pg_run.database)
    try:
        with conn.cursor() as cur:
            for table in ("raw.crm_contacts", "raw.crm_consent_events", "raw.crm_activity", "ops.generated_content"):
                cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(*table.split("."))))
                assert cur.fetchone()[0] == 0, f"{table} still holds rows past retention"
            cur.execute("select count(*) from ops.retention_runs")
            assert cur.fetchone()[0] > 0
        files_after = _filenodes(conn)
    finally:
        conn.close()
    assert files_after["raw.crm_contacts"] != files_before["raw.crm_contacts"], "no VACUUM FULL after the purge"
    assert not list((pg_run.run.home / "landing").glob("load_*")), "the landing archive outlived retention"
    assert not list((pg_run.run.home / "outbox").rglob("*.jsonl")), "outbox files outlived retention"
