"""A GMP_HOME with raw CRM data and the dbt marts, built by a real ingest and a real dbt build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT


def build_home(root: Path, *, contacts: int = 0, seed: int = 0, as_of: str, export: Path | None = None) -> Path:
    """Generate an export under `root` (or copy `export`), ingest it and build the models; return the GMP_HOME."""
    import shutil

    from dbt.cli.main import dbtRunner
    from governed_marketing import warehouse
    from governed_marketing.crm.ingest import ingest_export
    from governed_marketing.policy import load_policy
    from governed_marketing.sample_data.crm_export import write_sample_export
    from governed_marketing.settings import reset_settings
    from governed_marketing.warehouse.governance import write_governance_tables

    home = root / "home"
    home.mkdir(parents=True)
    if export is None:
        write_sample_export(root / "crm", contacts=contacts, seed=seed)
    else:
        shutil.copytree(export, root / "crm")
    policy = load_policy()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        reset_settings()
        with warehouse.session(home / "warehouse.duckdb") as conn:
            ingest_export(root / "crm", conn=conn, policy=policy, landing_root=home / "landing")
            write_governance_tables(conn, policy)
        project = PROJECT_ROOT / "dbt_project"
        result = dbtRunner().invoke(
            [
                "build",
                "--project-dir",
                str(project),
                "--profiles-dir",
                str(project),
                "--target-path",
                str(root / "target"),
                "--log-path",
                str(root / "logs"),
                "--vars",
                json.dumps({"as_of": as_of}),
                "--quiet",
            ]
        )
        reset_settings()
    assert result.success, result.exception
    return home
