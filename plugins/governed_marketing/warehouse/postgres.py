"""The Postgres warehouse: a psycopg2 connection behind the Warehouse interface, and what
`dbt build --target postgres` needs before it starts.

The connection is in autocommit mode, so `begin transaction` / `commit` / `rollback` sent as SQL
are the transaction boundaries exactly as on DuckDB. `?` (list) and `$name` (dict) placeholders
become psycopg2's `%s` / `%(name)s` outside quoted text (`translate`); like DuckDB, an
INSERT/UPDATE/DELETE returns one row with its count. A registered frame is a TEMP table loaded by
COPY (CSV rendered from Arrow batches, the bulk path).

dbt-postgres has no plugin hook like dbt-duckdb's, so the keyed pseudonym function is installed
here (`install_pseudonym_key`) and persists in the database. `prepare` with `duckdb_path` mirrors an
existing DuckDB warehouse's raw tables into Postgres (migration, the dbt parity tests).
Nothing here logs parameters, rows or the key. Importable without Airflow.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg2 import sql
from psycopg2.extensions import AsIs, register_adapter
from psycopg2.extensions import connection as PgConnection

from governed_marketing.policy import Policy
from governed_marketing.settings import Settings, get_settings
from governed_marketing.warehouse.base import Warehouse

log = logging.getLogger(__name__)

# numpy scalars reach parameters from pandas frames; psycopg2 does not adapt them by default.
register_adapter(np.int64, lambda v: AsIs(int(v)))
register_adapter(np.int32, lambda v: AsIs(int(v)))
register_adapter(np.float64, lambda v: AsIs(repr(float(v))))
register_adapter(np.bool_, lambda v: AsIs(bool(v)))

#: The raw tables dbt_project/models/staging/crm/_crm__sources.yml declares (source `crm`).
RAW_TABLES: tuple[str, ...] = ("crm_contacts", "crm_consent_events", "crm_activity", "crm_dsr_requests")
RAW_SCHEMA = "raw"
#: Holds the pseudonym key table and the function; no role but its owner may read the table.
PRIVATE_SCHEMA = "gmp_private"
PSEUDONYM_FUNCTION = f"{PRIVATE_SCHEMA}.pseudonym"

_BATCH_ROWS = 50_000


# ---- the connection behind the interface -------------------------------------------------------


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


#: The erasure scan's settings, for its one statement per table. Its joins are meant as hash joins
#: (tokens to needles): the planner cannot know how many tokens a row's text holds, and where it
#: guessed few it chose a nested loop or a merge join instead (a 2-row table of 245 KB texts took
#: 145 s; 26M tokens were sorted on disk). Sorts and the rows' texts stay in memory (4 MB by default).
_SCAN_SETTINGS = {"enable_nestloop": "off", "enable_mergejoin": "off", "work_mem": "256MB"}


class PostgresWarehouse(Warehouse):
    engine = "postgres"
    stable_row_ids = False  # an UPDATE writes a new tuple: the row gets a new ctid
    sole_writer = False  # other sessions may insert the same key meanwhile

    def __init__(self, raw: PgConnection) -> None:
        raw.autocommit = True
        self.raw = raw

    def execute(self, query: str, params: Sequence | Mapping | None = None) -> PostgresResult:
        if isinstance(params, Mapping):
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
        """The frame as a TEMP table `name`, bulk-loaded with COPY (replaces an earlier one), and analyzed:
        autovacuum never analyzes a temporary table, and without statistics the planner guesses its
        size (the erasure scan then sorted 26M word tokens to merge-join them to 4,430 names)."""
        self.unregister(name)
        self._create_and_copy(sql.Identifier(name), frame, temporary=True)
        with self.raw.cursor() as cur:
            cur.execute(sql.SQL("analyze {}").format(sql.Identifier(name)))

    def unregister(self, name: str) -> None:
        with self.raw.cursor() as cur:
            cur.execute(sql.SQL("drop table if exists pg_temp.{}").format(sql.Identifier(name)))

    def cursor(self):
        return self.raw.cursor()

    def close(self) -> None:
        self.raw.close()

    def temp_table(self, name: str, frame: pd.DataFrame) -> None:
        self.register(name, frame)  # already a session-local table

    def replace_table(self, schema: str, name: str, frame: pd.DataFrame) -> int:
        """No CASCADE: a view built on the table makes this fail loudly rather than vanish."""
        target = sql.Identifier(schema, name)
        with self.raw.cursor() as cur:
            cur.execute(sql.SQL("drop table if exists {}").format(target))
        return self._create_and_copy(target, frame, temporary=False)

    def _create_and_copy(self, target: sql.Identifier, frame: pd.DataFrame, *, temporary: bool) -> int:
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        columns = [str(c) for c in table.column_names]
        definition = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_arrow_pg_type(f.type)))
            for c, f in zip(columns, table.schema, strict=True)
        )
        create = "create temp table {} ({})" if temporary else "create table {} ({})"
        with self.raw.cursor() as cur:
            cur.execute(sql.SQL(create).format(target, definition))
            return copy_batches(cur, target, columns, table.to_batches()) if table.num_rows else 0

    def row_id(self, alias: str = "") -> str:
        return f"{alias}.ctid::text" if alias else "ctid::text"  # as text: comparable to a parameter

    def rows_mentioning(
        self,
        relation: str,
        text_sql: str,
        select_sql: str,
        patterns: Mapping[str, str],
        *,
        names: bool,
        columns: Sequence[str],
    ) -> list[tuple]:
        """Tokens cut from each row's text with `regexp_matches(..., 'g')` and joined to the needles by
        equality (hash joins), as DuckDB does: the cost grows with the rows, not rows x needles (a
        substring test per needle and row ran for hours at a million contacts and thousands of
        erasures). Word tokens use the server's `\\w`, which follows its LC_CTYPE: where that does not
        classify non-ASCII letters as letters (`C`), a last name is looked for by substring instead,
        so a name like "müller" is never cut in two and missed. Row ids are ctids as text; `columns`
        is not needed (the row's text is tokenized whole)."""
        email = patterns["email"].replace("'", "''")
        phone = patterns["phone"].replace("'", "''")
        name_hits, by_name = "", ""
        if names and self._unicode_words:
            # Materialized: the first-name test runs only on the rows whose words hold a last name.
            # The tokens do not carry the row's text: where the planner hashed them (a table of few,
            # long rows), every token held a copy of it.
            name_hits = """name_hits as materialized (
                select distinct w.rid, n.first_key
                from (select rid, (regexp_matches(txt, '\\w+', 'g'))[1] as tok from rows_) w
                join scan_names n on w.tok = n.last_key
            ),"""
            by_name = (
                "union select h.rid from name_hits h join rows_ r on r.rid = h.rid where strpos(r.txt, h.first_key) > 0"
            )
        elif names:  # rows x names substring tests: slower, but no name is cut in two by an ASCII-only \\w
            by_name = (
                "union select r.rid from rows_ r"
                " where exists (select 1 from scan_names n where strpos(r.txt, n.last_key) > 0)"
            )
        # Session settings, reset after (the connection is in autocommit mode, where SET LOCAL does
        # nothing). In a transaction the statement failed, RESET cannot run: the rollback undoes the SET.
        for setting, value in _SCAN_SETTINGS.items():
            self.execute(f"set {setting} = '{value}'")
        try:
            rows = self.execute(
                f"""
            with rows_ as materialized (select ctid as rid, {text_sql} as txt from {relation}),
            email_tokens as (
                select rid, (regexp_matches(txt, '{email}', 'g'))[1] as tok from rows_ where strpos(txt, '@') > 0
            ),
            phone_tokens as (
                select rid, regexp_replace((regexp_matches(txt, '{phone}', 'g'))[1], '[^0-9]', '', 'g') as tok
                from rows_ where txt ~ '[0-9]'
            ),
            {name_hits}
            candidates as (
                select rid from email_tokens where rtrim(tok, '.') in (select email from scan_emails)
                union
                select rid from phone_tokens
                where (case when tok like '00%' then substr(tok, 3) else tok end) in (select digits from scan_phones)
                {by_name}
            )
            select ctid::text, {select_sql} from {relation}
            where ctid = any(array(select rid from candidates))
            """
            ).fetchall()
        finally:
            if self.raw.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_INERROR:
                for setting in _SCAN_SETTINGS:
                    self.execute(f"reset {setting}")
        return [tuple(row) for row in rows]

    @functools.cached_property
    def _unicode_words(self) -> bool:
        """Whether this server's regular expressions take a non-ASCII letter for a word character
        and lower() folds it (LC_CTYPE C.UTF-8 or a language's UTF-8 locale; not `C`): asked once
        per connection, not once per table scanned."""
        found = self.execute("select 'ü' ~ '^\\w$' and lower('Ü') = 'ü'").fetchone()
        return bool(found and found[0])

    def checkpoint(self) -> None:
        """Nothing: Postgres' checkpoints are the server's job."""

    def sqlalchemy_url(self) -> str | None:
        """A SQLAlchemy URL to the database `conn` is connected to, for GX's SQL datasource.

        The psycopg2 driver is named explicitly (`postgresql+psycopg2`): with SQLAlchemy 2.1 a bare
        `postgresql://` may mean psycopg 3. Holds the password when there is one: never log it.
        """
        from sqlalchemy.engine import URL

        info = self.raw.info
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

    def install_pseudonym_key(self, key: bytes) -> None:
        self.raw.autocommit = False
        try:
            install_pseudonym_key(self.raw, key)
        finally:
            self.raw.autocommit = True

    def database_file(self) -> Path | None:
        return None

    def label(self) -> str:
        return "postgres:" + str(self.execute("select current_database()").fetchall()[0][0])

    def vacuum_full(self, schemas: Sequence[str] | None = None) -> list[str]:
        """Postgres' physical erasure: VACUUM (FULL, ANALYZE) rewrites each table into a new file and
        unlinks the old one, so deleted tuples are in no file of the database any more.

        Every base table outside the system schemas (or in `schemas`); it takes an ACCESS EXCLUSIVE
        lock per table while it rewrites, which is why erasures and purges are batched. Returns the
        tables vacuumed. (WAL and base backups keep old rows until they expire: backup retention.)
        """
        rows = self.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_type = 'BASE TABLE' and table_catalog = current_database()"
            " and table_schema not in ('pg_catalog', 'information_schema')"
            " order by table_schema, table_name"
        ).fetchall()
        done = []
        for schema, table in rows:
            if schemas is not None and schema not in schemas:
                continue
            self.execute(sql.SQL("vacuum (full, analyze) {}").format(sql.Identifier(schema, table)).as_string(self.raw))
            done.append(f"{schema}.{table}")
        return done


