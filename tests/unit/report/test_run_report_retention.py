"""governance.yml `run_reports`: old per-run report folders go when a run writes its report."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from governed_marketing.policy import RunReports
from governed_marketing.report.paths import prune_run_reports

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _run(dag_dir: Path, run_id: str, age: timedelta) -> Path:
    folder = dag_dir / run_id
    folder.mkdir(parents=True)
    index = folder / "index.html"
    index.write_text("<html></html>", encoding="utf-8")
    written = (NOW - age).timestamp()
    os.utime(index, (written, written))
    return folder


def test_folders_older_than_max_age_go_and_recent_ones_stay(tmp_path):
    dag_dir = tmp_path / "runs" / "process_privacy_requests"
    old = _run(dag_dir, "scheduled__2026-10-01T00:00:00+00:00", timedelta(days=40))
    recent = _run(dag_dir, "scheduled__2026-12-01T00:00:00+00:00", timedelta(days=6))
    own = _run(dag_dir, "scheduled__2026-12-07T12:00:00+00:00", timedelta(0))

    deleted = prune_run_reports(dag_dir, RunReports(max_age="30d", keep_last=10), keep=own, now=NOW)

    assert deleted == [old]
    assert not old.exists() and recent.is_dir() and own.is_dir()


def test_only_the_newest_keep_last_stay_and_a_run_never_deletes_its_own_folder(tmp_path):
    dag_dir = tmp_path / "runs" / "process_privacy_requests"
    hourly = [_run(dag_dir, f"scheduled__h{hour:02d}", timedelta(hours=24 - hour)) for hour in range(24)]
    # The run writing now is old by its folder's clock (a long run): it is kept all the same.
    own = _run(dag_dir, "manual__a long run", timedelta(days=90))

    prune_run_reports(dag_dir, RunReports(max_age="30d", keep_last=3), keep=own, now=NOW)

    assert sorted(p.name for p in dag_dir.iterdir()) == sorted([own.name] + [p.name for p in hourly[-3:]])


def test_a_running_dag_folder_without_its_report_yet_counts_by_the_folder_time(tmp_path):
    dag_dir = tmp_path / "runs" / "ingest_crm"
    own = _run(dag_dir, "manual__now", timedelta(0))
    in_progress = dag_dir / "manual__other"  # a failed task's reason written, the report not yet
    (in_progress / "failures").mkdir(parents=True)

    assert prune_run_reports(dag_dir, RunReports(max_age="30d", keep_last=5), keep=own) == []
    assert in_progress.is_dir()
