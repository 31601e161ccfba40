"""Postgres for the tests: one FRESH database per test module on the server of GMP_TEST_POSTGRES_URL.

Default URL: postgresql://postgres@127.0.0.1:5432/postgres (the maintenance database; each module
gets its own `gmp_test_<random>` database, dropped afterwards). No server answering: the tests are
skipped with the reason, and CI (GMP_REQUIRE_POSTGRES=1, see tests/conftest.py) turns that skip
into a failure.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    maintenance_db: str

    def env(self, database: str) -> dict[str, str]:
        """The GMP_PG_* variables Settings and dbt_project/profiles.yml read."""
        return {
            "GMP_PG_HOST": self.host,
            "GMP_PG_PORT": str(self.port),
            "GMP_PG_USER": self.user,
            "GMP_PG_PASSWORD": self.password,
            "GMP_PG_DATABASE": database,
        }

    def connect(self, database: str, *, autocommit: bool = True):
        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password or None,
            dbname=database, connect_timeout=5, options="-c TimeZone=UTC",
        )  # fmt: skip
        conn.autocommit = autocommit
        return conn


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    url = os.environ.get("GMP_TEST_POSTGRES_URL") or DEFAULT_URL
    try:
        params = parse_dsn(url)
    except psycopg2.ProgrammingError as exc:
        pytest.skip(f"GMP_TEST_POSTGRES_URL is not a valid Postgres URL: {exc}")
    server = PgServer(
        host=params.get("host", "127.0.0.1"),
        port=int(params.get("port", 5432)),
        user=params.get("user", "postgres"),
        password=params.get("password", ""),
        maintenance_db=params.get("dbname", "postgres"),
    )
    try:
        server.connect(server.maintenance_db).close()
    except psycopg2.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"no Postgres server answers at {server.host}:{server.port} (GMP_TEST_POSTGRES_URL): {reason}")
    return server


@contextmanager
def fresh_database(pg_server: PgServer, *, options: str = "") -> Iterator[str]:
    """A randomly named database (created with `options`, e.g. a locale), dropped with its sessions afterwards."""
    name = f"gmp_test_{secrets.token_hex(6)}"
    admin = pg_server.connect(pg_server.maintenance_db)
    try:
        with admin.cursor() as cur:
            cur.execute(f'create database "{name}" {options}')
    finally:
        admin.close()
    try:
        yield name
    finally:
        admin = pg_server.connect(pg_server.maintenance_db)
        try:
            with admin.cursor() as cur:
                cur.execute(f'drop database if exists "{name}" with (force)')
        finally:
            admin.close()


@pytest.fixture(scope="module")
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A fresh, randomly named database for this module, dropped (sessions forced out) afterwards."""
    with fresh_database(pg_server) as name:
        yield name