# ---- connections ---------------------------------------------------------------------------


def connect(settings: Settings | None = None, *, database: str | None = None, autocommit: bool = False) -> PgConnection:
    """A psycopg2 connection from GMP_PG_* (the same variables dbt's `postgres` target reads), in UTC."""
    settings = settings or get_settings()
    conn = psycopg2.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        user=settings.pg_user,
        password=(settings.pg_password.get_secret_value() if settings.pg_password else "") or None,
        dbname=database or settings.pg_database,
        application_name="governed_marketing",
        options="-c TimeZone=UTC",
    )
    conn.autocommit = autocommit
    return conn


@contextmanager
def session(settings: Settings | None = None, *, database: str | None = None) -> Iterator[PgConnection]:
    """A connection that commits on success, rolls back on error and is always closed."""
    conn = connect(settings, database=database)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def ensure_database(
    settings: Settings | None = None, name: str | None = None, *, maintenance_db: str = "postgres"
) -> bool:
    """Create the database if it does not exist (tests, first runs). True when it was created."""
    settings = settings or get_settings()
    name = name or settings.pg_database
    conn = connect(settings, database=maintenance_db, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", [name])
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
            return True
    finally:
        conn.close()


def drop_database(
    settings: Settings | None = None, name: str | None = None, *, maintenance_db: str = "postgres"
) -> None:
    """Drop a database, closing its other sessions first (tests clean up their throwaway databases)."""
    settings = settings or get_settings()
    name = name or settings.pg_database
    conn = connect(settings, database=maintenance_db, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    finally:
        conn.close()


# ---- COPY from Arrow -----------------------------------------------------------------------


class _ArrowCsvStream(io.RawIOBase):
    """A read-only file over CSV bytes rendered batch by batch, for `copy_expert`.

    Arrow writes null as an unquoted empty field and '' as `""`, which is exactly how Postgres' CSV
    COPY tells NULL from an empty string; rows are never held in memory all at once: a batch is
    rendered ROWS_PER_CHUNK rows at a time, and a read hands out the next bytes of the current chunk
    by position (cutting the rest of the buffer off on every 8 KiB read copied a million-row chunk
    thousands of times: a 1M-contact COPY ran for minutes at full CPU).
    """

    ROWS_PER_CHUNK = 50_000

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self._pieces = (
            batch.slice(start, self.ROWS_PER_CHUNK)
            for batch in batches
            for start in range(0, batch.num_rows, self.ROWS_PER_CHUNK)
        )
        self._chunk = b""
        self._at = 0
        self.rows = 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        for piece in self._pieces:
            self.rows += piece.num_rows
            sink = io.BytesIO()
            pa_csv.write_csv(piece, sink, pa_csv.WriteOptions(include_header=False))
            return sink.getvalue()
        return b""

    def read(self, size: int = -1) -> bytes:
        parts = []
        wanted = size
        while wanted != 0:
            if self._at >= len(self._chunk):
                self._chunk, self._at = self._next_chunk(), 0
                if not self._chunk:
                    break
            end = len(self._chunk) if wanted < 0 else min(len(self._chunk), self._at + wanted)
            parts.append(self._chunk[self._at : end])
            if wanted > 0:
                wanted -= end - self._at
            self._at = end
        return b"".join(parts)


def copy_batches(cur, table: sql.Composable, columns: Sequence[str], batches: Iterable[pa.RecordBatch]) -> int:
    """COPY Arrow batches into an existing table; returns the number of rows sent."""
    stream = _ArrowCsvStream(batches)
    statement = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    cur.copy_expert(statement.as_string(cur), stream)
    return stream.rows


# ---- the pseudonym key --------------------------------------------------------------------


def install_pseudonym_key(conn: PgConnection, key: bytes, *, grant_to: Sequence[str] = ()) -> None:
    """Install pgcrypto, the private key table and `gmp_private.pseudonym(text)`; replace the key.

    Why not a setting: `ALTER DATABASE ... SET gmp.pseudonym_key` is stored in pg_db_role_setting,
    which every role can read, and `current_setting()` hands it to any model an analyst writes
    (one `select current_setting(...)` and the key is in a table). Here the key sits in a table of a
    schema whose table privileges belong to the loading role only; the function runs as that owner
    (SECURITY DEFINER, pinned search_path) and returns HMACs, never the key. Roles in `grant_to`
    (dbt's role, when it is not the loader) get EXECUTE only.

    The key travels as COPY data, not as SQL text, so it cannot reach statement logs
    (log_statement), pg_stat_statements or pg_stat_activity. Same bytes as pseudonym.py:
    HMAC-SHA256 over the UTF-8 normalized email, 64 lower-case hex characters.
    """
    if len(key) < 16:
        raise ValueError("the pseudonym key is empty or too short")
    with conn.cursor() as cur:
        cur.execute("create extension if not exists pgcrypto")
        cur.execute(
            "select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace"
            " where e.extname = 'pgcrypto'"
        )
        (crypto_schema,) = cur.fetchone()
        private = sql.Identifier(PRIVATE_SCHEMA)
        key_table = sql.Identifier(PRIVATE_SCHEMA, "pseudonym_key")
        cur.execute(sql.SQL("create schema if not exists {}").format(private))
        cur.execute(sql.SQL("revoke all on schema {} from public").format(private))
        cur.execute(
            sql.SQL(
                "create table if not exists {} (singleton boolean primary key default true check (singleton),"
                " key bytea not null)"
            ).format(key_table)
        )
        cur.execute(sql.SQL("revoke all on table {} from public").format(key_table))
        cur.execute(
            sql.SQL(
                """
                create or replace function {function}(normalized_email text) returns varchar
                language plpgsql stable strict security definer parallel safe
                set search_path = pg_catalog, pg_temp
                as $body$
                declare
                    secret bytea;
                begin
                    select k.key into secret from {key_table} as k;
                    if secret is null then
                        raise exception 'no pseudonym key in %: run warehouse.postgres.prepare', {schema_text};
                    end if;
                    return encode({crypto}.hmac(convert_to(normalized_email, 'UTF8'), secret, 'sha256'), 'hex');
                end
                $body$
                """
            ).format(
                function=sql.Identifier(PRIVATE_SCHEMA, "pseudonym"),
                key_table=key_table,
                schema_text=sql.Literal(PRIVATE_SCHEMA),
                crypto=sql.Identifier(crypto_schema),
            )
        )
        function = sql.SQL("{}(text)").format(sql.Identifier(PRIVATE_SCHEMA, "pseudonym"))
        cur.execute(sql.SQL("revoke all on function {} from public").format(function))
        for role in grant_to:
            cur.execute(sql.SQL("grant usage on schema {} to {}").format(private, sql.Identifier(role)))
            cur.execute(sql.SQL("grant execute on function {} to {}").format(function, sql.Identifier(role)))
        cur.execute(sql.SQL("delete from {}").format(key_table))
        payload = io.StringIO()
        csv.writer(payload).writerow([r"\x" + key.hex()])  # bytea hex input; CSV gives '\' no meaning
        payload.seek(0)
        cur.copy_expert(sql.SQL("copy {} (key) from stdin with (format csv)").format(key_table).as_string(cur), payload)
    conn.commit()


# ---- raw tables from DuckDB ---------------------------------------------------------------

_DUCKDB_TYPES = {
    "VARCHAR": "varchar",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "SMALLINT": "smallint",
    "BOOLEAN": "boolean",
    "DOUBLE": "double precision",
    "FLOAT": "real",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "JSON": "jsonb",
}
_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def pg_type(duckdb_type: str) -> str:
    """The Postgres column type for a DuckDB one (the raw layer's types only)."""
    upper = duckdb_type.upper()
    if upper in _DUCKDB_TYPES:
        return _DUCKDB_TYPES[upper]
    match = _DECIMAL.match(upper)
    if match:
        return f"numeric({match.group(1)}, {match.group(2)})"
    raise ValueError(f"no Postgres type for DuckDB type {duckdb_type!r}")


def _duckdb_table_ddl(duck, schema: str, table: str) -> tuple[list[str], sql.Composable]:
    columns = duck.execute(
        "select column_name, data_type, is_nullable from information_schema.columns"
        " where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, table],
    ).fetchall()
    if not columns:
        raise LookupError(f"{schema}.{table} does not exist in the DuckDB warehouse: ingest an export first")
    keys = duck.execute(
        "select constraint_column_names from duckdb_constraints()"
        " where schema_name = ? and table_name = ? and constraint_type = 'PRIMARY KEY'",
        [schema, table],
    ).fetchall()
    parts = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(name), sql.SQL(pg_type(kind)), sql.SQL(" not null" if nullable == "NO" else "")
        )
        for name, kind, nullable in columns
    ]
    if keys:
        parts.append(sql.SQL("primary key ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in keys[0][0])))
    ddl = sql.SQL("create table if not exists {} ({})").format(sql.Identifier(schema, table), sql.SQL(", ").join(parts))
    return [name for name, _, _ in columns], ddl


def load_raw_from_duckdb(
    conn: PgConnection, duckdb_path: Path, tables: Sequence[str] = RAW_TABLES, *, schema: str = RAW_SCHEMA
) -> dict[str, int]:
    """Mirror raw tables from the DuckDB warehouse into Postgres in one transaction.

    Each table is created with the DuckDB column types (and primary key) when missing, then
    TRUNCATEd and refilled by COPY: the DuckDB raw layer is the current state (erasures included),
    and TRUNCATE writes a new file, so removed rows do not linger as dead tuples.
    """
    import duckdb

    counts: dict[str, int] = {}
    duck = duckdb.connect(str(duckdb_path), read_only=True)
    try:
        duck.execute("set TimeZone = 'UTC'")
        with conn.cursor() as cur:
            cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
            for table in tables:
                columns, ddl = _duckdb_table_ddl(duck, schema, table)
                cur.execute(ddl)
                target = sql.Identifier(schema, table)
                cur.execute(sql.SQL("truncate table {}").format(target))
                select = "select {} from {}.{}".format(
                    ", ".join(f'"{c}"' for c in columns), f'"{schema}"', f'"{table}"'
                )
                reader = duck.sql(select).to_arrow_reader(_BATCH_ROWS)
                counts[table] = copy_batches(cur, target, columns, reader)
                cur.execute(sql.SQL("analyze {}").format(target))
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        duck.close()
    return counts


# ---- all of it ----------------------------------------------------------------------------


@dataclass
class PrepareResult:
    """Counts only (safe for logs and XCom)."""

    database_created: bool
    governance_rows: dict[str, int] = field(default_factory=dict)
    raw_rows: dict[str, int] = field(default_factory=dict)


def prepare(
    settings: Settings | None = None,
    policy: Policy | None = None,
    *,
    duckdb_path: Path | None = None,
    create_database: bool = False,
    grant_to: Sequence[str] = (),
) -> PrepareResult:
    """Everything `dbt build --target postgres` needs, before it runs: the key function, the
    governance tables and (when `duckdb_path` is given) the raw tables mirrored from DuckDB."""
    from governed_marketing.policy import load_policy
    from governed_marketing.warehouse.governance import write_governance_tables

    settings = settings or get_settings()
    policy = policy or load_policy(settings.policy_path)
    created = ensure_database(settings) if create_database else False
    key, _source = settings.resolve_pseudonym_key()
    with session(settings) as conn:
        install_pseudonym_key(conn, key, grant_to=grant_to)
        raw = load_raw_from_duckdb(conn, duckdb_path) if duckdb_path is not None else {}
    with closing(PostgresWarehouse(connect(settings))) as warehouse:
        governance = write_governance_tables(warehouse, policy)
    log.info("postgres warehouse %s prepared: %d raw rows, %d policy tables",
             settings.pg_database, sum(raw.values()), len(governance))  # fmt: skip
    return PrepareResult(created, governance, raw)
