"""Postgres as the warehouse: connections, and what `dbt build --target postgres` needs before it starts.

With `GMP_WAREHOUSE=postgres` the whole pipeline works in Postgres through the same library
functions as on DuckDB (`warehouse.session()` returns a `dialect.PostgresConnection`): the ingest
COPYs validated rows straight into raw.*, its step also runs `install_pseudonym_key` and
`write_governance_tables` (via `governance_tables.write_governance_tables`), and erasure and the
purge end with VACUUM FULL (`dialect.vacuum_full`). `prepare` with `load_raw_from_duckdb` stays
for mirroring an existing DuckDB warehouse into Postgres (migration, the dbt parity tests).

dbt-duckdb runs `governed_marketing.dbt_duckdb_plugin` on every connection; dbt-postgres has no
such hook, so the same duties are done here, once, before dbt runs (`prepare`):

- the governance tables, from the same `governance_tables.governance_frames` the DuckDB plugin
  writes, so policy keeps one source (governance.yml);
- the keyed pseudonym as a SQL function `gmp_private.pseudonym(text)` (see `install_pseudonym_key`
  for why it is a SECURITY DEFINER function over a private key table and not a setting);
- the raw CRM tables the staging models read, bulk-copied (COPY ... FROM STDIN, CSV from Arrow
  batches) from the DuckDB warehouse. The DuckDB-side ingest, with its validation, quarantine and
  suppression door, stays the one ingest path; Postgres mirrors its result.

Nothing here logs row values or the key. Importable without Airflow.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psycopg2
import pyarrow as pa
import pyarrow.csv as pa_csv
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governed_marketing.governance_tables import governance_frames
from governed_marketing.policy import Policy
from governed_marketing.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: The raw tables dbt_project/models/staging/crm/_crm__sources.yml declares (source `crm`).
RAW_TABLES: tuple[str, ...] = ("crm_contacts", "crm_consent_events", "crm_activity", "crm_dsr_requests")
RAW_SCHEMA = "raw"
GOVERNANCE_SCHEMA = "governance"
#: Holds the pseudonym key table and the function; no role but its owner may read the table.
PRIVATE_SCHEMA = "gmp_private"
PSEUDONYM_FUNCTION = f"{PRIVATE_SCHEMA}.pseudonym"

_BATCH_ROWS = 50_000


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
    COPY tells NULL from an empty string; rows are never held in memory all at once.
    """

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self._batches = iter(batches)
        self._buffer = b""
        self.rows = 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        for batch in self._batches:
            if batch.num_rows == 0:
                continue
            self.rows += batch.num_rows
            sink = io.BytesIO()
            pa_csv.write_csv(batch, sink, pa_csv.WriteOptions(include_header=False))
            return sink.getvalue()
        return b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = self._next_chunk()
            if not chunk:
                break
            self._buffer += chunk
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def copy_batches(cur, table: sql.Composable, columns: Sequence[str], batches: Iterable[pa.RecordBatch]) -> int:
    """COPY Arrow batches into an existing table; returns the number of rows sent."""
    stream = _ArrowCsvStream(batches)
    statement = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    cur.copy_expert(statement.as_string(cur), stream)
    return stream.rows


# ---- governance tables ---------------------------------------------------------------------


def _pandas_pg_type(series: pd.Series) -> str:
    """The Postgres type DuckDB would give the same pandas column when it registers the frame."""
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "bigint"
    if pd.api.types.is_float_dtype(series):
        return "double precision"
    return "varchar"


def write_governance_tables(conn: PgConnection, policy: Policy) -> dict[str, int]:
    """Rewrite the governance schema from governance.yml in one transaction (no CASCADE: a view
    built on a policy table makes this fail loudly rather than vanish)."""
    counts: dict[str, int] = {}
    with conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(GOVERNANCE_SCHEMA)))
        for name, frame in governance_frames(policy).items():
            table = sql.Identifier(GOVERNANCE_SCHEMA, name)
            cur.execute(sql.SQL("drop table if exists {}").format(table))
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(str(c)), sql.SQL(_pandas_pg_type(frame[c])))
                for c in frame.columns
            )
            cur.execute(sql.SQL("create table {} ({})").format(table, columns))
            arrow = pa.Table.from_pandas(frame, preserve_index=False)
            counts[name] = copy_batches(cur, table, [str(c) for c in frame.columns], arrow.to_batches())
    conn.commit()
    return counts


