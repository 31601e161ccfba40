"""The one interface every library module speaks to, whatever engine holds the warehouse.

The call surface is DuckDB's, because the library was written against it: `execute(sql, params)`
returns a result with `fetchall()`, `fetchone()`, `df()`; `register`/`unregister` expose a frame
to SQL. Where the engines need different SQL, the difference is a method here, implemented once
per engine (as Cosmos keeps one profile class per engine), so no caller asks which engine it has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pandas as pd


class Result(Protocol):
    """What `execute` returns: rows (fetched once), a frame, and the column descriptions."""

    description: Any

    def fetchall(self) -> list[tuple]: ...

    def fetchone(self) -> tuple | None: ...

    def df(self) -> pd.DataFrame: ...


class Warehouse(ABC):
    """A connection to the warehouse (DuckDB file or Postgres database), closed by its opener."""

    #: "duckdb" or "postgres": the dbt target of the same name builds this warehouse.
    engine: ClassVar[str]
    #: Whether a row keeps its row id when it is updated (Postgres moves an updated row: new ctid).
    stable_row_ids: ClassVar[bool]
    #: Whether no other session can write while this connection holds the warehouse (a DuckDB file
    #: has one read-write process): a key absent when a statement starts stays absent until it ends.
    sole_writer: ClassVar[bool]

    @abstractmethod
    def execute(self, query: str, params: Sequence | Mapping | None = None) -> Result: ...

    @abstractmethod
    def register(self, name: str, frame: pd.DataFrame) -> None: ...

    @abstractmethod
    def unregister(self, name: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def temp_table(self, name: str, frame: pd.DataFrame) -> None:
        """A session-local table holding the frame, for joins in SQL (replaces an earlier one)."""

    @abstractmethod
    def replace_table(self, schema: str, name: str, frame: pd.DataFrame) -> int:
        """`schema.name` dropped and rewritten from the frame (inside the caller's transaction)."""

    @abstractmethod
    def row_id(self, alias: str = "") -> str:
        """The SQL expression of a row's physical id (DuckDB rowid, Postgres ctid as text), optionally qualified:
        the values `rows_mentioning` returns compare equal to it."""

    @abstractmethod
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
        """(row id, *selected values) of the rows whose lower-cased text may name someone in the
        scan's needle tables (scan_emails, scan_phones and, with `names`, scan_names). A superset:
        the caller's matcher decides. `patterns`: the token regexes (email, phone, word), where used.
        `columns`: the text columns `text_sql` joins with chr(31), for an engine that can work per cell."""

    @abstractmethod
    def checkpoint(self) -> None:
        """Make committed changes durable in the warehouse's own files, where that is the caller's job."""

    @abstractmethod
    def sqlalchemy_url(self) -> str | None:
        """A SQLAlchemy URL GX can open itself, or None when only this connection may read (a DuckDB
        file has one writer): then the caller validates a frame instead."""

    @abstractmethod
    def install_pseudonym_key(self, key: bytes) -> None:
        """Make the keyed pseudonym callable from SQL (dbt's models call it), the key out of any SQL text."""

    @abstractmethod
    def database_file(self) -> Path | None:
        """The file holding the warehouse, when it is one (not for a server or an in-memory database)."""

    @abstractmethod
    def label(self) -> str:
        """Which warehouse this is, for records that must not confuse two warehouses (no secrets)."""

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all (both engines accept these statements)."""
        self.execute("begin transaction")
        try:
            yield
        except BaseException:
            self.execute("rollback")
            raise
        self.execute("commit")

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
