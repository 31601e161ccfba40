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


# ---- pytest-xdist (`make test` runs `-n 2 --dist loadfile`) ----------------------------------------
# A test file is one unit of work: its module-scoped fixtures (a real dbt build, a whole `gmp run`) are
# made once, on one worker. Files that read one session-wide result (memoised across modules) are one
# unit too, so that result is made once rather than once per worker.
SHARED_WORK = {
    # tests/e2e/report_runs.py: one successful `gmp run` through the openai provider, read by both.
    "tests/e2e/test_gates_and_report.py": "e2e-successful-run",
    "tests/e2e/test_report_browser.py": "e2e-successful-run",
}


def _distributed(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) and config.getoption("dist", "no") != "no"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadfile`, with the files of SHARED_WORK sent to one worker together.

    (xdist's own `loadgroup` cannot do this here: it renames items through `item._nodeid`, which
    pytest 9 no longer reads, so `xdist_group` marks are silently ignored.)
    """
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # Hand out files in collection order (dags/, dbt/, e2e/, integration/, postgres/, then the many short
    # unit files), not xdist's default of most tests first, which leaves the long few-test e2e and DAG
    # files to the end where one worker runs them while the other idles.
    config.option.loadscopereorder = False

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_WORK.get(path, path)

    return FileScheduling(config, log)


def pytest_configure(config: pytest.Config) -> None:
    """Before the workers start: write dbt_project/target/manifest.json once.

    Every `gmp run`, report and classification check calls ensure_manifest(), which runs `dbt parse`
    into dbt_project/target when the manifest is missing (a fresh clone) or older than a model file.
    Two workers doing that at once would write the same files; after this, they only read them.
    """
    if hasattr(config, "workerinput") or not _distributed(config):
        return
    from governed_marketing.dbt import ensure_manifest

    ensure_manifest()
