"""Every DAG's last task: rebuild the compliance report of the run, failed runs included.

`rebuild_report()` (trigger rule all_done) writes `$GMP_HOME/reports/runs/<dag_id>/<run_id>/` and the
latest `$GMP_HOME/reports/index.html`, naming the failed tasks and the reasons `failures` kept, then
fails itself if any task failed, so the run ends failed.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException

from governed_marketing.orchestration.assets import WAREHOUSE_POOL
from governed_marketing.orchestration.failures import failures_dir

REPORT_TASK_ID = "rebuild_report"


def run_failure(dag_id: str, run_id: str, failed: list[str]) -> str | None:
    """One line for the report: the failed tasks and, where they recorded one, their reason."""
    if not failed:
        return None
    reasons_dir = failures_dir(dag_id, run_id)
    parts = []
    for task_id in failed:
        reason_file = reasons_dir / f"{task_id}.txt"
        reason = reason_file.read_text(encoding="utf-8").strip() if reason_file.is_file() else "see the task log"
        parts.append(f"{task_id}: {reason}")
    return f"{dag_id} failed at " + "; ".join(parts)


def failed_tasks(ti: Any, run_id: str) -> list[str]:
    """The tasks of this run that failed (not those that only did not run because of them)."""
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[run_id]).get(run_id, {})
    return sorted(t for t, state in states.items() if state == "failed" and t != REPORT_TASK_ID)


def rebuild_report() -> Any:
    """The DAG's last task: the report of this run, also when a task failed (then this task fails too)."""

    @task(task_id=REPORT_TASK_ID, trigger_rule="all_done", retries=0, pool=WAREHOUSE_POOL)
    def rebuild(ti: Any = None, run_id: str | None = None) -> dict:
        from governed_marketing.report.build import publish_run_report

        failure = run_failure(ti.dag_id, run_id, failed_tasks(ti, run_id))
        path = publish_run_report(ti.dag_id, run_id, failure=failure)
        if failure:  # the report is written; the run must still end failed
            raise AirflowFailException(f"{failure} (report: {path})")
        return {"report": str(path)}

    return rebuild()
