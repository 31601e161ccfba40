"""The only reader of the environment: every knob the product has, with its default.

`GMP_HOME` holds everything a run writes (warehouse, landing, outbox, exports, receipts, reports,
AIRFLOW_HOME), all of it personal data: loading settings makes the process's new files owner-only
(umask 077) and GMP_HOME and its folders 0700. Secrets (`GMP_PSEUDONYM_KEY`, `GMP_AUDIT_KEY`,
`GMP_EXPORT_ENCRYPTION_KEY`, `OPENAI_API_KEY`, `HUBSPOT_ACCESS_TOKEN`) are read here and never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from governed_marketing.pseudonym import check_key

PACKAGE_DIR = Path(__file__).resolve().parent

log = logging.getLogger(__name__)

#: New files owner-only (0600), new directories 0700: GMP_HOME holds personal data.
OWNER_ONLY_UMASK = 0o077


def restrict_process_umask() -> None:
    """Make every file this process (and its children: dbt, Airflow) creates from now owner-only."""
    os.umask(OWNER_ONLY_UMASK)


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
    #: Keys the audit log's hash chain (HMAC); held apart from the warehouse. Production requires it.
    audit_key: SecretStr | None = None
    #: A Fernet key: when set, access/portability exports are written encrypted (`*.fernet`).
    export_encryption_key: SecretStr | None = None
    #: Keys the unsubscribe tokens and Message-IDs of delivered mail (HMAC). Production requires it.
    delivery_key: SecretStr | None = None
    #: The SMTP relay when Airflow has no `smtp_default` connection: smtp://user:pass@host:587?security=starttls
    smtp_url: SecretStr | None = None
    llm_provider: Literal["auto", "openai", "offline"] = "auto"
    llm_model: str = "gpt-4.1-mini"
    llm_mode: Literal["sync", "batch"] = "sync"
    llm_concurrency: int = Field(default=4, ge=1, le=64)
    #: How often a deferred draft task asks the vendor whether its batches are done.
    llm_batch_poll_seconds: float = Field(default=60.0, gt=0)
    crm_dir: Path | None = None
    #: The HubSpot private app's token when no Airflow connection `hubspot_default` holds it.
    hubspot_access_token: SecretStr | None = Field(default=None, validation_alias="HUBSPOT_ACCESS_TOKEN")
    #: Another HubSpot-compatible base URL (tests, a proxy); default https://api.hubapi.com.
    hubspot_base_url: str | None = None
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
        """A directory under GMP_HOME, created owner-only (0700) on first use."""
        self.secure_home()
        target = self.home_dir.joinpath(*parts)
        if not target.is_dir():
            target.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (target, *target.parents):
            if folder == self.home_dir:
                break
            if folder.stat().st_mode & 0o077:
                try:
                    folder.chmod(0o700)
                except PermissionError:  # another uid's folder: the 0700 home still shuts others out
                    log.warning("%s is not ours to make owner-only", folder)
        return target

    def secure_home(self) -> str | None:
        """Create GMP_HOME 0700, or make an existing one owner-only; return what was changed, if anything.

        A 0700 home keeps every file below it from other local users, whatever the files' own modes.
        """
        home = self.home_dir
        if not home.exists():
            home.mkdir(mode=0o700, parents=True)
            return None
        mode = stat.S_IMODE(home.stat().st_mode)
        if not mode & 0o077:
            return None
        try:
            home.chmod(0o700)
        except PermissionError:  # not ours (a volume owned by another uid): say so, do not stop the run
            message = f"GMP_HOME {home} is {mode:04o} and not ours to change; make it owner-only (0700)"
            log.warning(message)
            return message
        message = f"GMP_HOME {home} was {mode:04o}, readable by other local users; made it owner-only (0700)"
        log.warning(message)
        return message

    # ---- secrets ---------------------------------------------------------------------------
    def resolve_pseudonym_key(self) -> tuple[bytes, str]:
        """Return the HMAC key and where it came from.

        Production refuses to run without GMP_PSEUDONYM_KEY; the demo creates one under GMP_HOME
        (mode 0600) so that pseudonyms stay stable across runs, and says so.
        """
        if self.pseudonym_key is not None and self.pseudonym_key.get_secret_value():
            check_key("GMP_PSEUDONYM_KEY", self.pseudonym_key.get_secret_value())
            return self.pseudonym_key.get_secret_value().encode(), "GMP_PSEUDONYM_KEY"
        if self.env == "production":
            raise RuntimeError("GMP_PSEUDONYM_KEY is not set; production refuses to pseudonymize without it")
        key_file = self.path() / "pseudonym.key"
        key = _demo_key(key_file)
        if len(key) < 32:
            raise RuntimeError(f"{key_file}: the pseudonym key is empty or too short; delete it to make a new one")
        return key.encode(), f"demo key in {key_file}"

    def resolve_audit_key(self, *, create: bool = True) -> tuple[bytes, str]:
        """Return the audit chain's HMAC key and where it came from.

        Held apart from the warehouse, so whoever can write the warehouse cannot re-hash the chain.
        Production refuses to run without GMP_AUDIT_KEY; the demo keeps one in GMP_HOME/audit/audit.key
        (0600), as it does the pseudonym key.
        """
        if self.audit_key is not None and self.audit_key.get_secret_value():
            check_key("GMP_AUDIT_KEY", self.audit_key.get_secret_value())
            return self.audit_key.get_secret_value().encode(), "GMP_AUDIT_KEY"
        if self.env == "production":
            raise RuntimeError(
                "GMP_AUDIT_KEY is not set; production refuses to write or verify the audit log without it"
            )
        key_file = self.path("audit") / "audit.key"
        if not key_file.exists() and not create:
            raise FileNotFoundError(f"{key_file} is missing and GMP_AUDIT_KEY is not set: no audit key")
        key = _demo_key(key_file)
        if len(key) < 64:
            raise RuntimeError(
                f"{key_file}: the audit key is empty or too short; restore it (a new key breaks the chain)"
            )
        return key.encode(), f"demo key in {key_file}"

    def resolve_delivery_key(self) -> bytes:
        """The HMAC key of unsubscribe tokens and Message-IDs: GMP_DELIVERY_KEY, else a demo key in GMP_HOME.

        A key apart from the pseudonym key: a token in a forwarded mail must not help anyone compute
        the warehouse's pseudonyms. Production refuses to send without it.
        """
        if self.delivery_key is not None and self.delivery_key.get_secret_value():
            check_key("GMP_DELIVERY_KEY", self.delivery_key.get_secret_value())
            return self.delivery_key.get_secret_value().encode()
        if self.env == "production":
            raise RuntimeError("GMP_DELIVERY_KEY is not set; production refuses to send or unsubscribe without it")
        key = _demo_key(self.path() / "delivery.key")
        if len(key) < 32:
            raise RuntimeError(f"{self.home_dir / 'delivery.key'}: the delivery key is too short; delete it")
        return key.encode()

    def resolve_export_key(self) -> bytes | None:
        """The Fernet key that encrypts access exports, or None (exports are written in the clear)."""
        if self.export_encryption_key is None or not self.export_encryption_key.get_secret_value():
            return None
        from cryptography.fernet import Fernet

        value = self.export_encryption_key.get_secret_value().encode()
        try:
            Fernet(value)
        except ValueError:
            raise RuntimeError(
                "GMP_EXPORT_ENCRYPTION_KEY is not a Fernet key (32 bytes, url-safe base64). Generate one: "
                'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
            ) from None
        return value


@cache
def get_settings() -> Settings:
    """The settings, once per process; also the point every entry (CLI, `gmp run`, Airflow task) passes first,
    so it makes the process's new files owner-only and GMP_HOME 0700."""
    restrict_process_umask()
    settings = Settings()
    settings.secure_home()
    return settings


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change GMP_* between runs)."""
    get_settings.cache_clear()


def openai_key_present() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY"))


def _demo_key(key_file: Path) -> str:
    """A demo key kept in GMP_HOME: made once (32 random bytes, hex, owner-only), then read back."""
    if not key_file.exists():
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return key_file.read_text().strip()
