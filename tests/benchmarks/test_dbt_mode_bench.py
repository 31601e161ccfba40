"""`build_marketing_models` through dag.test() vs a plain `dbt build`, same project and data (issue 11's goal: <= 1.3x).

Figures to bench/results.json under `dbt_models_<contacts>`; nothing is asserted as a time. `full_parses`
counts the Cosmos tasks that parsed the whole dbt project (partial parsing kept between tasks: 1 or 2).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.benchmarks.dbt_mode import measure

pytestmark = pytest.mark.benchmark

CONTACTS = int(os.environ.get("GMP_BENCH_DBT_CONTACTS", "2000"))


def test_bench_model_dag_against_plain_dbt_build(tmp_path):
    from tests.benchmarks.conftest import record

    figures = measure(CONTACTS, work=tmp_path)
    assert figures["dbt_tasks"] > 0
    record(
        f"dbt_models_{CONTACTS}",
        {
            **figures,
            "cpus": os.cpu_count(),
            "command": "uv run --frozen pytest -m benchmark tests/benchmarks/test_dbt_mode_bench.py",
        },
    )
    print(json.dumps(figures, indent=2))
