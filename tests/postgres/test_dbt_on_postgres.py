"""The dbt project on a real Postgres server gives the same marts as on DuckDB.

One module-scoped run: a generated sample export (1,500 contacts, fixed seed) is ingested into
DuckDB (the one ingest path, with validation and quarantine), `dbt build` runs on DuckDB, the raw
tables are mirrored into a fresh Postgres database with COPY (governed_marketing.warehouse.postgres),
and `dbt build --target postgres` runs there. Both in-process (dbtRunner), same as-of, same key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from governed_marketing.crm.ingest import ingest_export
from governed_marketing.policy import load_policy
from governed_marketing.pseudonym import pseudonym
from governed_marketing.sample_data.crm_export import write_sample_export
from governed_marketing.settings import get_settings, reset_settings
from governed_marketing.warehouse import connect
from governed_marketing.warehouse import postgres as warehouse_postgres

from tests.postgres.conftest import PgServer
from tests.support.dbt_results import failures, nodes_by_type

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
DBT = ROOT / "dbt_project"
AS_OF = "2026-11-15T12:00:00"
TEST_KEY = "gmp-postgres-test-key-8d41c0e2b7a95f36"
CONTACTS = 1500
SEED = 20261115

MARTS = {
    "campaign_audience": ["campaign_id", "recipient_pseudonym"],
    "campaign_recipients": ["campaign_id", "recipient_pseudonym"],
    "audience_funnel": ["campaign_id"],
    "generation_cohorts": ["campaign_id", "cohort_id"],
}


@dataclass
class Builds:
    run_dir: Path
    home: Path
    database: str
    duckdb_build: object  # dbtRunnerResult
    postgres_build: object
    prepared: warehouse_postgres.PrepareResult
    seconds: dict[str, float]

    def target(self, name: str) -> Path:
        return self.run_dir / name / "target"

    def logs(self, name: str) -> Path:
        return self.run_dir / name / "logs"


def _release_duckdb() -> None:
    """dbt-duckdb keeps the file open in-process after dbtRunner returns; close it (see tests/dbt)."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    if DuckDBConnectionManager._ENV is not None:
        DuckDBConnectionManager._ENV.close()
    DuckDBConnectionManager.close_all_connections()


def _dbt(run_dir: Path, target: str, *args: str):
    from dbt.cli.main import dbtRunner

    try:
        return dbtRunner().invoke(
            [
                *args,
                "--project-dir", str(DBT),
                "--profiles-dir", str(DBT),
                "--target", target,
                "--target-path", str(run_dir / target / "target"),
                "--log-path", str(run_dir / target / "logs"),
                "--vars", json.dumps({"as_of": AS_OF}),
            ]
        )  # fmt: skip
    finally:
        if target == "duckdb":
            _release_duckdb()


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer, pg_database: str) -> Iterator[Builds]:
    run_dir = tmp_path_factory.mktemp("postgres_dbt")
    home = run_dir / "gmp_home"
    home.mkdir()
    crm = run_dir / "crm"
    seconds: dict[str, float] = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        env.setenv("GMP_PSEUDONYM_KEY", TEST_KEY)
        env.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        env.delenv("DBT_TARGET", raising=False)
        for name, value in pg_server.env(pg_database).items():
            env.setenv(name, value)
        reset_settings()
        try:
            write_sample_export(crm, contacts=CONTACTS, seed=SEED)
            conn = connect(home / "warehouse.duckdb")
            try:
                ingest_export(crm, conn=conn, policy=load_policy(), landing_root=home / "landing")
            finally:
                conn.close()

            started = time.perf_counter()
            duckdb_build = _dbt(run_dir, "duckdb", "build")
            seconds["dbt build duckdb"] = time.perf_counter() - started

            started = time.perf_counter()
            prepared = warehouse_postgres.prepare(get_settings(), duckdb_path=home / "warehouse.duckdb")
            seconds["load postgres"] = time.perf_counter() - started

            started = time.perf_counter()
            postgres_build = _dbt(run_dir, "postgres", "build")
            seconds["dbt build postgres"] = time.perf_counter() - started
            print("\n" + ", ".join(f"{k}: {v:.1f}s" for k, v in seconds.items()))
            yield Builds(run_dir, home, pg_database, duckdb_build, postgres_build, prepared, seconds)
        finally:
            reset_settings()


@pytest.fixture
def duck(builds: Builds) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = duckdb.connect(str(builds.home / "warehouse.duckdb"), read_only=True)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def pg(builds: Builds, pg_server: PgServer):
    conn = pg_server.connect(builds.database)
    try:
        yield conn
    finally:
        conn.close()


