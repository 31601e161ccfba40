"""Wall time of the pipeline's stages at GMP_BENCH_CONTACTS (default 100k), medians of GMP_BENCH_REPEATS.

`make bench` runs these; figures go to bench/results.json. Nothing here asserts a time.
"""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path

import pytest

from tests.benchmarks.conftest import CONTACTS, REPEATS, median_seconds, record
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark
AS_OF = "2026-11-15T00:00:00Z"


def _fresh_warehouse(home: Path) -> Path:
    warehouse = home / "warehouse.duckdb"
    for path in (warehouse, home / "warehouse.duckdb.wal"):
        path.unlink(missing_ok=True)
    return warehouse


def test_bench_ingest_and_dbt_build(bench_export, tmp_path):
    from dbt.cli.main import dbtRunner
    from governed_marketing.crm.ingest import ingest_export
    from governed_marketing.policy import load_policy
    from governed_marketing.settings import reset_settings
    from governed_marketing.warehouse import connect

    home = Path(os.environ["GMP_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    reset_settings()
    policy = load_policy()

    def ingest() -> None:
        conn = connect(_fresh_warehouse(home))
        try:
            ingest_export(bench_export, conn=conn, policy=policy, landing_root=tmp_path / "landing")
        finally:
            conn.close()

    ingest_median, ingest_samples = median_seconds(ingest)
    project = PROJECT_ROOT / "dbt_project"
    args = ["--project-dir", str(project), "--profiles-dir", str(project), "--target-path", str(tmp_path / "target"),
            "--log-path", str(tmp_path / "logs"), "--vars", json.dumps({"as_of": AS_OF}), "--quiet"]  # fmt: skip

    def build() -> None:
        result = dbtRunner().invoke(["build", *args])
        assert result.success, result.exception

    build_median, build_samples = median_seconds(build)
    record(
        f"ingest_and_dbt_build_{CONTACTS}",
        {
            "contacts": CONTACTS,
            "repeats": REPEATS,
            "ingest_median_s": round(ingest_median, 2),
            "ingest_samples_s": [round(s, 2) for s in ingest_samples],
            "dbt_build_median_s": round(build_median, 2),
            "dbt_build_samples_s": [round(s, 2) for s in build_samples],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "command": f"GMP_BENCH_CONTACTS={CONTACTS} make bench",
        },
    )
