"""The hook the privacy-requests work (issue 6) fills: a section of the report about DSRs.

The report calls, if it can be imported, `governed_marketing.privacy.report.privacy_section`:

    def privacy_section(conn: Warehouse, *, policy: Policy, settings: Settings) -> PrivacySection

`conn` is a read-only warehouse connection. The returned dict is rendered generically and copied
into report.json under `privacy_requests`; like everything in the report it must hold counts,
ids and dates only, never an email, a name or request details. Until the module exists, the report
shows a placeholder that says so. `build_report(privacy=...)` takes a provider directly (tests).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NotRequired, TypedDict

#: "module:function" the report imports to fill the privacy-requests section.
PRIVACY_SECTION_PROVIDER = "governed_marketing.privacy.report:privacy_section"


class PrivacyTable(TypedDict):
    title: str
    columns: list[str]
    rows: list[list[Any]]  # counts, ids, dates, statuses: no personal data
    empty: NotRequired[str]  # shown instead of an empty table, e.g. "No purge has run yet."


class PrivacySection(TypedDict, total=False):
    status: str  # one line, e.g. "3 open requests, none overdue"
    summary: dict[str, Any]  # measure -> value, shown as a two-column table
    tables: list[PrivacyTable]
    notes: list[str]


PLACEHOLDER: PrivacySection = {
    "status": "not reported yet",
    "notes": [
        "Data-subject requests (queue, due dates in calendar months, erasure receipts) are reported "
        f"here once {PRIVACY_SECTION_PROVIDER} exists.",
    ],
}


def load_provider(spec: str = PRIVACY_SECTION_PROVIDER) -> Callable[..., PrivacySection] | None:
    """The provider function, or None while its module does not exist yet."""
    module_name, _, function = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as missing:
        if missing.name and module_name.startswith(missing.name):
            return None
        raise
    return getattr(module, function)
