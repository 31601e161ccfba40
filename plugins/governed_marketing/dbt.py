"""The dbt project's paths and the one place that knows how dbt is invoked outside Cosmos."""

from __future__ import annotations

import os
from pathlib import Path

from governed_marketing.settings import Settings, get_settings


def manifest_path(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).dbt_project_dir / "target" / "manifest.json"


def dbt_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment dbt needs: where the warehouse is and which profile target (GMP_WAREHOUSE) builds.

    Secrets stay in the process environment (GMP_PG_* are read by profiles.yml's postgres target).
    """
    settings = settings or get_settings()
    return {
        "GMP_HOME": str(settings.home_dir),
        "DBT_TARGET": settings.dbt_target,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def ensure_manifest(settings: Settings | None = None, *, force: bool = False) -> Path:
    """`dbt parse` when the manifest is missing or older than a model file (Cosmos renders from it)."""
    settings = settings or get_settings()
    target = manifest_path(settings)
    project = settings.dbt_project_dir
    newest = max(
        (p.stat().st_mtime for p in project.rglob("*") if p.suffix in {".sql", ".yml"} and "target" not in p.parts),
        default=0.0,
    )
    if not force and target.exists() and target.stat().st_mtime >= newest:
        return target
    from dbt.cli.main import dbtRunner

    # Set for the parse only: a DBT_TARGET left behind would steer every later dbt run in this process.
    saved = {name: os.environ.get(name) for name in dbt_env(settings)}
    os.environ.update(dbt_env(settings))
    try:
        result = dbtRunner().invoke(["parse", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    if not result.success:
        raise RuntimeError(f"dbt parse failed in {project}: {result.exception or 'see dbt_project/logs/dbt.log'}")
    return target
