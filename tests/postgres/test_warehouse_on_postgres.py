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
