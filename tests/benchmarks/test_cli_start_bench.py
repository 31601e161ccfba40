"""CLI start: `gmp --help` and `gmp dsr list` beside `python -c pass`, with PYTHONDONTWRITEBYTECODE=1.

With that variable set (as in many container images) Python never writes bytecode at import time, so
a venv installed without compiled bytecode compiles every module it imports on every start. The
Makefile installs with UV_COMPILE_BYTECODE=1 and compiles plugins/ (the editable project) for that.

    uv run --frozen python -m tests.benchmarks.test_cli_start_bench   # prints the figures only
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark

RUNS = 5
BIN = Path(sys.executable).parent
COMMANDS = {
    "python_pass": [sys.executable, "-c", "pass"],
    "gmp_help": [str(BIN / "gmp"), "--help"],
    "gmp_dsr_list": [str(BIN / "gmp"), "dsr", "list"],
}


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(home: Path, runs: int = RUNS) -> dict:
    """Median wall and CPU seconds of each command over `runs` starts (after one warm-up start)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GMP_", "PYTEST"))}
    env.update(GMP_HOME=str(home), PYTHONDONTWRITEBYTECODE="1", GMP_PSEUDONYM_KEY="bench-cli-start-key-0123456789ab")
    figures: dict = {}
    for name, argv in COMMANDS.items():
        subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, check=True)  # warm the page cache
        walls, cpus = [], []
        for _ in range(runs):
            cpu, start = _child_cpu(), time.perf_counter()
            subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, check=True)
            walls.append(time.perf_counter() - start)
            cpus.append(_child_cpu() - cpu)
        figures[name] = {
            "wall_median_s": round(statistics.median(walls), 3),
            "cpu_median_s": round(statistics.median(cpus), 3),
            "wall_samples_s": [round(w, 3) for w in walls],
        }
    return figures


def test_bench_cli_start(tmp_path):
    from tests.benchmarks.conftest import record

    figures = measure(tmp_path / "gmp")
    assert set(figures) == set(COMMANDS)
    record(
        "cli_start",
        {
            **figures,
            "runs": RUNS,
            "PYTHONDONTWRITEBYTECODE": "1",
            "command": "uv run --frozen pytest -m benchmark tests/benchmarks/test_cli_start_bench.py",
        },
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    print(json.dumps(measure(Path(tempfile.mkdtemp(prefix="gmp-cli-start-"))), indent=2))
