"""Where a DAG run's report lives: one rule for the DAG task that writes it and the plugin that serves it.

Also how long it stays there: `prune_run_reports` applies governance.yml's `run_reports` rule.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from governed_marketing.policy import RunReports


def run_dir_name(run_id: str) -> str:
    """The folder name of a run's report: run ids are free text when a run is triggered by hand."""
    return run_id.replace("/", "_")


def _written_at(folder: Path) -> float:
    """When the run's report was last written (its index.html; the folder itself for a run still going)."""
    index = folder / "index.html"
    return (index if index.is_file() else folder).stat().st_mtime


def prune_run_reports(dag_dir: Path, rule: RunReports, *, keep: Path, now: datetime | None = None) -> list[Path]:
    """Delete the report folders of one DAG that the rule no longer keeps; return what was deleted.

    `dag_dir` is `reports/runs/<dag_id>/`; `keep` is the folder of the run writing its report now,
    never deleted (nor is the newest folder: `keep_last` is at least 1). Folder age is the time its
    report was written, since hand-triggered run ids carry no date.
    """
    from governed_marketing.privacy.periods import parse_period

    now = now or datetime.now(UTC)
    cutoff = (now - parse_period(rule.max_age, key="run_reports.max_age")).timestamp()
    folders = sorted((p for p in dag_dir.iterdir() if p.is_dir()), key=_written_at, reverse=True)
    deleted = []
    for rank, folder in enumerate(folders):
        if folder.resolve() == keep.resolve():
            continue
        if rank >= rule.keep_last or _written_at(folder) < cutoff:
            shutil.rmtree(folder)
            deleted.append(folder)
    return deleted
