"""The compliance report: `$GMP_HOME/reports/index.html` and `report.json`, from the evidence of the latest run.

Rebuilt at the end of every `gmp run` and by `gmp report`. It reads counts, gate results, the policy
and the dbt manifest, never a row about a person, and it opens offline (inline CSS and SVG).

Privacy requests (issue 6) plug in through `PRIVACY_SECTION_PROVIDER`: see `report.privacy`.

The names below load on first use: `report.server` (in the Airflow api-server) needs none of the
builder's imports (DuckDB, Great Expectations).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from governed_marketing.report.build import build_report
    from governed_marketing.report.privacy import PRIVACY_SECTION_PROVIDER, PrivacySection

__all__ = ["PRIVACY_SECTION_PROVIDER", "PrivacySection", "build_report"]
_HOMES = {"build_report": "build", "PRIVACY_SECTION_PROVIDER": "privacy", "PrivacySection": "privacy"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"governed_marketing.report.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