# ---- the pseudonym key ---------------------------------------------------------------------


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
                        raise exception 'no pseudonym key in %: run warehouse_postgres.prepare', {schema_text};
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


# ---- raw tables from DuckDB ----------------------------------------------------------------

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


# ---- all of it -----------------------------------------------------------------------------


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

    settings = settings or get_settings()
    policy = policy or load_policy(settings.policy_path)
    created = ensure_database(settings) if create_database else False
    key, _source = settings.resolve_pseudonym_key()
    with session(settings) as conn:
        install_pseudonym_key(conn, key, grant_to=grant_to)
        governance = write_governance_tables(conn, policy)
        raw = load_raw_from_duckdb(conn, duckdb_path) if duckdb_path is not None else {}
    log.info("postgres warehouse %s prepared: %d raw rows, %d policy tables",
             settings.pg_database, sum(raw.values()), len(governance))  # fmt: skip
    return PrepareResult(created, governance, raw)


# ---- erasure -------------------------------------------------------------------------------


@dataclass
class ErasureSubjects:
    """The identifiers of the people to erase (in memory only; never logged)."""

    emails: set[str] = field(default_factory=set)  # normalized: trimmed, lower case
    contact_ids: set[str] = field(default_factory=set)
    pseudonyms: set[str] = field(default_factory=set)  # more are derived from `emails` in Postgres


@dataclass
class PostgresErasureResult:
    """Counts and relation names only: safe for receipts and logs."""

    removed: dict[str, int] = field(default_factory=dict)  # schema.table -> rows deleted
    vacuumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # relation: why


_ERASE_MATCH = {
    "email": ("lower(trim({col}::text)) = any(%(emails)s)", "emails"),
    "contact_id": ("trim({col}::text) = any(%(contact_ids)s)", "contact_ids"),
    "pseudonym": ("{col}::text = any(%(pseudonyms)s)", "pseudonyms"),
}


@dataclass(frozen=True)
class SubjectTable:
    schema: str
    table: str
    subject_column: str
    kind: str  # email | contact_id | pseudonym (privacy.stores.SUBJECT_KINDS)
    has_contact_id: bool  # rows are also matched by contact_id, as the DuckDB erasure does


def subject_relations(conn: PgConnection, manifest_path: Path) -> tuple[list[SubjectTable], list[str]]:
    """Every Postgres base table whose dbt model or source declares `meta.subject_column`
    (privacy.stores' rules, so DuckDB and Postgres erase the same set), and notes on what was left out."""
    from governed_marketing.privacy.stores import _STORING, SPECIAL, SUBJECT_KINDS, manifest_nodes

    with conn.cursor() as cur:
        cur.execute(
            "select c.table_schema, c.table_name, c.column_name from information_schema.columns c"
            " join information_schema.tables t using (table_catalog, table_schema, table_name)"
            " where t.table_type = 'BASE TABLE' and c.table_schema not in ('pg_catalog', 'information_schema')"
        )
        columns: dict[tuple[str, str], set[str]] = {}
        for schema, table, column in cur.fetchall():
            columns.setdefault((schema, table), set()).add(column)
    relations: dict[tuple[str, str], SubjectTable] = {}
    notes: list[str] = []
    for node in manifest_nodes(manifest_path):
        meta = {**(node.get("config", {}).get("meta") or {}), **(node.get("meta") or {})}
        subject = meta.get("subject_column")
        if not subject:
            continue
        is_source = node.get("resource_type") == "source"
        materialized = "source" if is_source else (node.get("config", {}).get("materialized") or "view")
        if materialized not in _STORING:
            continue  # a view stores nothing
        key = (node.get("schema"), node.get("identifier") if is_source else (node.get("alias") or node["name"]))
        if key in SPECIAL:
            notes.append(f"{key[0]}.{key[1]}: handled by the privacy code on DuckDB (mirror it again)")
        elif key not in columns:
            notes.append(f"{key[0]}.{key[1]}: not built in this database")
        elif SUBJECT_KINDS.get(subject) is None or subject not in columns[key]:
            notes.append(f"{key[0]}.{key[1]}: meta.subject_column {subject!r} is not an identity column here")
        else:
            relations[key] = SubjectTable(*key, subject, SUBJECT_KINDS[subject], "contact_id" in columns[key])
    return sorted(relations.values(), key=lambda r: (r.schema, r.table)), notes


