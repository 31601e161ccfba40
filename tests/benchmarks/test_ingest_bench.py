"""Ingest against DuckDB's own `read_csv` of the same files: wall, CPU and peak RSS, before and after.

Issue #16 goal: ingest <= 3x `read_csv` of the same export. Each measurement runs in a fresh
interpreter (peak RSS is that process's VmHWM, CPU is user + system from os.wait4):

- `read_csv`: the four files into all-text DuckDB tables (the floor: parse and store, nothing checked);
- `ingest`: `crm.ingest.ingest_export` of this tree into an empty warehouse;
- `ingest_base`: the same call with `plugins/` of GMP_BENCH_INGEST_BASE (a commit, default the
  merge base with main; "" to skip) taken by `git archive`, so before and after share one run and
  one machine load.

Sizes: GMP_BENCH_CONTACTS (default 100k). Figures under `ingest_<contacts>` in bench/results.json
with ratios of medians from the same run. Nothing here asserts a time.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.benchmarks.conftest import BENCH_KEY, CONTACTS, REPEATS, record
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark

BASE = os.environ.get("GMP_BENCH_INGEST_BASE", "merge-base")

_READ_CSV = """
import json, sys, time, duckdb
export, target = sys.argv[1], sys.argv[2]
started = time.perf_counter()
conn = duckdb.connect(target)
rows = 0
for name in ("contacts", "consent_events", "activity", "dsr_requests"):
    conn.execute(
        f"create table {name} as select * from read_csv('{export}/{name}.csv', all_varchar=true, header=true,"
        " store_rejects=true)"
    )
    rows += conn.execute(f"select count(*) from {name}").fetchone()[0]
conn.close()
seconds = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print()
print(json.dumps({"seconds": seconds, "rows": rows, "hwm_kib": hwm}))
"""

_INGEST = """
import sys, time, json
from pathlib import Path
from governed_marketing.crm import ingest
from governed_marketing.policy import load_policy
from governed_marketing.warehouse import connect
export, home = Path(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
conn = connect(home / "warehouse.duckdb")
try:
    result = ingest.ingest_export(export, conn=conn, policy=load_policy(), landing_root=home / "landing")
finally:
    conn.close()
seconds = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print()
print(json.dumps({"seconds": seconds, "rows": result.contacts_read, "quarantined": result.rows_quarantined,
                  "hwm_kib": hwm, "module": ingest.__file__}))
"""


def _run(code: str, args: list[str], env: dict[str, str], log: Path) -> dict:
    """One fresh interpreter: its own figures, plus wall and CPU (user + system) from os.wait4."""
    import time

    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-c", code, *args], env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    text = log.read_text(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    figures = json.loads(text.strip().splitlines()[-1])
    figures.update(process_wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime)
    figures["peak_rss_mb"] = round(figures.pop("hwm_kib") / 1024)
    return figures


def _base_plugins(tmp: Path) -> Path | None:
    """plugins/ of the base commit, unpacked from `git archive` (nothing checked out in the repository)."""
    if not BASE:
        return None
    commit = BASE
    if BASE == "merge-base":
        commit = subprocess.run(
            ["git", "merge-base", "HEAD", "main"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    archive = subprocess.run(["git", "archive", commit, "plugins"], cwd=PROJECT_ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "plugins"


def _median(samples: list[dict], key: str) -> float:
    return round(statistics.median(s[key] for s in samples), 2)


def test_ingest_against_read_csv(bench_export, tmp_path):
    env = {**os.environ, "GMP_PSEUDONYM_KEY": BENCH_KEY, "DO_NOT_TRACK": "1"}
    variants: dict[str, tuple[str, dict[str, str]]] = {"read_csv": (_READ_CSV, env), "ingest": (_INGEST, env)}
    base = _base_plugins(tmp_path / "base")
    if base is not None:
        variants["ingest_base"] = (_INGEST, {**env, "PYTHONPATH": f"{base}{os.pathsep}{env.get('PYTHONPATH', '')}"})
    samples: dict[str, list[dict]] = {name: [] for name in variants}
    for i in range(REPEATS):
        for name, (code, variant_env) in variants.items():  # interleaved: each repeat sees the same load
            home = tmp_path / f"{name}-{i}"
            home.mkdir()
            target = str(home / "read_csv.duckdb") if name == "read_csv" else str(home)
            samples[name].append(
                _run(code, [str(bench_export), target], {**variant_env, "GMP_HOME": str(home)}, home / "log.txt")
            )
    if base is not None:
        assert samples["ingest_base"][0]["module"].startswith(str(base)), "the base run must import the base code"
        assert samples["ingest_base"][0]["quarantined"] == samples["ingest"][0]["quarantined"]
    figures: dict = {"contacts": CONTACTS, "repeats": REPEATS, "load_avg_1m": round(os.getloadavg()[0], 2)}
    for name, runs in samples.items():
        figures[name] = {
            "wall_median_s": _median(runs, "seconds"),
            "cpu_median_s": _median(runs, "cpu_s"),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "wall_samples_s": [round(r["seconds"], 2) for r in runs],
        }
    for name in ("ingest", "ingest_base"):
        if name in figures:
            figures[f"{name}_vs_read_csv_wall"] = round(
                figures[name]["wall_median_s"] / figures["read_csv"]["wall_median_s"], 1
            )
            figures[f"{name}_vs_read_csv_cpu"] = round(
                figures[name]["cpu_median_s"] / figures["read_csv"]["cpu_median_s"], 1
            )
    record(f"ingest_{CONTACTS}", figures)
    assert samples["ingest"][0]["rows"] > 0
