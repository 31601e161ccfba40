"""assess_compliance through dag.test(): the assessment runs, lands in the audit chain, and the run's
report shows it in its "Regular assessment" section."""

from __future__ import annotations

import json

import pytest

from tests.dags.test_ingest_schedule import run_dag, run_report

pytestmark = pytest.mark.dags


def test_the_monthly_assessment_is_recorded_and_reported(tmp_path):
    from governed_marketing import warehouse

    home = tmp_path / "gmp"
    home.mkdir()
    warehouse.connect(home / "warehouse.duckdb").close()  # an empty warehouse: its raw and ops tables, no data
    run = run_dag(home, "assess_compliance", AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,ana:viewer")
    assert run["state"] == "success", run
    assert run["tasks"]["assess"]["try_number"] == 1
    report = json.loads(run_report(home, "assess_compliance", run["run_id"]).read_text())
    section = report["regular_assessment"]
    (latest,) = section["history"]
    assert latest["actor"] == run["run_id"] and latest["findings"] == 0
    assert section["status"].endswith("clean, no findings")
    assert [r["what"] for r in section["next_due"]][:1] == ["review.consent_notice"]
    readers = section["report_readers"]  # read through Airflow's configuration inside the task
    assert readers["users"] == [{"user": "admin", "role": "admin"}, {"user": "ana", "role": "viewer"}]
    html = (home / "reports" / "index.html").read_text(encoding="utf-8")
    assert "<h2>Regular assessment</h2>" in html and "<td>ana</td><td>viewer</td>" in html
