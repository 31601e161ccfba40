"""Issue 11's Airflow benchmarks: the four DAGs through dag.test() vs the library (goal <= 1.3x), and the
footprint of `make airflow` after start. Figures to bench/results.json; nothing is asserted as a time.

GMP_BENCH_OVERHEAD_CONTACTS sets the export size (default 2000; the issue also asks 100,000).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.benchmarks.airflow_footprint import measure as measure_footprint
from tests.benchmarks.airflow_overhead import measure as measure_overhead

pytestmark = pytest.mark.benchmark

CONTACTS = int(os.environ.get("GMP_BENCH_OVERHEAD_CONTACTS", "2000"))


def test_bench_airflow_overhead_of_the_four_dags(tmp_path):
    from tests.benchmarks.conftest import record

    figures = measure_overhead(CONTACTS, work=tmp_path)
    assert set(figures["airflow_dag_test_s"]) == set(figures["library_s"])
    record(
        f"airflow_overhead_{CONTACTS}",
        {
            **figures,
            "cpus": os.cpu_count(),
            "load_1m": os.getloadavg()[0],
            "command": "uv run --frozen python -m tests.benchmarks.airflow_overhead " + str(CONTACTS),
        },
    )
    print(json.dumps(figures, indent=2))


def test_bench_make_airflow_footprint(tmp_path):
    from tests.benchmarks.conftest import record

    figures = measure_footprint(tmp_path / "gmp")
    assert figures["processes"] > 1
    record(
        "airflow_standalone_footprint",
        {
            **figures,
            "cpus": os.cpu_count(),
            "load_1m": os.getloadavg()[0],
            "command": "uv run --frozen python -m tests.benchmarks.airflow_footprint",
        },
    )
    print(json.dumps(figures, indent=2))
