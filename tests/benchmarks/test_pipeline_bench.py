"""Wall time and peak memory of the pipeline's steps on DuckDB and on Postgres, and the ungoverned baseline.

`make bench` runs these at GMP_BENCH_CONTACTS (default 100k; GMP_BENCH_CONTACTS=1000000 for 1M).
Every measured step runs in a fresh interpreter (tests/benchmarks/steps.py); its peak RSS comes from
os.wait4. Medians of GMP_BENCH_REPEATS runs. Figures go to bench/results.json under
`pipeline_<backend>_<contacts>` and `dag_parse`; bench/RESULTS.md is drawn from them
(tests/benchmarks/results_table.py). Nothing here asserts a time.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import pytest

from tests.benchmarks.conftest import record, run_measured
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark


def test_pipeline_on_duckdb(duckdb_pipeline):
    assert (duckdb_pipeline / "warehouse.duckdb").exists()


@pytest.mark.postgres
def test_pipeline_on_postgres(postgres_pipeline):
    home, database = postgres_pipeline
    assert (home / "warehouse.duckdb").exists() and database


# ---- DAG parse time ---------------------------------------------------------------------------

PARSE_REPEATS = int(os.environ.get("GMP_BENCH_PARSE_REPEATS", "5"))
_PARSE = """
import sys, time
import airflow  # noqa: F401  (its import is timed separately: every DAG file pays it once per process)
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])  # examples off: AIRFLOW__CORE__LOAD_EXAMPLES
seconds = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print()
print(f"{seconds} {len(bag.dags)} {len(bag.import_errors)} {hwm}")
"""
_IMPORT = "import time; s = time.perf_counter(); import airflow; print(); print(time.perf_counter() - s)"


def test_dag_parse_time(tmp_path):
    """Each DAG file parsed by Airflow's DagBag in a fresh interpreter, median of PARSE_REPEATS."""
    env = {
        **os.environ,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
    }
    if not (PROJECT_ROOT / "dbt_project" / "target" / "manifest.json").exists():
        subprocess.run(
            [sys.executable, "-m", "governed_marketing.cli", "dbt-parse"], check=True, cwd=PROJECT_ROOT, env=env
        )
    files: dict[str, dict] = {}
    for dag_file in sorted((PROJECT_ROOT / "dags").glob("*.py")):
        parse, wall, rss = [], [], []
        for i in range(PARSE_REPEATS):
            log = tmp_path / f"{dag_file.stem}-{i}.log"
            seconds, _, text = run_measured([sys.executable, "-c", _PARSE, str(dag_file)], env, log)
            parsed, dags, errors, hwm_kib = text.strip().splitlines()[-1].split()
            assert int(errors) == 0, f"{dag_file.name}: import errors, see {log}"
            parse.append(float(parsed))
            wall.append(seconds)
            rss.append(int(hwm_kib))  # VmHWM: ru_maxrss would include this process's RSS at fork
        files[dag_file.name] = {
            "dags": int(dags),
            "parse_median_s": round(statistics.median(parse), 3),
            "parse_samples_s": [round(s, 3) for s in parse],
            "process_wall_median_s": round(statistics.median(wall), 2),
            "peak_rss_mb": round(max(rss) / 1024),
        }
    imports = []
    for i in range(PARSE_REPEATS):
        _, _, text = run_measured([sys.executable, "-c", _IMPORT], env, tmp_path / f"import-{i}.log")
        imports.append(float(text.strip().splitlines()[-1]))
    record(
        "dag_parse",
        {
            "repeats": PARSE_REPEATS,
            "import_airflow_median_s": round(statistics.median(imports), 3),
            "files": files,
            "command": "make bench (tests/benchmarks/test_pipeline_bench.py::test_dag_parse_time)",
        },
    )
