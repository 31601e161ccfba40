"""Ingest against DuckDB's own `read_csv` of the same files: wall, CPU and peak RSS, before and after.

Issue #16 goal: ingest <= 3x `read_csv` of the same export. Each measurement runs in a fresh
interpreter (peak RSS is that process's VmHWM, CPU is user + system from os.wait4):

- `read_csv`: the four files into all-text DuckDB tables (the floor: parse and store, nothing checked);
- `ingest`: `crm.ingest.ingest_export` of this tree into an empty warehouse;
- `ingest_base`: the same call with `plugins/` of GMP_BENCH_INGEST_BASE (a commit, default the
  merge base with main; "" to skip) taken by `git archive`, so before and after share one run and
  one machine load.

Sizes: GMP_BENCH_CONTACTS (default 100k). Figures under `ingest_<contacts>` in bench/results.json
with ratios of medians from the same run. Each ingest also reports its CPU per phase
(`phases_cpu_median_s`: imports, read, checks, duplicates, raw gate, landing copy, the rest), and
the ratio to `read_csv` without the fixed import costs (`*_less_imports_vs_read_csv_cpu`: the
modules' and GX's, measured alone by `gx_import`; `read_csv` keeps its own, DuckDB's only).
Nothing here asserts a time.
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
cpu_started = time.process_time()
from pathlib import Path
from governed_marketing.crm import ingest
from governed_marketing.policy import load_policy
from governed_marketing.warehouse import connect
cpu_phases = {"imports_cpu_s": time.process_time() - cpu_started}
def timed(inner, label):
    def call(*args, **kwargs):
        at = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            cpu_phases[label] = cpu_phases.get(label, 0.0) + time.process_time() - at
    return call
for name, label in (("read_export_file", "read_cpu_s"), ("_split_duplicates", "duplicates_cpu_s"),
                    ("_gate_loaded_rows", "raw_gate_cpu_s"), ("_archive", "landing_copy_cpu_s")):
    setattr(ingest, name, timed(getattr(ingest, name), label))
for name, clean in list(ingest.CLEANERS.items()):
    ingest.CLEANERS[name] = timed(clean, "checks_cpu_s")
export, home = Path(sys.argv[1]), Path(sys.argv[2])
started = time.perf_counter()
conn = connect(home / "warehouse.duckdb")
try:
    at = time.process_time()
    result = ingest.ingest_export(export, conn=conn, policy=load_policy(), landing_root=home / "landing")
    cpu_phases["ingest_export_cpu_s"] = time.process_time() - at
finally:
    conn.close()
seconds = time.perf_counter() - started
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print()
print(json.dumps({"seconds": seconds, "rows": result.contacts_read, "quarantined": result.rows_quarantined,
                  "hwm_kib": hwm, "module": ingest.__file__, "phases": cpu_phases}))
"""

#: GX's own import, after what the ingest module imports anyway (pandas, pyarrow, DuckDB): the raw
#: gate pays it on its first call, once per process whatever the export's size.
_GX_IMPORT = """
import json, time
import duckdb, pandas, pyarrow
from governed_marketing.crm import ingest
at = time.process_time()
import great_expectations
print()
print(json.dumps({"seconds": 0.0, "gx_import_cpu_s": time.process_time() - at, "hwm_kib": 0}))
"""

#: Per phase of `ingest_export` (process CPU, DuckDB's threads included): where a run's CPU goes.
#: `imports_cpu_s`: the ingest module's imports (a fresh interpreter's fixed cost); `raw_gate_cpu_s`
#: includes GX's import on the gate's first call (`gx_import` measures it alone).
PHASES = (
    "imports_cpu_s",
    "read_cpu_s",
    "checks_cpu_s",
    "duplicates_cpu_s",
    "raw_gate_cpu_s",
    "landing_copy_cpu_s",
    "ingest_export_cpu_s",
)


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
    variants: dict[str, tuple[str, dict[str, str]]] = {
        "read_csv": (_READ_CSV, env),
        "ingest": (_INGEST, env),
        "gx_import": (_GX_IMPORT, env),
    }
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
    figures["gx_import"] = {"gx_import_cpu_s": _median(samples.pop("gx_import"), "gx_import_cpu_s")}
    for name, runs in samples.items():
        figures[name] = {
            "wall_median_s": _median(runs, "seconds"),
            "cpu_median_s": _median(runs, "cpu_s"),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "wall_samples_s": [round(r["seconds"], 2) for r in runs],
        }
        if "phases" in runs[0]:
            figures[name]["phases_cpu_median_s"] = {
                key: round(statistics.median(r["phases"].get(key, 0.0) for r in runs), 2) for key in PHASES
            }
            # Writing (upserts, quarantine, commit) and the rest of ingest_export: what the phases leave.
            phases = figures[name]["phases_cpu_median_s"]
            phases["write_and_rest_cpu_s"] = round(
                phases["ingest_export_cpu_s"] - sum(phases[k] for k in PHASES[1:-1]), 2
            )
    for name in ("ingest", "ingest_base"):
        if name in figures:
            figures[f"{name}_vs_read_csv_wall"] = round(
                figures[name]["wall_median_s"] / figures["read_csv"]["wall_median_s"], 1
            )
            figures[f"{name}_vs_read_csv_cpu"] = round(
                figures[name]["cpu_median_s"] / figures["read_csv"]["cpu_median_s"], 1
            )
            # The same ratio without the fixed import costs (modules, GX): what grows with the export.
            fixed = figures[name]["phases_cpu_median_s"]["imports_cpu_s"] + figures["gx_import"]["gx_import_cpu_s"]
            figures[f"{name}_less_imports_vs_read_csv_cpu"] = round(
                (figures[name]["cpu_median_s"] - fixed) / figures["read_csv"]["cpu_median_s"], 1
            )
    record(f"ingest_{CONTACTS}", figures)
    assert samples["ingest"][0]["rows"] > 0
