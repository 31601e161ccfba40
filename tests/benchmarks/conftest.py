"""Benchmarks write their figures to bench/results.json (merged by key) and bench/RESULTS.md; they assert no times.

GMP_BENCH_CONTACTS (default 100000) sets the size; GMP_BENCH_REPEATS the runs per measurement
(default 3 below 1M contacts, 1 from 1M on). Exports come from `gmp crm generate --seed 1` and are
cached per size under GMP_BENCH_CACHE (default: <tmp>/gmp-bench-cache).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

RESULTS = Path(os.environ.get("GMP_BENCH_RESULTS", PROJECT_ROOT / "bench" / "results.json"))
CONTACTS = int(os.environ.get("GMP_BENCH_CONTACTS", "100000"))
REPEATS = int(os.environ.get("GMP_BENCH_REPEATS", "3" if CONTACTS < 1_000_000 else "1"))
CACHE = Path(os.environ.get("GMP_BENCH_CACHE", Path(tempfile.gettempdir()) / "gmp-bench-cache"))
SEED = 1
BENCH_KEY = "gmp-bench-pseudonym-key-5f0c2e9a71d4b368"


def record(key: str, figures: dict) -> None:
    """Merge one benchmark's figures into results.json under `key` (other keys kept), then redraw RESULTS.md."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    try:
        from tests.benchmarks.results_table import write_table

        write_table(RESULTS)
    except Exception as exc:  # the figures are safe in results.json; the table is redrawn next time
        print(f"bench: RESULTS.md not written: {type(exc).__name__}: {exc}", file=sys.stderr)


def median_seconds(action: Callable[[], object], *, repeats: int = REPEATS, setup: Callable[[], object] | None = None):
    samples = []
    for _ in range(repeats):
        if setup:
            setup()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


def cached_export(contacts: int = CONTACTS, seed: int = SEED) -> Path:
    """`gmp crm generate --contacts N --seed S`, once per size: later sessions reuse the files."""
    out = CACHE / f"crm-{contacts}-seed{seed}"
    if (out / ".complete").exists():
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "governed_marketing.cli", "crm", "generate", "--contacts", str(contacts),
         "--seed", str(seed), "--out", str(partial)],
        check=True, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    (partial / ".complete").write_text(json.dumps({"generate_s": round(time.perf_counter() - started, 1)}))
    partial.rename(out)
    return out


@pytest.fixture(scope="session")
def bench_export() -> Path:
    return cached_export()


def step_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "GMP_HOME": str(home),
        "GMP_PSEUDONYM_KEY": BENCH_KEY,
        "GMP_LLM_PROVIDER": "offline",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DO_NOT_TRACK": "1",
        **extra,
    }
    env.pop("DBT_TARGET", None)
    return env


def run_measured(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, int, str]:
    """Run argv in a fresh process; (wall seconds, ru_maxrss in KiB from os.wait4, stdout).

    ru_maxrss is an upper bound: Linux counts the RSS the child had between fork and exec (a copy of
    this process) too; steps.py reports its own VmHWM, which run_step prefers.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[-6:])} exited {process.returncode}; last lines of {log}:\n{text[-3000:]}")
    return seconds, usage.ru_maxrss, text


def run_step(step: str, backend: str, home: Path, export: Path | None, env: dict[str, str], logs: Path) -> dict:
    """One step of tests/benchmarks/steps.py in a fresh interpreter: its figures plus process wall and peak RSS."""
    argv = [sys.executable, "-m", "tests.benchmarks.steps", step, "--backend", backend, "--home", str(home)]
    if export is not None:
        argv += ["--export", str(export)]
    n = len(list(logs.glob(f"{backend}-{step}-*.log")))
    seconds, rss_kib, text = run_measured(argv, env, logs / f"{backend}-{step}-{n}.log")
    figures = json.loads(text.strip().splitlines()[-1])
    figures["process_wall_s"] = seconds
    # VmHWM of the step process itself; wait4's ru_maxrss is the fallback (it can include the parent's
    # RSS at fork time, copied into the child before exec).
    figures["peak_rss_mb"] = round((figures.pop("vm_hwm_kib", None) or rss_kib) / 1024)
    return figures


# ---- Postgres --------------------------------------------------------------------------------

PG_URL = os.environ.get("GMP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_params() -> dict[str, str]:
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(PG_URL)
    return {
        "GMP_PG_HOST": params.get("host", "127.0.0.1"),
        "GMP_PG_PORT": str(params.get("port", 5432)),
        "GMP_PG_USER": params.get("user", "postgres"),
        "GMP_PG_PASSWORD": params.get("password", ""),
    }


def pg_admin(database: str | None = None):
    """An autocommit connection to the maintenance database (or `database`); pytest.skip without a server."""
    import psycopg2
    from psycopg2.extensions import parse_dsn

    params = parse_dsn(PG_URL)
    try:
        conn = psycopg2.connect(
            host=params.get("host", "127.0.0.1"), port=int(params.get("port", 5432)),
            user=params.get("user", "postgres"), password=params.get("password") or None,
            dbname=database or params.get("dbname", "postgres"), connect_timeout=5,
        )  # fmt: skip
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no Postgres server answers at {PG_URL} (GMP_TEST_POSTGRES_URL): {str(exc).strip()[:200]}")
    conn.autocommit = True
    return conn


def pg_recreate(name: str, *, template: str | None = None) -> None:
    admin = pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
            cur.execute(f'create database "{name}"' + (f' template "{template}"' if template else ""))
    finally:
        admin.close()


def pg_drop(name: str) -> None:
    admin = pg_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
    finally:
        admin.close()


# ---- the measured pipeline, built once per session (tests/benchmarks/pipeline_runs.py) ----------


@pytest.fixture(scope="session")
def duckdb_pipeline(bench_export, tmp_path_factory) -> Path:
    """The DuckDB pipeline measured step by step; returns the GMP_HOME it leaves built (raw + dbt models)."""
    root = tmp_path_factory.mktemp("pipeline-duckdb")
    from tests.benchmarks.pipeline_runs import figures, run_pipeline

    steps = run_pipeline("duckdb", bench_export, root, {})
    record(f"pipeline_duckdb_{CONTACTS}", figures("duckdb", steps))
    return root / "home"


@pytest.fixture(scope="session")
def postgres_pipeline(bench_export, tmp_path_factory) -> tuple[Path, str]:
    """The same on Postgres (database gmp_bench_<contacts>, recreated); returns (GMP_HOME, database)."""
    pg_admin().close()  # skips without a server
    pg_recreate(pg_bench_database())
    root = tmp_path_factory.mktemp("pipeline-postgres")
    from tests.benchmarks.pipeline_runs import figures, run_pipeline

    steps = run_pipeline("postgres", bench_export, root, {**pg_params(), "GMP_PG_DATABASE": pg_bench_database()})
    record(f"pipeline_postgres_{CONTACTS}", figures("postgres", steps))
    return root / "home", pg_bench_database()


def pg_bench_database() -> str:
    return f"gmp_bench_{CONTACTS}"


def pytest_sessionfinish(session, exitstatus) -> None:
    if RESULTS.exists():
        try:
            from tests.benchmarks.results_table import write_table

            write_table(RESULTS)
        except Exception as exc:
            print(f"bench: RESULTS.md not written: {type(exc).__name__}: {exc}", file=sys.stderr)
