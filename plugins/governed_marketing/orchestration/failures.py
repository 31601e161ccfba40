"""The Airflow edge every DAG file shares: deterministic failures fail at once, and each DAG ends by
rebuilding the compliance report, failed runs included.

Imports Airflow, so only DAG files (and operators) import this module.

- `fail_fast()` wraps a task body: an error in `governed_marketing.errors.deterministic_errors()`
  becomes `AirflowFailException` (no retries: the same input fails the same way), and every failure's
  one-line reason is kept for the run's report.
- `rebuild_report()` is the last task (trigger rule all_done): it writes
  `$GMP_HOME/reports/runs/<dag_id>/<run_id>/` and the latest `$GMP_HOME/reports/index.html`, naming
  the failed tasks and their reasons, then fails itself if any task failed, so the run ends failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow.sdk import get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from governed_marketing.assets import WAREHOUSE_POOL
from governed_marketing.errors import is_deterministic

REPORT_TASK_ID = "rebuild_report"
_FAILURES = "failures"  # under the run's report directory: one file per failed task, its reason


def _failures_dir(dag_id: str, run_id: str) -> Path:
    from governed_marketing.report.build import run_report_dir
    from governed_marketing.settings import get_settings

    return run_report_dir(get_settings(), dag_id, run_id) / _FAILURES


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'no message'}"


def remember_failure(exc: BaseException, context: Any | None = None) -> None:
    """Keep the task's one-line reason where the run's report task finds it (never the traceback)."""
    try:
        context = context or get_current_context()
        ti = context["ti"]
        mapped = ti.map_index is not None and ti.map_index >= 0  # named as get_task_states names them
        name = f"{ti.task_id}_{ti.map_index}" if mapped else ti.task_id
        target = _failures_dir(ti.dag_id, context["run_id"])
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{name}.txt").write_text(_one_line(exc) + "\n", encoding="utf-8")
    except Exception:  # noqa: BLE001, S110 - the task's own error is what matters; it is raised next
        pass


def fail_now_if_deterministic(exc: BaseException) -> None:
    """Keep the failure's reason; raise AirflowFailException (no retries) if a retry cannot fix it.

    Returns when the error is worth retrying: the caller re-raises it for Airflow's retries.
    """
    remember_failure(exc)
    if is_deterministic(exc):
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from None  # the whole message in the task log


@contextmanager
def fail_fast() -> Iterator[None]:
    """Run a task body; deterministic errors fail the task without retries, the rest are retried."""
    try:
        yield
    except AirflowFailException as exc:
        remember_failure(exc)
        raise
    except Exception as exc:
        fail_now_if_deterministic(exc)
        raise


def run_failure(dag_id: str, run_id: str, failed: list[str]) -> str | None:
    """One line for the report: the failed tasks and, where they recorded one, their reason."""
    if not failed:
        return None
    reasons_dir = _failures_dir(dag_id, run_id)
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
