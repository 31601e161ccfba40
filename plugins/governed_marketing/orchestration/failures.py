"""Which failures fail an Airflow task at once, and the one translation to `AirflowFailException`.

A missing or unreadable export, a bad policy, a gate that failed closed, a spent budget: running the
same task again on the same input gives the same error, and a retry only delays the person who must
act. Everything else (a locked warehouse, a vendor outage) is left to Airflow's retries. Every task
body (the DAG files' `@task`s and the operators) runs in `fail_fast()`, so there is one list and one
translation. Each failure's one-line reason is kept for the run's report (`report_task`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

from governed_marketing.errors import CrmExportError


@cache
def deterministic_errors() -> tuple[type[BaseException], ...]:
    """The exception types that fail a task at once (imported on first use: some pull in heavy modules)."""
    from governed_marketing.assessment import GenerationBlocked
    from governed_marketing.crm.hubspot import HubSpotAuthRejected, HubSpotNotConfigured
    from governed_marketing.generation.campaign import ModeRefused
    from governed_marketing.generation.cost import BudgetExceeded
    from governed_marketing.generation.errors import VendorAuthRejected, VendorQuotaExhausted
    from governed_marketing.policy import PolicyError
    from governed_marketing.privacy.dsr import OverdueRequests
    from governed_marketing.validation.gates import GateFailed

    return (
        CrmExportError,  # missing, empty or malformed export, too many rows quarantined, the raw gate failed
        PolicyError,  # governance.yml is invalid
        GateFailed,
        BudgetExceeded,
        ModeRefused,
        GenerationBlocked,  # a blocking assessment finding: resolved by a person, not by a retry
        VendorQuotaExhausted,
        VendorAuthRejected,
        OverdueRequests,  # a deadline passed: a person must act
        HubSpotAuthRejected,  # 401/403 from HubSpot: the token or its scopes must be fixed
        HubSpotNotConfigured,  # ingest.source hubspot without a token
    )


def is_deterministic(exc: BaseException) -> bool:
    """One of the types above, or an error that says of itself a retry would repeat it (`retryable=False`).

    Units rejected for their content after the re-ask are such an error: a retry would pay the vendor
    again for the same answer.
    """
    return isinstance(exc, deterministic_errors()) or getattr(exc, "retryable", True) is False


def failures_dir(dag_id: str, run_id: str) -> Path:
    """Under the run's report directory: one file per failed task, its one-line reason."""
    from governed_marketing.report.build import run_report_dir
    from governed_marketing.settings import get_settings

    return run_report_dir(get_settings(), dag_id, run_id) / "failures"


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
        target = failures_dir(ti.dag_id, context["run_id"])
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{name}.txt").write_text(_one_line(exc) + "\n", encoding="utf-8")
    except Exception:  # noqa: BLE001, S110 - the task's own error is what matters; it is raised next
        pass


@contextmanager
def fail_fast() -> Iterator[None]:
    """Run a task body; every failure's reason is kept; deterministic errors fail the task without
    retries (AirflowFailException), the rest are re-raised as they are for Airflow's retries."""
    try:
        yield
    except AirflowFailException as exc:
        remember_failure(exc)
        raise
    except Exception as exc:
        remember_failure(exc)
        if is_deterministic(exc):
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from None  # the whole message in the log
        raise
