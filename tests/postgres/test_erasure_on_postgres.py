"""Erasure on the Postgres warehouse, by the production engine (privacy.erasure.erase, what
`gmp dsr process` runs): every table declaring meta.subject_column, then VACUUM FULL.

Own module, so its own fresh database: a small sample export ingested into DuckDB, mirrored into
Postgres, `dbt run --target postgres`, then three recipients erased by email.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from governed_marketing import warehouse
from governed_marketing.crm.contract import normalize_email
from governed_marketing.crm.ingest import ingest_export
from governed_marketing.policy import load_policy
from governed_marketing.privacy.erasure import ErasureRequest, erase
from governed_marketing.privacy.stores import Relation, personal_relations
from governed_marketing.pseudonym import pseudonym
from governed_marketing.sample_data.crm_export import write_sample_export
from governed_marketing.settings import get_settings, reset_settings
from governed_marketing.warehouse import connect
from governed_marketing.warehouse import postgres as warehouse_postgres
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
    home: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer, pg_database: str) -> Iterator[Built]:
    from dbt.cli.main import dbtRunner

    run_dir = tmp_path_factory.mktemp("postgres_erasure")
    home = run_dir / "gmp_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        env.setenv("GMP_PSEUDONYM_KEY", TEST_KEY)
        env.setenv("GMP_WAREHOUSE", "postgres")
        env.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        env.delenv("DBT_TARGET", raising=False)
        for name, value in pg_server.env(pg_database).items():
            env.setenv(name, value)
        reset_settings()
        try:
            write_sample_export(run_dir / "crm", contacts=300, seed=7)
            staging = run_dir / "staging.duckdb"  # outside GMP_HOME: the Postgres warehouse is the only one there
            conn = connect(staging)
            try:
                ingest_export(run_dir / "crm", conn=conn, policy=load_policy(), landing_root=home / "landing")
            finally:
                conn.close()
            warehouse_postgres.prepare(get_settings(), duckdb_path=staging)
            result = dbtRunner().invoke(
                ["run", "--project-dir", str(DBT), "--profiles-dir", str(DBT), "--target", "postgres",
                 "--target-path", str(run_dir / "target"), "--log-path", str(run_dir / "logs"),
                 "--vars", json.dumps({"as_of": AS_OF})]
            )  # fmt: skip
            assert result.success, result.exception or [str(r.message) for r in result.result.results]
            yield Built(run_dir / "target" / "manifest.json", pg_database, home)
        finally:
            reset_settings()


def _count(cur, relation: Relation, emails: list[str], contact_ids: list[str]) -> int:
    pseudonyms = [pseudonym(TEST_KEY.encode(), e) for e in emails]
    column = sql.Identifier(relation.subject_column)
    needle = {
        "email": sql.SQL("lower(trim({}::text)) = any(%s)").format(column),
        "contact_id": sql.SQL("trim({}::text) = any(%s)").format(column),
        "pseudonym": sql.SQL("{}::text = any(%s)").format(column),
    }[relation.kind]
    values = {"email": emails, "contact_id": contact_ids, "pseudonym": pseudonyms}[relation.kind]
    query = sql.SQL("select count(*) from {} where ").format(sql.Identifier(relation.schema, relation.name)) + needle
    params: list = [values]
    if relation.has_contact_id and relation.kind != "contact_id":
        query += sql.SQL(" or trim(contact_id::text) = any(%s)")
        params.append(contact_ids)
    cur.execute(query, params)
    return cur.fetchone()[0]


def _filenodes(cur) -> dict[str, int]:
    cur.execute("select c.oid::regclass::text, pg_relation_filenode(c.oid) from pg_class c where relkind = 'r'")
    return dict(cur.fetchall())


def test_erasure_deletes_every_subject_table_and_rewrites_the_files(built: Built, pg_server: PgServer) -> None:
    conn = pg_server.connect(built.database, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "select p.email from marts.campaign_recipients r"
                " join intermediate.int_contacts_profiled p using (contact_id) order by p.contact_id limit 3"
            )
            emails = sorted({normalize_email(email) for (email,) in cur.fetchall()})
            # every contact row sharing the email is the same person (the erasure resolves them all)
            cur.execute("select contact_id from raw.crm_contacts where email_normalized = any(%s)", [emails])
            contact_ids = sorted({contact_id for (contact_id,) in cur.fetchall()})
        conn.commit()
        assert len(emails) == 3

        with warehouse.session(settings=get_settings()) as pg:
            relations, _unstored, _notes = personal_relations(pg, built.manifest)
        names = {r.qualified for r in relations}
        assert {"raw.crm_contacts", "intermediate.int_consent_events_deduplicated", "marts.campaign_audience",
                "marts.campaign_recipients", "intermediate.int_audience_cohorts_assigned"} <= names  # fmt: skip
        assert "raw.crm_dsr_requests" not in names  # kept with the email replaced by its HMAC, not deleted
        with conn.cursor() as cur:
            before = {r.qualified: _count(cur, r, emails, contact_ids) for r in relations}
            files_before = _filenodes(cur)
        conn.commit()
        assert before["marts.campaign_audience"] > 0  # found by pseudonym

        requests = [ErasureRequest(f"erase-{i}", email) for i, email in enumerate(emails)]
        common = {"home": built.home, "warehouse_path": warehouse.file_path(), "policy": load_policy(),
                  "key": TEST_KEY.encode(), "manifest_path": built.manifest}  # fmt: skip
        results = erase(requests, **common)

        removed: dict[str, int] = {}
        for result in results.values():
            assert result.verified, result.verification
            for store, n in result.removed.items():
                removed[store] = removed.get(store, 0) + n
        assert {name: n for name, n in before.items() if n} == {s: n for s, n in removed.items() if s in names}
        with conn.cursor() as cur:
            assert {r.qualified: _count(cur, r, emails, contact_ids) for r in relations} == dict.fromkeys(names, 0)
            files_after = _filenodes(cur)
            cur.execute("select count(*) from marts.campaign_recipients")
            assert cur.fetchone()[0] > 0, "erasure removed more than the three people"
        conn.commit()
        for qualified in (name for name, n in before.items() if n):
            # VACUUM FULL wrote a new file: the old one, with the deleted tuples, is unlinked.
            assert files_after[qualified] != files_before[qualified], qualified

        again = erase(requests, **common)  # a retried task: nothing left to remove, still verified
        assert all(r.verified for r in again.values())
        assert not {s for r in again.values() for s, n in r.removed.items() if n and s in names}
    finally:
        conn.close()
