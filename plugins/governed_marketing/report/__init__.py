"""The compliance report: `$GMP_HOME/reports/index.html` and `report.json`, from the evidence of the latest run.

Rebuilt at the end of every `gmp run` and by `gmp report`. It reads counts, gate results, the policy
and the dbt manifest, never a row about a person, and it opens offline (inline CSS and SVG). The
privacy-requests section comes from `privacy.report`.

`build_report` loads on first use: `report.server` (in the Airflow api-server) needs none of the
builder's imports (DuckDB, Great Expectations).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from governed_marketing.report.build import build_report

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    if name == "build_report":
        from governed_marketing.report.build import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
