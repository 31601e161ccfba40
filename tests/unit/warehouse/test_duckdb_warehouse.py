"""The DuckDB warehouse against the Warehouse contract (tests/support/warehouse_contract.py), on a real file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from governed_marketing.policy import load_policy
from governed_marketing.warehouse import DuckDBWarehouse, Warehouse, connect, schema, table_exists

from tests.support import warehouse_contract


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    with connect(tmp_path / "warehouse.duckdb") as warehouse:
        yield warehouse


@pytest.mark.parametrize("check", warehouse_contract.CHECKS, ids=lambda c: c.__name__)
def test_contract(conn: Warehouse, check) -> None:
    check(conn)


def _table_oid(conn: Warehouse, schema_name: str, table: str) -> int:
    return conn.execute(
        "select table_oid from duckdb_tables() where schema_name = ? and table_name = ?", [schema_name, table]
    ).fetchall()[0][0]


def test_governance_tables_are_rewritten_only_when_the_policy_changes(conn: Warehouse) -> None:
    warehouse_contract.check_governance_written_when_the_policy_changes(conn, load_policy(), _table_oid)


def test_an_older_warehouse_gets_the_new_columns_on_open(tmp_path: Path) -> None:
    """A warehouse written before the in-doubt columns existed is brought up to date by the next open."""
    path = tmp_path / "old.duckdb"
    with connect(path) as conn:
        conn.execute("drop table ops.warehouse_schema").fetchall()
        for column, _ in schema.GENERATION_LEDGER_ADDED_COLUMNS:
            conn.execute(f"alter table ops.generation_ledger drop column {column}").fetchall()
    with connect(path) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "select column_name from information_schema.columns"
                " where table_schema = 'ops' and table_name = 'generation_ledger'"
            ).fetchall()
        }
        assert {c for c, _ in schema.GENERATION_LEDGER_ADDED_COLUMNS} <= columns


def test_a_read_only_open_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()  # an empty file, no schema
    with connect(path, read_only=True) as conn:
        assert not table_exists(conn, "ops", "warehouse_schema")


def test_physical_erasure_rewrites_the_file_without_deleted_rows(tmp_path: Path) -> None:
    """CHECKPOINT alone leaves deleted values in freed blocks; the rewrite does not."""
    from governed_marketing.warehouse import erase_physically

    path = tmp_path / "warehouse.duckdb"
    secret = "grace.erased@warehouse-test.example"
    with connect(path) as conn:
        conn.execute("create table ops.notes_for_test (note varchar)").fetchall()
        conn.execute("insert into ops.notes_for_test select ? || i from range(2000) t(i)", [secret]).fetchall()
        conn.checkpoint()
        conn.execute("delete from ops.notes_for_test").fetchall()
        conn.checkpoint()
    assert secret.encode() in path.read_bytes()  # the point of the rewrite: still in the file
    erase_physically(path)
    assert secret.encode() not in path.read_bytes()
    with connect(path, read_only=True) as conn:
        assert table_exists(conn, "ops", "notes_for_test") and table_exists(conn, "raw", "crm_contacts")
