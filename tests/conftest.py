"""Test-wide isolation: every test session gets its own GMP_HOME and AIRFLOW_HOME.

Set before anything imports Airflow (its configuration is read at import time).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="gmp-tests-"))
os.environ["GMP_HOME"] = str(_SESSION_DIR / "gmp")
os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] = "False"
os.environ["AIRFLOW__OPENLINEAGE__DISABLED"] = "True"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("GMP_PSEUDONYM_KEY", "test-pseudonym-key-0123456789abcdef")
for leaked in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GMP_LLM_PROVIDER", "GMP_POLICY", "GMP_ENV"):
    os.environ.pop(leaked, None)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


# ---- GMP_REQUIRE_POSTGRES=1 (set by .ci/run): a skipped `postgres` test fails with its reason ----
import pytest  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        os.environ.get("GMP_REQUIRE_POSTGRES") == "1"
        and report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("postgres") is not None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"GMP_REQUIRE_POSTGRES=1 but this postgres test was skipped: {reason}"
