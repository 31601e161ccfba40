"""The only reader of the environment: every knob the product has, with its default.

`GMP_HOME` holds everything a run writes (warehouse, landing, outbox, exports, receipts, reports,
AIRFLOW_HOME). Secrets (`GMP_PSEUDONYM_KEY`, `OPENAI_API_KEY`) are read here and never logged.
"""

from __future__ import annotations

import os
import secrets
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent


def _project_root() -> Path:
    """The repo (or image) root: where governance.yml, dags/ and dbt_project/ live."""
    for candidate in (Path.cwd(), *Path.cwd().parents, PACKAGE_DIR.parent.parent):
        if (candidate / "governance.yml").is_file() and (candidate / "dbt_project").is_dir():
            return candidate
    return PACKAGE_DIR.parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GMP_", extra="ignore")

    home: Path = Field(default=Path(".gmp"))
    project_root: Path = Field(default_factory=_project_root)
    policy: Path | None = None
    env: Literal["demo", "production"] = "demo"
    pseudonym_key: SecretStr | None = None
    llm_provider: Literal["auto", "openai", "offline"] = "auto"
    llm_model: str = "gpt-4.1-mini"
    llm_mode: Literal["sync", "batch"] = "sync"
    llm_concurrency: int = Field(default=4, ge=1, le=64)
    #: How often a deferred draft task asks the vendor whether its batches are done.
    llm_batch_poll_seconds: float = Field(default=60.0, gt=0)
    crm_dir: Path | None = None
    # Where dbt builds: the DuckDB file under GMP_HOME, or Postgres (GMP_PG_*, the names
    # dbt_project/profiles.yml reads for its `postgres` target).
    warehouse: Literal["duckdb", "postgres"] = "duckdb"
    pg_host: str = "127.0.0.1"
    pg_port: int = Field(default=5432, ge=1, le=65535)
    pg_user: str = "postgres"
    pg_password: SecretStr | None = None
    pg_database: str = "marketing"

    # ---- derived paths -----------------------------------------------------------------
    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def policy_path(self) -> Path:
        return (self.policy or self.project_root / "governance.yml").resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.home_dir / "warehouse.duckdb"

    @property
    def dbt_project_dir(self) -> Path:
        return self.project_root / "dbt_project"

    @property
    def dbt_target(self) -> str:
        """The dbt profile target for the chosen warehouse (profiles.yml names them alike)."""
        return self.warehouse

    @property
    def crm_drop_dir(self) -> Path:
        """Where the scheduled ingest looks for the export: GMP_CRM_DIR, else $GMP_HOME/crm_exports/latest."""
        return (self.crm_dir or self.home_dir / "crm_exports" / "latest").expanduser().resolve()

    @property
    def dags_dir(self) -> Path:
        return self.project_root / "dags"

    def path(self, *parts: str) -> Path:
        """A directory under GMP_HOME, created on first use."""
        target = self.home_dir.joinpath(*parts)
        target.mkdir(parents=True, exist_ok=True)
        return target

    # ---- secrets ---------------------------------------------------------------------------
    def resolve_pseudonym_key(self) -> tuple[bytes, str]:
        """Return the HMAC key and where it came from.

        Production refuses to run without GMP_PSEUDONYM_KEY; the demo creates one under GMP_HOME
        (mode 0600) so that pseudonyms stay stable across runs, and says so.
        """
        if self.pseudonym_key is not None and self.pseudonym_key.get_secret_value():
            return self.pseudonym_key.get_secret_value().encode(), "GMP_PSEUDONYM_KEY"
        if self.env == "production":
            raise RuntimeError("GMP_PSEUDONYM_KEY is not set; production refuses to pseudonymize without it")
        key_file = self.path() / "pseudonym.key"
        if not key_file.exists():
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
        key = key_file.read_text().strip()
        if len(key) < 32:
            raise RuntimeError(f"{key_file}: the pseudonym key is empty or too short; delete it to make a new one")
        return key.encode(), f"demo key in {key_file}"


@cache
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change GMP_* between runs)."""
    get_settings.cache_clear()


def openai_key_present() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY"))
