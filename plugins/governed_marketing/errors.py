"""Failures that a retry cannot fix: the one list the Airflow edge fails at once on, without retries.

A missing or unreadable export, a bad policy, a gate that failed closed, a spent budget: running the
same task again on the same input gives the same error, and a retry only delays the person who must
act. Everything else (a locked warehouse, a vendor outage) is left to Airflow's retries.
Importable without Airflow; `governed_marketing.airflow_tasks.fail_fast` translates these.
"""

from __future__ import annotations

from functools import cache


class ExportUnreadable(ValueError):
    """The CRM export is missing, empty or cannot be read: nothing to load until someone drops a new one."""


@cache
def deterministic_errors() -> tuple[type[BaseException], ...]:
    """The exception types that fail a task at once (imported here lazily: some pull in heavy modules)."""
    from governed_marketing.crm.ingest import CrmExportError
    from governed_marketing.generation.campaign import ModeRefused
    from governed_marketing.generation.cost import BudgetExceeded
    from governed_marketing.generation.providers import VendorAuthRejected, VendorQuotaExhausted
    from governed_marketing.policy import PolicyError
    from governed_marketing.privacy.dsr import OverdueRequests
    from governed_marketing.validation.gates import GateFailed

    return (
        ExportUnreadable,  # any unreadable export the ingest reports (subclass it there)
        CrmExportError,  # a malformed export, too many rows quarantined, the raw gate failed
        PolicyError,  # governance.yml is invalid
        GateFailed,
        BudgetExceeded,
        ModeRefused,
        VendorQuotaExhausted,
        VendorAuthRejected,
        OverdueRequests,  # a deadline passed: a person must act
    )


def is_deterministic(exc: BaseException) -> bool:
    return isinstance(exc, deterministic_errors())
