"""The scheduled ingest_crm through dag.test(): a missing export fails at once, a repeated one skips,
and every run, failed or not, leaves its own compliance report and the latest one.

Each run is a subprocess with its own GMP_HOME and AIRFLOW_HOME (the way `gmp run` prepares Airflow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.dags


def run_dag(home: Path, dag_id: str, conf: dict | None = None, **extra_env: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GMP_", "OPENAI_"))}
    env.update(
        GMP_HOME=str(home),
        GMP_PSEUDONYM_KEY=os.environ["GMP_PSEUDONYM_KEY"],
        GMP_LLM_PROVIDER="offline",
        AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
        **extra_env,
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.dag_run", dag_id, json.dumps(conf or {})],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_report(home: Path, dag_id: str, run_id: str) -> Path:
    return home / "reports" / "runs" / dag_id / run_id / "report.json"


def test_a_missing_export_fails_at_once_without_retries_and_the_report_says_why(tmp_path):
    home = tmp_path / "gmp"
    run = run_dag(home, "ingest_crm")  # scheduled: no crm_dir, nothing in $GMP_HOME/crm_exports/latest
    assert run["state"] == "failed"
    assert run["tasks"]["load_export"] == {"state": "failed", "try_number": 1}
    assert run["tasks"]["rebuild_report"]["state"] == "failed"  # wrote the report, then failed the run
    assert run["asset_events"] == 0
    report = json.loads(run_report(home, "ingest_crm", run["run_id"]).read_text())
    failure = report["run_summary"]["failure"]
    assert "load_export" in failure and "crm_exports/latest: no CRM export there" in failure
    latest = json.loads((home / "reports" / "report.json").read_text())
    assert latest["run_summary"]["failure"] == failure
    assert "no CRM export there" in (home / "reports" / "index.html").read_text(encoding="utf-8")


def test_an_export_already_loaded_is_a_skip_with_no_asset_event(tmp_path):
    from governed_marketing.sample_data.crm_export import write_sample_export

    home = tmp_path / "gmp"
    drop = tmp_path / "drop"
    write_sample_export(drop, contacts=60, seed=3)
    first = run_dag(home, "ingest_crm", GMP_CRM_DIR=str(drop))  # the drop folder from the environment
    assert first["state"] == "success" and first["tasks"]["load_export"]["state"] == "success"
    assert first["asset_events"] == 1
    second = run_dag(home, "ingest_crm", GMP_CRM_DIR=str(drop))
    assert second["tasks"]["load_export"] == {"state": "skipped", "try_number": 1}
    assert second["state"] == "success"  # a skip, not a failure
    assert second["asset_events"] == 1  # no new event: build_marketing_models is not triggered
    assert second["tasks"]["rebuild_report"]["state"] == "success"
    assert run_report(home, "ingest_crm", first["run_id"]).is_file()
    assert run_report(home, "ingest_crm", second["run_id"]).is_file()


def test_the_local_standalone_starts_unpaused_small_and_with_a_written_down_login(tmp_path):
    """`gmp airflow standalone`: DAGs created paused by an earlier start are unpaused, new ones start so."""
    home = tmp_path / "gmp"
    run = run_dag(home, "purge_expired_data", {"dry_run": True})  # registers the DAGs, paused (Airflow's default)
    assert run["tasks"]["rebuild_report"]["state"] in ("success", "failed")  # it ran, whatever the purge did
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GMP_"))}
    env.update(GMP_HOME=str(home), GMP_PSEUDONYM_KEY=os.environ["GMP_PSEUDONYM_KEY"])
    script = (
        "import json, os\n"
        "from governed_marketing.orchestration.pipeline_run import (\n"
        "    prepare_airflow, standalone_environment, unpause_dags)\n"
        "from governed_marketing.cli import _login_banner\n"
        "from governed_marketing.settings import get_settings\n"
        "s = get_settings(); extra = standalone_environment(s); os.environ.update(extra); prepare_airflow(s)\n"
        "print(json.dumps({'env': extra, 'unpaused': unpause_dags(), 'again': unpause_dags(),"
        " 'banner': _login_banner({**os.environ, **extra})}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(out["unpaused"]) == {
        "ingest_crm",
        "process_privacy_requests",
        "build_marketing_models",
        "generate_campaign_content",
        "deliver_campaign",
        "purge_expired_data",
        "assess_compliance",
    }
    assert out["again"] == []
    assert out["env"]["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert int(out["env"]["AIRFLOW__CORE__PARALLELISM"]) <= 4 and out["env"]["AIRFLOW__API__WORKERS"] == "1"
    passwords = home / "airflow" / "simple_auth_manager_passwords.json.generated"
    assert out["env"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(passwords)
    assert ":8080" in out["banner"] and "`admin`" in out["banner"] and str(passwords) in out["banner"]
