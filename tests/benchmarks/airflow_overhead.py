"""The four pipeline DAGs through dag.test() beside the same steps called as library functions.

    uv run --frozen python -m tests.benchmarks.airflow_overhead [CONTACTS]   # prints the figures (default 2000)

One export (`gmp crm generate --contacts N --seed 7`), two fresh GMP_HOMEs. Airflow: ingest_crm,
process_privacy_requests, build_marketing_models and generate_campaign_content, each through
`dag.test()` in its own process (tests/support/dag_run.py; the figure is dag.test() itself).
Library: in one process, what each DAG's tasks call (task_bodies, privacy.process, one `dbt build`
with the DAG's selection, the generation stages), each DAG's step followed by its report as the DAG's
`rebuild_report` writes it. Issue 11's goal: Airflow <= 1.3x the library.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.dbt_mode import DBT_EXCLUDE, SEED, _dag, _env
from tests.conftest import PROJECT_ROOT

DAGS = ("ingest_crm", "process_privacy_requests", "build_marketing_models", "generate_campaign_content")


def library_steps(export: str, as_of: str) -> dict:
    """Run in the library process: each DAG's work and its report, timed per DAG."""
    import shutil
    import time

    from dbt.cli.main import dbtRunner
    from governed_marketing.dbt import dbt_env
    from governed_marketing.orchestration.task_bodies import (
        campaign_ids,
        draft_generation,
        ingest_drop,
        prepare_generation,
        publish_generation,
    )
    from governed_marketing.privacy.process import process_pending, summary
    from governed_marketing.report.build import publish_run_report
    from governed_marketing.settings import get_settings

    settings = get_settings()
    project = Path(tempfile.mkdtemp(prefix="gmp-overhead-dbt-")) / "dbt_project"
    shutil.copytree(PROJECT_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))

    def models(run_id: str) -> dict:
        import os

        os.environ.update(dbt_env(settings), GMP_DBT_AS_OF=as_of, GMP_DBT_RUN_ID=run_id)
        argv = ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--exclude", *DBT_EXCLUDE]
        result = dbtRunner().invoke(argv)
        if not result.success:
            raise RuntimeError(f"dbt build failed: {result.exception}")
        return {"nodes": len(result.result or [])}

    def generation(run_id: str) -> dict:
        counts = {}
        for campaign_id in campaign_ids():
            prepare_generation(campaign_id, run_id=run_id, as_of=as_of)
            draft_generation(campaign_id, run_id=run_id, as_of=as_of)
            counts[campaign_id] = publish_generation(campaign_id, run_id=run_id, as_of=as_of)
        return counts

    work = {
        "ingest_crm": lambda run_id: ingest_drop(export, run_id=run_id),
        "process_privacy_requests": lambda run_id: summary(process_pending(as_of=as_of, actor=run_id)),
        "build_marketing_models": models,
        "generate_campaign_content": generation,
    }
    seconds, cpu = {}, {}
    for dag_id in DAGS:
        run_id = f"library__{dag_id}"
        wall, start_cpu = time.perf_counter(), time.process_time()
        work[dag_id](run_id)
        publish_run_report(dag_id, run_id)
        seconds[dag_id] = round(time.perf_counter() - wall, 2)
        cpu[dag_id] = round(time.process_time() - start_cpu, 2)
    return {"seconds": seconds, "cpu_seconds": cpu}


def measure(contacts: int = 2000, work: Path | None = None) -> dict:
    from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF

    work = work or Path(tempfile.mkdtemp(prefix="gmp-airflow-overhead-"))
    export = work / "export"
    gmp = Path(sys.executable).with_name("gmp")
    subprocess.run(
        [str(gmp), "crm", "generate", "--out", str(export), "--contacts", str(contacts), "--seed", str(SEED)],
        env=_env(work / "gen"),
        check=True,
        capture_output=True,
    )
    as_of = SAMPLE_AS_OF.isoformat()

    airflow_s, airflow_cpu = {}, {}
    for dag_id in DAGS:
        conf = {"as_of": as_of, **({"crm_dir": str(export)} if dag_id == "ingest_crm" else {})}
        run, _ = _dag(work / "airflow_home", dag_id, conf)
        if run["state"] != "success":
            raise RuntimeError(f"{dag_id}: {run}")
        airflow_s[dag_id], airflow_cpu[dag_id] = run["seconds"], run["cpu_seconds"]

    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.airflow_overhead", "--library", str(export), as_of],
        cwd=PROJECT_ROOT,
        env=_env(work / "library_home"),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-3000:])
    library = json.loads(done.stdout.strip().splitlines()[-1])
    airflow_total, library_total = sum(airflow_s.values()), sum(library["seconds"].values())
    return {
        "contacts": contacts,
        "seed": SEED,
        "airflow_dag_test_s": airflow_s,
        "airflow_dag_test_cpu_s": airflow_cpu,
        "library_s": library["seconds"],
        "library_cpu_s": library["cpu_seconds"],
        "library_process_s": round(time.perf_counter() - start, 2),
        "airflow_total_s": round(airflow_total, 2),
        "library_total_s": round(library_total, 2),
        "ratio": round(airflow_total / library_total, 2),
        "ratio_per_dag": {d: round(airflow_s[d] / library["seconds"][d], 2) for d in DAGS},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--library"]:
        print(json.dumps(library_steps(sys.argv[2], sys.argv[3])))
    else:
        print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