def erase_subjects(
    conn: PgConnection,
    subjects: ErasureSubjects,
    manifest_path: Path,
    *,
    vacuum: str = "full",
) -> PostgresErasureResult:
    """Delete these people from every table that declares `meta.subject_column`, then VACUUM them.

    The deletes run in one transaction (all tables or none). Pseudonyms are also derived from the
    emails with `gmp_private.pseudonym`, so the marts keyed by pseudonym are reached without the key
    leaving Postgres. Then each touched table is vacuumed outside the transaction:

    - "full" (default): VACUUM FULL rewrites the table into a new file and unlinks the old one, so
      the deleted tuples are no longer in any file of the database (DESIGN.md: erasure must be
      physical). It takes an ACCESS EXCLUSIVE lock while it rewrites: fine for dbt-built tables that
      dbt rewrites anyway, and erasures are batched hourly.
    - "plain": VACUUM only marks the dead tuples' space reusable; their bytes stay in the page until
      overwritten. Cheaper and non-blocking, but not a physical erasure.

    WAL segments and base backups still hold the rows until they are recycled or expire; that is the
    backup retention's job, not this function's. raw.* is a mirror of DuckDB: erase there
    (governed_marketing.privacy) and mirror again (TRUNCATE + COPY leaves no dead tuples).
    """
    if vacuum not in ("full", "plain"):
        raise ValueError("vacuum must be 'full' or 'plain'")
    result = PostgresErasureResult()
    relations, result.skipped = subject_relations(conn, manifest_path)
    params = {
        "emails": sorted({e.strip().lower() for e in subjects.emails if e and e.strip()}),
        "contact_ids": sorted({c.strip() for c in subjects.contact_ids if c and c.strip()}),
        "pseudonyms": sorted(subjects.pseudonyms),
    }
    try:
        with conn.cursor() as cur:
            cur.execute("select to_regprocedure(%s) is not null", [f"{PSEUDONYM_FUNCTION}(text)"])
            if cur.fetchone()[0] and params["emails"]:
                cur.execute(f"select {PSEUDONYM_FUNCTION}(e) from unnest(%(emails)s::text[]) as e", params)
                params["pseudonyms"] = sorted(set(params["pseudonyms"]) | {row[0] for row in cur.fetchall()})
            for relation in relations:
                matches = [(relation.kind, relation.subject_column)]
                if relation.has_contact_id and relation.kind != "contact_id":
                    matches.append(("contact_id", "contact_id"))
                conditions = []
                for kind, column in matches:
                    template, needle = _ERASE_MATCH[kind]
                    if params[needle]:
                        conditions.append(template.format(col=sql.Identifier(column).as_string(cur)))
                if not conditions:
                    continue
                delete = sql.SQL("delete from {} where ").format(sql.Identifier(relation.schema, relation.table))
                cur.execute(delete.as_string(cur) + " or ".join(conditions), params)
                if cur.rowcount:
                    result.removed[f"{relation.schema}.{relation.table}"] = cur.rowcount
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    previous, conn.autocommit = conn.autocommit, True  # VACUUM cannot run inside a transaction
    try:
        with conn.cursor() as cur:
            for qualified in sorted(result.removed):
                schema, table = qualified.split(".", 1)
                command = "vacuum (full, analyze) {}" if vacuum == "full" else "vacuum (analyze) {}"
                cur.execute(sql.SQL(command).format(sql.Identifier(schema, table)))
                result.vacuumed.append(qualified)
    finally:
        conn.autocommit = previous
    log.info("postgres erasure: %d rows from %d tables, %s vacuum", sum(result.removed.values()),
             len(result.removed), vacuum)  # fmt: skip
    return result