def _duck_rows(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(f"select * from marts.{table}")
    columns = [d[0] for d in cursor.description]
    return columns, sorted(cursor.fetchall(), key=repr)


def _pg_rows(conn, table: str) -> tuple[list[str], list[tuple]]:
    with conn.cursor() as cur:
        cur.execute(f"select * from marts.{table}")
        columns = [d[0] for d in cur.description]
        return columns, sorted(cur.fetchall(), key=repr)


# ---------------------------------------------------------------------------------------------


def test_both_builds_pass_every_model_data_test_and_unit_test(builds: Builds) -> None:
    assert builds.duckdb_build.success, failures(builds.duckdb_build)
    assert builds.postgres_build.success, failures(builds.postgres_build)
    assert failures(builds.postgres_build) == []
    duck_ran, pg_ran = nodes_by_type(builds.duckdb_build), nodes_by_type(builds.postgres_build)
    assert pg_ran == duck_ran, (duck_ran, pg_ran)
    manifest = json.loads((builds.target("postgres") / "manifest.json").read_text())
    assert pg_ran["unit_test"] == len(manifest["unit_tests"]) > 0
    assert pg_ran["model"] == sum(1 for n in manifest["nodes"].values() if n["resource_type"] == "model") > 0
    # The on-run-start classification hook ran on Postgres too.
    assert pg_ran["operation"] == 1


def test_raw_rows_were_copied_from_duckdb(builds: Builds, duck: duckdb.DuckDBPyConnection, pg) -> None:
    for table, copied in builds.prepared.raw_rows.items():
        (in_duckdb,) = duck.execute(f"select count(*) from raw.{table}").fetchone()
        with pg.cursor() as cur:
            cur.execute(f"select count(*) from raw.{table}")
            (in_postgres,) = cur.fetchone()
        assert in_duckdb == copied == in_postgres, table
    assert builds.prepared.raw_rows["crm_contacts"] > 1000


@pytest.mark.parametrize("mart", sorted(MARTS))
def test_marts_are_identical_on_duckdb_and_postgres(
    builds: Builds, duck: duckdb.DuckDBPyConnection, pg, mart: str
) -> None:
    assert builds.postgres_build.success, failures(builds.postgres_build)
    duck_columns, duck_rows = _duck_rows(duck, mart)
    pg_columns, pg_rows = _pg_rows(pg, mart)
    assert pg_columns == duck_columns
    assert duck_rows, f"marts.{mart} is empty: the comparison would prove nothing"
    assert len(pg_rows) == len(duck_rows)
    assert pg_rows == duck_rows


def test_campaign_audience_pseudonyms_and_cohorts_match(builds: Builds, duck: duckdb.DuckDBPyConnection, pg) -> None:
    query = "select campaign_id, recipient_pseudonym, cohort_id from marts.campaign_audience"
    on_duckdb = set(duck.execute(query).fetchall())
    with pg.cursor() as cur:
        cur.execute(query)
        on_postgres = set(cur.fetchall())
    assert len(on_duckdb) > 100
    assert on_postgres == on_duckdb


def test_postgres_pseudonym_is_the_keyed_hmac_of_pseudonym_py(builds: Builds, pg) -> None:
    with pg.cursor() as cur:
        cur.execute("select email_normalized, gmp_private.pseudonym(email_normalized) from raw.crm_contacts limit 50")
        rows = cur.fetchall()
        cur.execute("select gmp_private.pseudonym(null), gmp_private.pseudonym('Ünïcode.Ñame@example.test')")
        null_value, unicode_value = cur.fetchone()
    assert rows
    for email, value in rows:
        assert value == pseudonym(TEST_KEY.encode(), email)
    assert null_value is None
    assert unicode_value == pseudonym(TEST_KEY.encode(), "Ünïcode.Ñame@example.test")


def test_pseudonym_key_never_reaches_dbt_artifacts_or_postgres_settings(builds: Builds, pg) -> None:
    key = TEST_KEY.encode()
    folders = [builds.target("postgres"), builds.logs("postgres"), DBT / "target", DBT / "logs"]
    scanned = 0
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert key not in path.read_bytes(), f"pseudonym key found in {path}"
    assert list((builds.target("postgres") / "compiled").rglob("*.sql")), "no compiled SQL to check"
    assert (builds.logs("postgres") / "dbt.log").is_file()
    assert scanned > 10
    with pg.cursor() as cur:
        # Not a setting anywhere: not in the session, not per database or role.
        cur.execute("select current_setting('gmp.pseudonym_key', true)")
        assert cur.fetchone()[0] in (None, "")
        cur.execute(
            "select count(*) from pg_db_role_setting where array_to_string(setconfig, ',') like %s", [f"%{TEST_KEY}%"]
        )
        assert cur.fetchone()[0] == 0
        cur.execute("select count(*) from pg_settings where setting like %s", [f"%{TEST_KEY}%"])
        assert cur.fetchone()[0] == 0


def test_a_role_granted_the_function_computes_pseudonyms_but_cannot_read_the_key(
    builds: Builds, pg, pg_server: PgServer
) -> None:
    import secrets

    import psycopg2

    role = f"gmp_test_dbt_{secrets.token_hex(4)}"
    with pg.cursor() as cur:
        cur.execute(f'create role "{role}" nologin')
    try:
        loader = pg_server.connect(builds.database, autocommit=False)
        try:
            warehouse_postgres.install_pseudonym_key(loader, TEST_KEY.encode(), grant_to=[role])
        finally:
            loader.close()
        with pg.cursor() as cur:
            cur.execute(f'set role "{role}"')
            cur.execute("select gmp_private.pseudonym('someone@example.test')")
            assert cur.fetchone()[0] == pseudonym(TEST_KEY.encode(), "someone@example.test")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("select key from gmp_private.pseudonym_key")
            cur.execute("reset role")
    finally:
        with pg.cursor() as cur:
            cur.execute("reset role")
            cur.execute(f'drop owned by "{role}"')
            cur.execute(f'drop role "{role}"')


def test_governance_tables_on_postgres_are_the_policy(builds: Builds, pg) -> None:
    from governed_marketing.warehouse.governance import governance_frames

    frames = governance_frames(load_policy())
    assert builds.prepared.governance_rows == {name: len(frame) for name, frame in frames.items()}
    with pg.cursor() as cur:
        cur.execute("select k, fallback_language from governance.cohort_policy")
        assert cur.fetchall() == [tuple(frames["cohort_policy"].iloc[0])]
