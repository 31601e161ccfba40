"""One library, two warehouses: a Postgres connection that speaks the DuckDB connection API we use.

The library's functions take a connection and run SQL on it; with `GMP_WAREHOUSE=postgres`,
`warehouse.session()` hands them a `PostgresConnection` instead of a DuckDB one, so there is one
code path whatever the warehouse (the dbt target follows the same setting). The adapter covers the
subset of DuckDB's API the library calls:

- `execute(sql, params)` -> a result with `fetchall()`, `fetchone()`, `df()`; `?` placeholders
  (list params) and `$name` placeholders (dict params) become psycopg2's `%s` / `%(name)s`
  (outside string literals); like DuckDB, an INSERT/UPDATE/DELETE returns one row with its count;
- `register(name, frame)` / `unregister(name)`: the frame becomes a TEMP table loaded by COPY
  (CSV from Arrow batches, the bulk path), dropped on unregister;
- `begin transaction` / `commit` / `rollback` as SQL (the connection is in autocommit mode, so
  these statements are the transaction boundaries exactly as on DuckDB), and `close()`.

The library's SQL is written so that both engines accept it (`insert ... on conflict`, explicit
column lists, `count(*) filter (where ...)`, `double precision`, `cast(? as varchar[])`). The few
statements that cannot be shared are behind the functions at the bottom: `temp_table`,
`checkpoint` (DuckDB only) and `vacuum_full` (Postgres' physical erasure; DuckDB rewrites its file,
see privacy.erasure.compact_warehouse). A few callers branch on `is_postgres(conn)` where the SQL
itself differs: privacy.scan (DuckDB's regexp_extract_all vs a strpos prefilter on Postgres, rowid
vs ctid) and privacy.erasure (rowid vs ctid).

Great Expectations: on Postgres the campaign-audience gate runs inside the database, through GX's
SQL (Postgres) datasource on a query over marts.campaign_audience (see validation.audience); GX opens
its own SQLAlchemy connection from `sqlalchemy_url(conn)`, to the same database as `conn`. The other
gates stay frame-based on both engines: the raw CRM gate checks the rows about to be loaded (before
anything is written, with the Python-computed `is_contact_known`), and the vendor-payload and
generated-content gates check what is built in Python (the payload, the drafts).
Nothing here logs parameters or rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from psycopg2 import sql as pgsql
from psycopg2.extensions import AsIs, register_adapter
from psycopg2.extensions import connection as PgConnection

# numpy scalars reach parameters from pandas frames; psycopg2 does not adapt them by default.
register_adapter(np.int64, lambda v: AsIs(int(v)))
register_adapter(np.int32, lambda v: AsIs(int(v)))
register_adapter(np.float64, lambda v: AsIs(repr(float(v))))
register_adapter(np.bool_, lambda v: AsIs(bool(v)))


class PostgresResult:
    """Rows fetched eagerly (like DuckDB's materialized results), with the column names."""

    def __init__(self, rows: list[tuple], columns: list[str]) -> None:
        self._rows = rows
        self._position = 0
        self.columns = columns

    @property
    def description(self) -> list[tuple]:
        return [(c, None, None, None, None, None, None) for c in self.columns]

    def fetchall(self) -> list[tuple]:
        rows, self._position = self._rows[self._position :], len(self._rows)
        return rows

    def fetchone(self) -> tuple | None:
        if self._position >= len(self._rows):
            return None
        row = self._rows[self._position]
        self._position += 1
        return row

    def df(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.fetchall(), columns=self.columns)


_DML = re.compile(r"^\s*(insert|update|delete)\b", re.IGNORECASE)
_RETURNING = re.compile(r"\breturning\b", re.IGNORECASE)


def translate(query: str, params: Any) -> str:
    """DuckDB placeholders to psycopg2's, outside quoted literals and identifiers; `%` escaped."""
    if params is None or (isinstance(params, (list, tuple)) and not params and "?" not in query):
        return query
    out: list[str] = []
    i, n = 0, len(query)
    while i < n:
        ch = query[i]
        if ch in ("'", '"'):
            end = i + 1
            while end < n:
                if query[end] == ch:
                    if end + 1 < n and query[end + 1] == ch:
                        end += 2
                        continue
                    break
                end += 1
            out.append(query[i : end + 1].replace("%", "%%"))
            i = end + 1
        elif ch == "%":
            out.append("%%")
            i += 1
        elif ch == "?" and not isinstance(params, dict):
            out.append("%s")
            i += 1
        elif ch == "$" and isinstance(params, dict):
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", query[i:])
            if match and match.group(1) in params:
                out.append(f"%({match.group(1)})s")
                i += match.end()
            else:
                out.append(ch)
                i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _arrow_pg_type(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind):
        return "bigint"
    if pa.types.is_floating(kind):
        return "double precision"
    if pa.types.is_decimal(kind):
        return f"numeric({kind.precision}, {kind.scale})"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_date(kind):
        return "date"
    return "varchar"


class PostgresConnection:
    """The DuckDB connection API subset the library uses, over one psycopg2 connection (autocommit)."""

    dialect = "postgres"

    def __init__(self, raw: PgConnection) -> None:
        raw.autocommit = True
        self.raw = raw

    def execute(self, query: str, params: Sequence | dict | None = None) -> PostgresResult:
        if isinstance(params, dict):
            params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
        elif params is not None:
            params = [list(v) if isinstance(v, tuple) else v for v in params]
        with self.raw.cursor() as cur:
            cur.execute(translate(query, params), params if params else None)
            if cur.description is not None:
                return PostgresResult(cur.fetchall(), [d[0] for d in cur.description])
            if _DML.match(query) and not _RETURNING.search(query):
                return PostgresResult([(max(cur.rowcount, 0),)], ["Count"])
            return PostgresResult([], [])

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """The frame as a TEMP table `name`, bulk-loaded with COPY (replaces an earlier one)."""
        from governed_marketing.warehouse_postgres import copy_batches

        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        columns = [str(c) for c in table.column_names]
        target = pgsql.Identifier(name)
        with self.raw.cursor() as cur:
            cur.execute(pgsql.SQL("drop table if exists pg_temp.{}").format(target))
            cur.execute(
                pgsql.SQL("create temp table {} ({})").format(
                    target,
                    pgsql.SQL(", ").join(
                        pgsql.SQL("{} {}").format(pgsql.Identifier(c), pgsql.SQL(_arrow_pg_type(f.type)))
                        for c, f in zip(columns, table.schema, strict=True)
                    ),
                )
            )
            if table.num_rows:
                copy_batches(cur, target, columns, table.to_batches())

    def unregister(self, name: str) -> None:
        with self.raw.cursor() as cur:
            cur.execute(pgsql.SQL("drop table if exists pg_temp.{}").format(pgsql.Identifier(name)))

    def cursor(self):
        return self.raw.cursor()

    def commit(self) -> None:
        if not self.raw.autocommit:
            self.raw.commit()

    def rollback(self) -> None:
        if not self.raw.autocommit:
            self.raw.rollback()

    def close(self) -> None:
        self.raw.close()


# ---- the statements that differ ----------------------------------------------------------------


def is_postgres(conn: Any) -> bool:
    """Whether this connection is the Postgres adapter (else a DuckDB connection)."""
    return getattr(conn, "dialect", "duckdb") == "postgres"


def sqlalchemy_url(conn: PostgresConnection) -> str:
    """A SQLAlchemy URL to the database `conn` is connected to, for GX's SQL datasource.

    The psycopg2 driver is named explicitly (`postgresql+psycopg2`): with SQLAlchemy 2.1 a bare
    `postgresql://` may mean psycopg 3. Holds the password when there is one: never log it.
    """
    from sqlalchemy.engine import URL

    info = conn.raw.info
    query = {"application_name": "governed_marketing_gx", "options": "-c TimeZone=UTC"}
    host: str | None = info.host
    if host and host.startswith("/"):  # a Unix socket directory
        query["host"], host = host, None
    url = URL.create(
        "postgresql+psycopg2",
        username=info.user,
        password=info.password or None,
        host=host,
        port=info.port,
        database=info.dbname,
        query=query,
    )
    return url.render_as_string(hide_password=False)


def temp_table(conn: Any, name: str, frame: pd.DataFrame) -> None:
    """A session-local table holding the frame, for joins in SQL (replaces an earlier one).

    DuckDB: the registered frame copied into a TEMP table; Postgres: `register` already is one.
    """
    if is_postgres(conn):
        conn.register(name, frame)
        return
    # DuckDB 2 refuses `register` while an earlier result is only partly fetched (a `fetchone()`);
    # a finished statement first closes whatever is pending.
    conn.execute("select 1").fetchall()
    conn.register(f"{name}_frame", frame)
    conn.execute(f"create or replace temp table {name} as select * from {name}_frame").fetchall()
    conn.unregister(f"{name}_frame")


def checkpoint(conn: Any) -> None:
    """DuckDB: write the WAL into the file. Postgres: nothing (its checkpoints are the server's job)."""
    if not is_postgres(conn):
        conn.execute("checkpoint").fetchall()


def vacuum_full(conn: PostgresConnection, schemas: Sequence[str] | None = None) -> list[str]:
    """Postgres' physical erasure: VACUUM (FULL, ANALYZE) rewrites each table into a new file and
    unlinks the old one, so deleted tuples are in no file of the database any more.

    Every base table outside the system schemas (or in `schemas`); it takes an ACCESS EXCLUSIVE
    lock per table while it rewrites, which is why erasures and purges are batched. Returns the
    tables vacuumed. (WAL and base backups keep old rows until they expire: backup retention.)
    """
    rows = conn.execute(
        "select table_schema, table_name from information_schema.tables"
        " where table_type = 'BASE TABLE' and table_catalog = current_database()"
        " and table_schema not in ('pg_catalog', 'information_schema')"
        " order by table_schema, table_name"
    ).fetchall()
    done = []
    for schema, table in rows:
        if schemas is not None and schema not in schemas:
            continue
        conn.execute(pgsql.SQL("vacuum (full, analyze) {}").format(pgsql.Identifier(schema, table)).as_string(conn.raw))
        done.append(f"{schema}.{table}")
    return done
