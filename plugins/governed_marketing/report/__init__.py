"""The compliance report: `$GMP_HOME/reports/index.html` and `report.json`, from the evidence of the latest run.

Rebuilt at the end of every `gmp run` and by `gmp report`. It reads counts, gate results, the policy
and the dbt manifest, never a row about a person, and it opens offline (inline CSS and SVG).

Privacy requests (issue 6) plug in through `PRIVACY_SECTION_PROVIDER`: see `report.privacy`.
"""

from governed_marketing.report.build import build_report
from governed_marketing.report.privacy import PRIVACY_SECTION_PROVIDER, PrivacySection

__all__ = ["PRIVACY_SECTION_PROVIDER", "PrivacySection", "build_report"]
