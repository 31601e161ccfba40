"""The measured pipeline (both backends), shared by test_pipeline_bench.py and test_erasure_scale.py.

Each step runs REPEATS times in a fresh interpreter (steps.py, conftest.run_step); the summary keeps
the median of the work's own seconds and the largest peak RSS. See bench/RESULTS.md for what each
figure means.
"""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from tests.benchmarks.conftest import CONTACTS, REPEATS, pg_admin, run_step, step_env

#: Steps and the figure each reports as its wall time (the work itself, interpreter start excluded).
MEASURED = {
    "ingest": ("duckdb_ingest_s", "postgres_copy_s"),
    "dbt_build": ("dbt_build_s",),
    "gates": ("audience_gate_s", "payload_gate_s", "read_from_postgres_s"),
    "planning": ("prepare_campaign_s", "read_from_postgres_s"),
    "cohorts_model": ("cohorts_model_s",),
    "baseline": ("baseline_s",),
}


def _summarize(step: str, runs: list[dict]) -> dict:
    work = [sum(run.get(k, 0.0) for k in MEASURED[step]) for run in runs]
    summary = {
        "runs": len(runs),
        "median_s": round(statistics.median(work), 2),
        "samples_s": [round(s, 2) for s in work],
        "process_wall_median_s": round(statistics.median(r["process_wall_s"] for r in runs), 2),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
    }
    numeric = {k for run in runs for k, v in run.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for key in sorted(numeric - {"process_wall_s", "peak_rss_mb", "wall_s"}):
        values = [run[key] for run in runs if key in run]
        summary[key] = round(statistics.median(values), 3) if key.endswith("_s") else values[-1]
    for key in {k for run in runs for k, v in run.items() if isinstance(v, bool | str)}:
        summary[key] = runs[-1][key]
    return summary


def _measure(step: str, backend: str, home: Path, export: Path | None, env: dict, logs: Path, before=None) -> dict:
    runs = []
    for _ in range(REPEATS):
        target = before() if before else home
        runs.append(run_step(step, backend, target, export, env, logs))
    return _summarize(step, runs)


def _scratch_copy(base: Path, scratch: Path) -> Path:
    """A copy of the built warehouse for a step that writes evidence or ledger rows (not timed)."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    shutil.copy(base / "warehouse.duckdb", scratch / "warehouse.duckdb")
    return scratch


def run_pipeline(backend: str, export: Path, root: Path, env_extra: dict[str, str]) -> dict:
    home, logs = root / "home", root / "logs"
    home.mkdir(parents=True, exist_ok=True)
    env = step_env(home, **env_extra)
    steps: dict[str, dict] = {}
    # Each ingest starts from an empty DuckDB file (and truncates the Postgres raw tables); the last one stays.
    steps["ingest"] = _measure("ingest", backend, home, export, env, logs)
    steps["dbt_build"] = _measure("dbt_build", backend, home, None, env, logs)
    scratch = root / "scratch"
    copy = (lambda: _scratch_copy(home, scratch)) if backend == "duckdb" else None
    for step in ("gates", "planning"):
        step_env_home = step_env(scratch if backend == "duckdb" else home, **env_extra)
        steps[step] = _measure(step, backend, home, None, step_env_home, logs, before=copy)
    steps["cohorts_model"] = _measure("cohorts_model", backend, home, None, env, logs)
    baseline_env = step_env(scratch if backend == "duckdb" else home, **env_extra)
    steps["baseline"] = _measure("baseline", backend, home, None, baseline_env, logs, before=copy)
    if backend == "postgres":  # the baseline's tables hold emails: not left in the warehouse the erasure bench uses
        admin = pg_admin(env_extra["GMP_PG_DATABASE"])
        with admin.cursor() as cur:
            cur.execute("drop schema if exists bench_baseline cascade")
        admin.close()
    shutil.rmtree(scratch, ignore_errors=True)
    return steps


def figures(backend: str, steps: dict) -> dict:
    gates_s = steps["ingest"].get("raw_crm_gate_s", 0.0) + steps["gates"]["median_s"]
    governed_s = steps["dbt_build"]["median_s"] + gates_s
    baseline_s = steps["baseline"]["median_s"]
    return {
        "backend": backend,
        "contacts": CONTACTS,
        "repeats": REPEATS,
        "steps": steps,
        "gates_total_s": round(gates_s, 2),
        "governed_s": round(governed_s, 2),
        "baseline_s": baseline_s,
        "governance_overhead_ratio": round(governed_s / baseline_s, 1) if baseline_s else None,
        "command": f"GMP_BENCH_CONTACTS={CONTACTS} make bench",
    }
