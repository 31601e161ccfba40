"""Data at rest: GMP_HOME owner-only, keys with enough material, the local Airflow on loopback only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from governed_marketing.orchestration.pipeline_run import airflow_environment
from governed_marketing.settings import Settings
from pydantic import SecretStr

from tests.conftest import PROJECT_ROOT
from tests.unit.privacy.conftest import write_export

# What an Airflow task does first (settings), then an ingest and an access export: warehouse, landing,
# exports, the demo keys, all created by the library in a process started with a permissive umask.
_INGEST = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    os.umask(0o022)
    from governed_marketing import warehouse
    from governed_marketing.crm.ingest import ingest_export
    from governed_marketing.policy import load_policy
    from governed_marketing.privacy import audit
    from governed_marketing.settings import get_settings

    settings = get_settings()
    settings.resolve_pseudonym_key()
    with warehouse.session(settings=settings) as conn:
        ingest_export(Path(sys.argv[1]), conn=conn, policy=load_policy(), landing_root=settings.path("landing"))
        audit.record(conn, actor="test", action="ingest", purpose="crm_ingest", counts={"rows": 4})
    (settings.path("outbox", "spring") / "x.jsonl").write_text("{}")
    """
)


def _readable_by_others(home: Path) -> list[str]:
    found = []
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(home.parent)} {mode:04o}")
    return found


def _run_ingest(home: Path, export: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GMP_")}
    env |= {"GMP_HOME": str(home)}  # demo: the pseudonym and audit keys are made under GMP_HOME
    result = subprocess.run(
        [sys.executable, "-c", _INGEST, str(export)], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_fresh_gmp_home_holds_nothing_other_users_can_read(tmp_path):
    home = tmp_path / "home"
    _run_ingest(home, write_export(tmp_path / "export"))
    assert (home / "warehouse.duckdb").exists() and any((home / "landing").rglob("contacts.csv"))
    assert _readable_by_others(home) == []


def test_an_existing_world_readable_gmp_home_is_made_owner_only_and_said_so(tmp_path, caplog):
    home = tmp_path / "home"
    (home / "landing").mkdir(parents=True, mode=0o755)
    home.chmod(0o755)
    (home / "landing").chmod(0o755)
    message = Settings(home=home).secure_home()
    assert message and "0755" in message and "0700" in message
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    Settings(home=home).path("landing")
    assert stat.S_IMODE((home / "landing").stat().st_mode) == 0o700


@pytest.mark.parametrize("variable", ["GMP_PSEUDONYM_KEY", "GMP_AUDIT_KEY"])
@pytest.mark.parametrize("value", ["x", "k" * 31, "ab" * 31, "0123456789abcdef" * 2])
def test_production_refuses_a_key_with_less_than_32_bytes_naming_the_variable(tmp_path, variable, value):
    field = {"GMP_PSEUDONYM_KEY": "pseudonym_key", "GMP_AUDIT_KEY": "audit_key"}[variable]
    settings = Settings(env="production", home=tmp_path, **{field: SecretStr(value)})
    resolve = settings.resolve_pseudonym_key if variable == "GMP_PSEUDONYM_KEY" else settings.resolve_audit_key
    with pytest.raises(RuntimeError, match=variable) as raised:
        resolve()
    assert len(value) < 8 or value not in str(raised.value)  # the message never echoes the key


@pytest.mark.parametrize("value", ["k" * 32, "ab" * 32, "test-pseudonym-key-0123456789abcdef"])
def test_production_accepts_32_bytes_of_key_material(tmp_path, value):
    key, source = Settings(env="production", home=tmp_path, pseudonym_key=SecretStr(value)).resolve_pseudonym_key()
    assert (key, source) == (value.encode(), "GMP_PSEUDONYM_KEY")


def test_production_requires_an_audit_key(tmp_path):
    with pytest.raises(RuntimeError, match="GMP_AUDIT_KEY"):
        Settings(env="production", home=tmp_path, audit_key=None).resolve_audit_key()


def test_the_local_airflow_listens_on_loopback_only(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__API__HOST", raising=False)
    env = airflow_environment(Settings(home=tmp_path, project_root=PROJECT_ROOT))
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"


def test_airflow_writes_its_task_logs_owner_only(tmp_path):
    env = airflow_environment(Settings(home=tmp_path, project_root=PROJECT_ROOT))
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS"] == "0o600"
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS"] == "0o700"
