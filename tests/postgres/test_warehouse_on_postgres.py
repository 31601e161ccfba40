"""The Postgres warehouse against the Warehouse contract (tests/support/warehouse_contract.py), the
same checks the DuckDB warehouse passes, on this module's own fresh database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from governed_marketing.policy import load_policy
from governed_marketing.warehouse import Warehouse
from governed_marketing.warehouse.postgres import PostgresWarehouse

from tests.postgres.conftest import PgServer, fresh_database
from tests.support import warehouse_contract

pytestmark = pytest.mark.postgres


@pytest.fixture
def conn(pg_server: PgServer, pg_database: str) -> Iterator[PostgresWarehouse]:
    warehouse = PostgresWarehouse(pg_server.connect(pg_database))
    try:
        yield warehouse
    finally:
        warehouse.close()


@pytest.mark.parametrize("check", warehouse_contract.CHECKS, ids=lambda c: c.__name__)
def test_contract(conn: Warehouse, check) -> None:
    check(conn)


def _table_oid(conn: Warehouse, schema: str, table: str) -> int:
    return conn.execute("select to_regclass(?)::oid", [f"{schema}.{table}"]).fetchall()[0][0]


def test_governance_tables_are_rewritten_only_when_the_policy_changes(conn: Warehouse) -> None:
    warehouse_contract.check_governance_written_when_the_policy_changes(conn, load_policy(), _table_oid)


def test_the_url_for_gx_names_the_same_database(conn: PostgresWarehouse, pg_database: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(conn.sqlalchemy_url())
    assert url.drivername == "postgresql+psycopg2" and url.database == pg_database
    assert conn.database_file() is None and conn.label() == f"postgres:{pg_database}"


@pytest.fixture
def c_locale_conn(pg_server: PgServer) -> Iterator[PostgresWarehouse]:
    """A database whose LC_CTYPE is `C`: its regular expressions take only ASCII letters for letters."""
    options = "template template0 encoding 'UTF8' lc_ctype 'C' lc_collate 'C'"
    with fresh_database(pg_server, options=options) as name:
        warehouse = PostgresWarehouse(pg_server.connect(name))
        try:
            yield warehouse
        finally:
            warehouse.close()


@pytest.mark.parametrize(
    "check",
    [
        warehouse_contract.check_rows_mentioning_finds_the_person,
        warehouse_contract.check_scan_tables_finds_mentions_in_any_cell,
    ],
    ids=lambda c: c.__name__,
)
def test_the_erasure_scan_finds_non_ascii_names_under_a_c_locale(c_locale_conn: PostgresWarehouse, check) -> None:
    """Word tokens follow the server's LC_CTYPE; under `C` a last name is looked for by substring, so
    a non-ASCII name (in the contract's rows) is not cut in two and missed."""
    assert not c_locale_conn._unicode_words
    check(c_locale_conn)


def _backend_cpu_seconds(conn: PostgresWarehouse) -> float:
    """CPU time (user + system) of this connection's server process, read from /proc (a local server)."""
    import os
    from pathlib import Path

    pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists():
        pytest.skip("the Postgres server is not on this machine: its CPU time cannot be read")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_registered_frame_has_statistics_for_the_planner(conn: PostgresWarehouse) -> None:
    import pandas as pd

    conn.register("probe_frame", pd.DataFrame({"key": [f"k{i}" for i in range(5000)]}))
    (tuples,) = conn.execute("select reltuples from pg_class where oid = 'pg_temp.probe_frame'::regclass").fetchone()
    conn.unregister("probe_frame")
    assert tuples == 5000  # autovacuum never analyzes a temporary table: without this the planner guesses


def test_the_erasure_scan_of_a_few_long_rows_costs_the_server_little(conn: PostgresWarehouse) -> None:
    """Two rows of 1 MB of words (as a run's JSON counts are) against 3,000 people: every word is a
    token. A plan that carried each row's text with each of its 120,000 tokens into a hash took the
    server 145 s at 1M (pipeline_steps); the scan's joins hash the needles, with the tokens alone."""
    from governed_marketing.privacy.scan import Identity, Matcher, scan_tables

    words = " ".join(f"surname{i % 3000} req-{i}" for i in range(60000))
    conn.execute("create schema if not exists scanprobe").fetchall()
    conn.execute("create table scanprobe.long_rows (counts_json varchar)").fetchall()
    conn.execute("insert into scanprobe.long_rows values (?), (?)", [words, words[::-1]]).fetchall()
    people = [Identity(f"r{i}", names={(f"Given{i}", f"Surname{i}")}) for i in range(3000)]
    try:
        before = _backend_cpu_seconds(conn)
        found = scan_tables(conn, Matcher(people))
        spent = _backend_cpu_seconds(conn) - before
    finally:
        conn.execute("drop table scanprobe.long_rows").fetchall()
    assert [hit for hit in found.hits if hit.table == "long_rows"] == []  # last names without first names
    assert spent < 10, f"the server spent {spent:.1f} CPU s on the scan"
    assert conn.execute("show enable_nestloop").fetchone()[0] == "on"  # the scan's settings are reset after it


def test_a_failing_scan_statement_raises_its_own_error_and_leaves_no_setting(conn: PostgresWarehouse) -> None:
    """In a transaction the statement aborted, the settings cannot be reset: the error is the statement's,
    and the rollback undoes the settings."""
    import psycopg2

    (before,) = conn.execute("show work_mem").fetchone()
    conn.execute("begin transaction")
    with pytest.raises(psycopg2.errors.UndefinedTable):
        conn.rows_mentioning("scanprobe.missing", "''", "1", {"email": "@", "phone": "0"}, names=False, columns=[])
    conn.execute("rollback")
    assert conn.execute("show work_mem").fetchone()[0] == before
