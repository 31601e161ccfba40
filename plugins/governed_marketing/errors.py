"""Errors of the policy and of the CRM export that a retry cannot fix (importable without Airflow).

Which errors fail an Airflow task at once is decided in one place above the library,
`governed_marketing.orchestration.failures`; an error may also say of itself that a retry would
repeat it, with a `retryable = False` attribute.
"""

from __future__ import annotations


class PolicyError(ValueError):
    """governance.yml is missing, unreadable or breaks the schema; the message names the key."""


class CrmExportError(ValueError):
    """The export cannot be read as the contract says; the message names the file and the problem."""


class ExportUnreadable(CrmExportError):
    """The export is absent or empty (no directory, a required file missing, headers only).

    Nothing to load until someone drops a new one. Raised by `crm.contract.check_export` before any
    heavy import or work; the one-line message names the path.
    """
