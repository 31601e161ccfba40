"""The warehouse, on DuckDB or Postgres, behind one interface (`Warehouse`).

`GMP_WAREHOUSE` (settings.warehouse) chooses the engine for the whole pipeline, and the dbt target
follows it. `session()` opens the configured warehouse (the DuckDB file under GMP_HOME, or the
GMP_PG_* database) and `connect(path)` a given DuckDB file; both ensure the raw/ops schema
(warehouse.schema) when they open for writing. Only this package asks which engine it has: where
the SQL differs, the difference is a method of `Warehouse`, implemented per engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governed_marketing.warehouse import schema
from governed_marketing.warehouse.base import Result, Warehouse
from governed_marketing.warehouse.duckdb_file import DuckDBWarehouse

if TYPE_CHECKING:
    from governed_marketing.settings import Settings

__all__ = [
    "DuckDBWarehouse",
    "Result",
    "Warehouse",
    "connect",
    "describe",
    "erase_physically",
    "exists",
    "file_path",
    "scalar",
    "session",
    "table_exists",
]


def _settings(settings: Settings | None) -> Settings:
    from governed_marketing.settings import get_settings

    return settings or get_settings()


def _on_postgres(settings: Settings) -> bool:
    return settings.warehouse == "postgres"


def connect(path: Path, *, read_only: bool = False) -> DuckDBWarehouse:
    """Open this DuckDB file in UTC, its raw/ops tables ensured unless read-only."""
    from governed_marketing.warehouse import duckdb_file

    conn = duckdb_file.connect(path, read_only=read_only)
    if not read_only:
        schema.ensure(conn)
    return conn


def _open_configured(settings: Settings, *, read_only: bool) -> Warehouse:
    if not _on_postgres(settings):
        return connect(settings.warehouse_path, read_only=read_only)
    from governed_marketing.warehouse import postgres

    conn = postgres.PostgresWarehouse(postgres.connect(settings))
    if not read_only:
        schema.ensure(conn)
    return conn


@contextmanager
def session(
    path: Path | None = None, *, read_only: bool = False, settings: Settings | None = None
) -> Iterator[Warehouse]:
    """A short-lived connection that is always closed, so the next writer can open the file.

    Without `path`, settings decide (the DuckDB file under GMP_HOME, or GMP_PG_DATABASE on Postgres);
    with `path`, that DuckDB file.
    """
    conn = (
        connect(path, read_only=read_only)
        if path is not None
        else _open_configured(_settings(settings), read_only=read_only)
    )
    try:
        yield conn
    finally:
        conn.close()


def exists(settings: Settings | None = None) -> bool:
    """Whether there is a warehouse to read (the DuckDB file, or a reachable Postgres database)."""
    settings = _settings(settings)
    if not _on_postgres(settings):
        return settings.warehouse_path.exists()
    from governed_marketing.warehouse import postgres

    try:
        postgres.connect(settings).close()
    except Exception:  # noqa: BLE001 - unreachable or missing database: nothing to read
        return False
    return True


def file_path(settings: Settings | None = None) -> Path | None:
    """The configured warehouse's file, when it is a file (a byte scan of GMP_HOME must recognize it)."""
    settings = _settings(settings)
    return None if _on_postgres(settings) else settings.warehouse_path


def describe(settings: Settings | None = None) -> str:
    """Where the configured warehouse is, for messages (no password)."""
    settings = _settings(settings)
    return f"Postgres database {settings.pg_database}" if _on_postgres(settings) else str(settings.warehouse_path)


def erase_physically(path: Path | None = None, settings: Settings | None = None) -> None:
    """Make deleted rows unreadable from the warehouse's files, not only from SQL.

    DuckDB: the file rewritten with live rows only and swapped in (`path`, else the configured
    file). Postgres: VACUUM (FULL) rewrites every table into a new file and unlinks the old one
    (WAL and base backups keep old rows until they expire: the backup retention's job).
    """
    from governed_marketing.warehouse import duckdb_file

    if path is None:
        settings = _settings(settings)
        if _on_postgres(settings):
            from governed_marketing.warehouse import postgres

            with closing(postgres.PostgresWarehouse(postgres.connect(settings))) as conn:
                conn.vacuum_full()
            return
        path = settings.warehouse_path
    duckdb_file.rewrite_file(path)


def table_exists(conn: Warehouse, schema: str, table: str) -> bool:
    """Tables and views alike (information_schema lists both on either engine)."""
    return bool(
        scalar(
            conn,
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        )
    )


def scalar(conn: Warehouse, sql: str, params: list | None = None) -> Any:
    """First value of the first row (DuckDB 2 wants every result fetched before the next statement)."""
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None
