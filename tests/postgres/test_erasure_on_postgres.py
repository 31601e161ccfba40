"""Erasure on the Postgres warehouse: every table declaring meta.subject_column, then VACUUM FULL.

Own module, so its own fresh database: a small sample export ingested into DuckDB, mirrored into
Postgres, `dbt run --target postgres`, then three recipients erased by email and contact id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from governed_marketing import warehouse_postgres
from governed_marketing.crm.ingest import ingest_export
from governed_marketing.policy import load_policy
from governed_marketing.pseudonym import pseudonym
from governed_marketing.sample_data.crm_export import write_sample_export
from governed_marketing.settings import get_settings, reset_settings
from governed_marketing.warehouse import connect
from psycopg2 import sql

from tests.postgres.conftest import PgServer

pytestmark = pytest.mark.postgres

DBT = Path(__file__).resolve().parents[2] / "dbt_project"
AS_OF = "2026-11-15T12:00:00"
TEST_KEY = "gmp-postgres-erasure-key-51f0a9c3e7d2b864"


@dataclass
class Built:
    manifest: Path
    database: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer, pg_database: str) -> Iterator[Built]:
    from dbt.cli.main import dbtRunner

    run_dir = tmp_path_factory.mktemp("postgres_erasure")
    home = run_dir / "gmp_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        env.setenv("GMP_PSEUDONYM_KEY", TEST_KEY)
        env.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        env.delenv("DBT_TARGET", raising=False)
        for name, value in pg_server.env(pg_database).items():
            env.setenv(name, value)
        reset_settings()
        try:
            write_sample_export(run_dir / "crm", contacts=300, seed=7)
            conn = connect(home / "warehouse.duckdb")
            try:
                ingest_export(run_dir / "crm", conn=conn, policy=load_policy(), landing_root=home / "landing")
            finally:
                conn.close()
            warehouse_postgres.prepare(get_settings(), duckdb_path=home / "warehouse.duckdb")
            result = dbtRunner().invoke(
                ["run", "--project-dir", str(DBT), "--profiles-dir", str(DBT), "--target", "postgres",
                 "--target-path", str(run_dir / "target"), "--log-path", str(run_dir / "logs"),
                 "--vars", json.dumps({"as_of": AS_OF})]
            )  # fmt: skip
            assert result.success, result.exception or [str(r.message) for r in result.result.results]
            yield Built(run_dir / "target" / "manifest.json", pg_database)
        finally:
            reset_settings()


def _count(cur, relation: warehouse_postgres.SubjectTable, emails: list[str], contact_ids: list[str]) -> int:
    pseudonyms = [pseudonym(TEST_KEY.encode(), e) for e in emails]
    column = sql.Identifier(relation.subject_column)
    needle = {
        "email": sql.SQL("lower(trim({}::text)) = any(%s)").format(column),
        "contact_id": sql.SQL("trim({}::text) = any(%s)").format(column),
        "pseudonym": sql.SQL("{}::text = any(%s)").format(column),
    }[relation.kind]
    values = {"email": emails, "contact_id": contact_ids, "pseudonym": pseudonyms}[relation.kind]
    query = sql.SQL("select count(*) from {} where ").format(sql.Identifier(relation.schema, relation.table)) + needle
    params: list = [values]
    if relation.has_contact_id and relation.kind != "contact_id":
        query += sql.SQL(" or trim(contact_id::text) = any(%s)")
        params.append(contact_ids)
    cur.execute(query, params)
    return cur.fetchone()[0]


def test_erasure_deletes_every_subject_table_and_rewrites_the_files(built: Built, pg_server: PgServer) -> None:
    conn = pg_server.connect(built.database, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select p.email, p.contact_id from marts.campaign_recipients r"
                " join intermediate.int_contacts_profiled p using (contact_id) order by p.contact_id limit 3"
            )
            people = cur.fetchall()
        conn.commit()
        assert len(people) == 3
        emails = [email for email, _ in people]
        contact_ids = [contact_id for _, contact_id in people]

        relations, notes = warehouse_postgres.subject_relations(conn, built.manifest)
        names = {f"{r.schema}.{r.table}" for r in relations}
        assert {"raw.crm_contacts", "intermediate.int_consent_events_deduplicated", "marts.campaign_audience",
                "marts.campaign_recipients", "intermediate.int_audience_cohorts_assigned"} <= names  # fmt: skip
        assert any(note.startswith("raw.crm_dsr_requests") for note in notes)
        with conn.cursor() as cur:
            before = {r: _count(cur, r, emails, contact_ids) for r in relations}
            cur.execute("select c.oid::regclass::text, pg_relation_filenode(c.oid) from pg_class c where relkind = 'r'")
            files_before = dict(cur.fetchall())
        conn.commit()
        assert before[next(r for r in relations if r.table == "campaign_audience")] > 0  # found by pseudonym

        result = warehouse_postgres.erase_subjects(
            conn, warehouse_postgres.ErasureSubjects(emails=set(emails), contact_ids=set(contact_ids)), built.manifest
        )

        assert {f"{r.schema}.{r.table}": n for r, n in before.items() if n} == result.removed
        assert sorted(result.vacuumed) == sorted(result.removed)
        with conn.cursor() as cur:
            assert {f"{r.schema}.{r.table}": _count(cur, r, emails, contact_ids) for r in relations} == {
                f"{r.schema}.{r.table}": 0 for r in relations
            }
            cur.execute("select c.oid::regclass::text, pg_relation_filenode(c.oid) from pg_class c where relkind = 'r'")
            files_after = dict(cur.fetchall())
            cur.execute("select count(*) from marts.campaign_recipients")
            assert cur.fetchone()[0] > 0, "erasure removed more than the three people"
        conn.commit()
        for qualified in result.vacuumed:
            # VACUUM FULL wrote a new file: the old one, with the deleted tuples, is unlinked.
            assert files_after[qualified] != files_before[qualified], qualified
    finally:
        conn.close()


def test_erasure_refuses_an_unknown_vacuum_mode(built: Built, pg_server: PgServer) -> None:
    conn = pg_server.connect(built.database, autocommit=False)
    try:
        with pytest.raises(ValueError, match="vacuum"):
            warehouse_postgres.erase_subjects(conn, warehouse_postgres.ErasureSubjects(), built.manifest, vacuum="x")
    finally:
        conn.close()
