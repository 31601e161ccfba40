"""Failures that a retry cannot fix: the one list the Airflow edge fails at once on, without retries.

A missing or unreadable export, a bad policy, a gate that failed closed, a spent budget: running the
same task again on the same input gives the same error, and a retry only delays the person who must
act. Everything else (a locked warehouse, a vendor outage) is left to Airflow's retries.
Importable without Airflow; `governed_marketing.airflow_tasks.fail_fast` translates these.
"""

from __future__ import annotations

from functools import cache


class CrmExportError(ValueError):
    """The export cannot be read as the contract says; the message names the file and the problem."""


class ExportUnreadable(CrmExportError):
    """The export is absent or empty (no directory, a required file missing, headers only).

    Nothing to load until someone drops a new one. Raised by `crm.contract.check_export` before any
    heavy import or work; the one-line message names the path.
    """


@cache
def deterministic_errors() -> tuple[type[BaseException], ...]:
    """The exception types that fail a task at once (imported here lazily: some pull in heavy modules)."""
    from governed_marketing.assessment import GenerationBlocked
    from governed_marketing.generation.campaign import ModeRefused
    from governed_marketing.generation.cost import BudgetExceeded
    from governed_marketing.generation.providers import VendorAuthRejected, VendorQuotaExhausted
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
    )


def is_deterministic(exc: BaseException) -> bool:
    """One of the types above, or an error that says of itself a retry would repeat it (`retryable=False`).

    Units rejected for their content after the re-ask are such an error: a retry would pay the vendor
    again for the same answer.
    """
    return isinstance(exc, deterministic_errors()) or getattr(exc, "retryable", True) is False
