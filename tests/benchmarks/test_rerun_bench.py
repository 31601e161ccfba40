"""`gmp run` twice over the same export: the first pass, and a rerun with nothing changed beside it.

Each pass is the real CLI in a fresh process (offline provider, one GMP_HOME, an explicit as-of);
wall and CPU come from os.wait4, peak RSS is the child's ru_maxrss. Per task, the duration comes
from the run's Airflow metadata and the peak RSS from the process's VmRSS sampled every 0.25 s
(`gmp run` runs every DAG in that one process): where the time and the memory of a pass go.

The rerun's goal (issue #16) is <= 10% of the first pass, 0 vendor calls and 0 files rewritten:
"rewritten" counts the files under GMP_HOME whose bytes or modification time changed, leaving
out what every pass writes by design (its log, the run lock, the warehouse file, the Airflow
metadata and task logs, and the reports, one per DAG run). Figures go to bench/results.json under
`rerun_<contacts>`; nothing is asserted as a time. GMP_BENCH_CONTACTS sets the size (default 100k:
about four minutes on 2 cores).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.benchmarks.conftest import BENCH_KEY, CONTACTS, record
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark

AS_OF = "2026-12-01T00:00:00Z"
#: What every pass writes by design; the rest of GMP_HOME is what a rerun must leave alone.
WRITTEN_EACH_PASS = ("logs", "reports", "airflow", "run.lock", "warehouse.duckdb", "audit")


class _RssSampler(threading.Thread):
    """(epoch seconds, VmRSS in KiB) of one process, every `every` seconds until it ends."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.status, self.every, self.samples = Path(f"/proc/{pid}/status"), every, []

    def run(self) -> None:
        while True:
            try:
                text = self.status.read_text()
            except OSError:  # the process has ended
                return
            rss = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("VmRSS:")), None)
            if rss is None:  # a zombie: no memory left
                return
            self.samples.append((time.time(), rss))
            time.sleep(self.every)


def _tasks(home: Path, samples: list[tuple[float, int]]) -> list[dict]:
    """Each task instance of the pass, in start order: its duration and the process's peak RSS meanwhile."""
    database = home / "airflow" / "airflow.db"
    with sqlite3.connect(database) as metadata:
        rows = metadata.execute(
            "select dag_id, task_id, start_date, end_date, duration from task_instance"
            " where start_date is not null and end_date is not null order by start_date"
        ).fetchall()
    tasks = []
    for dag_id, task_id, start, end, duration in rows:
        begin, finish = (datetime.fromisoformat(t).replace(tzinfo=UTC).timestamp() for t in (start, end))
        inside = [rss for at, rss in samples if begin <= at <= finish]
        tasks.append(
            {
                "task": f"{dag_id}.{task_id}",
                "duration_s": round(duration or 0.0, 1),
                "peak_rss_mb": round(max(inside) / 1024) if inside else None,
            }
        )
    return tasks


def _pass(home: Path, export: Path, log: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GMP_", "OPENAI_", "AIRFLOW"))}
    env.update(GMP_HOME=str(home), GMP_PSEUDONYM_KEY=BENCH_KEY, GMP_LLM_PROVIDER="offline")
    argv = [sys.executable, "-m", "governed_marketing.cli", "run", "--crm", str(export), "--as-of", AS_OF]
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
        sampler = _RssSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    sampler.join(timeout=5)
    assert os.waitstatus_to_exitcode(status) == 0, log.read_text(errors="replace")[-3000:]
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "kept": "kept  generate_campaign_content" in log.read_text(errors="replace"),
        "tasks": _tasks(home, sampler.samples),
    }


def _files(home: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(home)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in home.rglob("*")
        if path.is_file() and path.relative_to(home).parts[0] not in WRITTEN_EACH_PASS
    }


def test_a_rerun_with_nothing_changed(bench_export, tmp_path):
    home = tmp_path / "home"
    first = _pass(home, bench_export, tmp_path / "first.log")
    before = _files(home)
    rerun = _pass(home, bench_export, tmp_path / "rerun.log")
    after = _files(home)
    rewritten = sorted(name for name in before.keys() & after.keys() if before[name] != after[name])
    record(
        f"rerun_{CONTACTS}",
        {
            "contacts": CONTACTS,
            "first": first,
            "rerun": rerun,
            "rerun_wall_share": round(rerun["wall_s"] / first["wall_s"], 3),
            "rerun_cpu_share": round(rerun["cpu_s"] / first["cpu_s"], 3),
            "files_rewritten": len(rewritten),
            "files_rewritten_sample": rewritten[:10],
            "files_added": len(after.keys() - before.keys()),
            "load_average": os.getloadavg(),
            "command": "GMP_BENCH_CONTACTS=N uv run --frozen pytest -m benchmark tests/benchmarks/test_rerun_bench.py",
        },
    )
    assert rerun["kept"], "the rerun ran the models and content DAGs again"
