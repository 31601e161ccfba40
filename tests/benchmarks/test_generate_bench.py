"""How fast `gmp crm generate` writes a sample export, and in how much memory (`make bench`).

Each run is a fresh Python process (interpreter start and imports included, as for the CLI) that
writes GMP_BENCH_CONTACTS contacts (default 100k) with seed 1 and reports its own peak RSS; the
median of GMP_BENCH_REPEATS runs (default 3, at 1M too: a run takes well under a minute) goes to
bench/results.json under "crm_generate_<contacts>", next to a 10k-contact run's peak RSS to show
that memory does not grow with the contact count. The runs must write identical files (same seed).
Nothing here asserts a time.

    GMP_BENCH_CONTACTS=1000000 uv run --frozen pytest -m benchmark tests/benchmarks/test_generate_bench.py -s
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.benchmarks.conftest import CONTACTS, record
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark

SEED = 1
SMALL = 10_000
REPEATS = int(os.environ.get("GMP_BENCH_REPEATS", "3"))
_CHILD = """
import json, resource, sys, time
from pathlib import Path

started = time.perf_counter()
from governed_marketing.sample_data.crm_export import write_sample_export

imported = time.perf_counter()
summary = write_sample_export(Path(sys.argv[1]), contacts=int(sys.argv[2]), seed=int(sys.argv[3]))
generated = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "rows": summary.rows,
    "import_s": imported - started,
    "generate_s": generated - imported,
    "cpu_s": usage.ru_utime + usage.ru_stime,
    "peak_rss_kb": usage.ru_maxrss,  # KiB on Linux
}))
"""


def _generate(out: Path, contacts: int) -> dict:
    """One run in a fresh interpreter: its figures, wall time from the outside, and the files' digest."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(out), str(contacts), str(SEED)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    digest = hashlib.sha256()
    for name in sorted(figures["rows"]):
        with (out / name).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return {
        **figures,
        "wall_s": wall,
        "sha256": digest.hexdigest(),
        "bytes": sum(p.stat().st_size for p in out.iterdir()),
    }


def test_bench_crm_generate(tmp_path):
    small = _generate(tmp_path / "small", SMALL)
    runs = [_generate(tmp_path / "export", CONTACTS) for _ in range(REPEATS)]  # overwritten each run

    assert all(run["rows"]["contacts.csv"] == CONTACTS for run in runs)
    assert len({run["sha256"] for run in runs}) == 1, "the same seed wrote different files"
    wall = statistics.median(run["wall_s"] for run in runs)
    generate = statistics.median(run["generate_s"] for run in runs)
    rows = runs[0]["rows"]
    figures = {
        "contacts": CONTACTS,
        "seed": SEED,
        "repeats": REPEATS,
        "rows": rows,
        "output_mb": round(runs[0]["bytes"] / 2**20),
        "wall_median_s": round(wall, 2),
        "wall_samples_s": [round(run["wall_s"], 2) for run in runs],
        "generate_median_s": round(generate, 2),
        "import_median_s": round(statistics.median(run["import_s"] for run in runs), 2),
        "cpu_median_s": round(statistics.median(run["cpu_s"] for run in runs), 2),  # less sensitive to load
        "contacts_per_s": round(CONTACTS / wall),
        "records_per_s": round(sum(rows.values()) / wall),
        "peak_rss_mb": round(max(run["peak_rss_kb"] for run in runs) / 1024),
        f"peak_rss_mb_at_{SMALL}": round(small["peak_rss_kb"] / 1024),
        "cpus": os.cpu_count(),
        "command": f"GMP_BENCH_CONTACTS={CONTACTS} uv run --frozen pytest -m benchmark "
        "tests/benchmarks/test_generate_bench.py",
    }
    record(f"crm_generate_{CONTACTS}", figures)
    print(json.dumps(figures, indent=2))
