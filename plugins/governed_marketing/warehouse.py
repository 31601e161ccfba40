"""The warehouse: connections, schemas and the raw-layer DDL, on DuckDB or Postgres.

`GMP_WAREHOUSE` (settings.warehouse) chooses the engine for the whole pipeline, and the dbt target
follows it: `session()` opens the DuckDB file under GMP_HOME, or a Postgres database (GMP_PG_*)
wrapped in `dialect.PostgresConnection`, which speaks the part of DuckDB's connection API the
library uses. One code path: the library's SQL is portable (see dialect.py for the rules).

DuckDB has one writer per file: every writer opens, works and closes (the DAGs also serialize
writers with a one-slot Airflow pool), so dbt and the library never hold the file at the same time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

RAW_SCHEMA = "raw"
GOVERNANCE_SCHEMA = "governance"
OPS_SCHEMA = "ops"

RAW_DDL = """
create schema if not exists raw;
create schema if not exists governance;
create schema if not exists ops;

create table if not exists raw.crm_contacts (
    contact_id varchar primary key,
    email varchar not null,
    email_normalized varchar not null,
    first_name varchar, last_name varchar, phone varchar,
    birth_date date,
    country varchar, language varchar, city varchar, lifecycle_stage varchar,
    interests varchar, notes varchar,
    created_at timestamp, updated_at timestamp not null,
    load_id varchar not null
);
create table if not exists raw.crm_consent_events (
    event_id varchar primary key,
    contact_id varchar not null,
    purpose varchar not null,
    action varchar not null,
    source varchar, notice_version varchar,
    occurred_at timestamp not null,
    load_id varchar not null
);
create table if not exists raw.crm_activity (
    event_id varchar primary key,
    contact_id varchar not null,
    event_type varchar not null,
    product_category varchar,
    amount decimal(12, 2),
    occurred_at timestamp not null,
    load_id varchar not null
);
create table if not exists raw.crm_dsr_requests (
    request_id varchar primary key,
    email_normalized varchar not null,
    request_type varchar not null,
    details varchar,
    received_at timestamp not null,
    channel varchar not null,
    load_id varchar not null
);
create table if not exists raw.quarantine (
    load_id varchar not null,
    file_name varchar not null,
    line_number bigint not null,
    reason varchar not null,
    raw_record varchar,
    quarantined_at timestamp not null,
    primary key (load_id, file_name, line_number)
);
create table if not exists ops.crm_loads (
    load_id varchar primary key,
    export_sha256 varchar not null unique,
    source_dir_name varchar,
    loaded_at timestamp not null,
    files_json varchar not null
);
"""


def connect(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse in UTC (timestamps in the contract are UTC when zone-less)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(path), read_only=read_only)
    conn.execute("set TimeZone = 'UTC'")
    return conn


def is_postgres(settings=None) -> bool:
    """True when GMP_WAREHOUSE=postgres: the library, dbt and the gates work in Postgres."""
    from governed_marketing.settings import get_settings

    return (settings or get_settings()).warehouse == "postgres"


def exists(settings=None) -> bool:
    """Whether there is a warehouse to read (the DuckDB file, or a reachable Postgres database)."""
    from governed_marketing.settings import get_settings

    settings = settings or get_settings()
    if not is_postgres(settings):
        return settings.warehouse_path.exists()
    from governed_marketing import warehouse_postgres

    try:
        warehouse_postgres.connect(settings).close()
    except Exception:  # noqa: BLE001 - unreachable or missing database: nothing to read
        return False
    return True


@contextmanager
def session(path: Path | None = None, *, read_only: bool = False, settings=None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection that is always closed, so the next writer can open the file.

    Without `path`, settings decide: the DuckDB file under GMP_HOME, or (GMP_WAREHOUSE=postgres) a
    `dialect.PostgresConnection` to GMP_PG_DATABASE. With `path`, that DuckDB file.
    """
    if path is None:
        from governed_marketing.settings import get_settings

        settings = settings or get_settings()
        if settings.warehouse == "postgres":
            from governed_marketing import warehouse_postgres
            from governed_marketing.dialect import PostgresConnection

            pg = PostgresConnection(warehouse_postgres.connect(settings))
            try:
                yield pg  # type: ignore[misc]
            finally:
                pg.close()
            return
        path = settings.warehouse_path
    conn = connect(path, read_only=read_only)
    try:
        yield conn
    finally:
        conn.close()


def ensure_raw_layer(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(RAW_DDL)


def table_exists(conn: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    """Tables and views alike (information_schema lists both on either engine)."""
    return bool(
        scalar(
            conn,
            "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
            [schema, table],
        )
    )


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """First value of the first row (DuckDB 2 wants every result fetched before the next statement)."""
    rows = conn.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None
