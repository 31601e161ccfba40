"""Benchmarks write their figures to bench/results.json (merged by key); they assert no times."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

RESULTS = Path(os.environ.get("GMP_BENCH_RESULTS", PROJECT_ROOT / "bench" / "results.json"))
CONTACTS = int(os.environ.get("GMP_BENCH_CONTACTS", "100000"))
REPEATS = int(os.environ.get("GMP_BENCH_REPEATS", "3"))


def record(key: str, figures: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def median_seconds(action: Callable[[], object], *, repeats: int = REPEATS, setup: Callable[[], object] | None = None):
    samples = []
    for _ in range(repeats):
        if setup:
            setup()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), samples


@pytest.fixture(scope="session")
def bench_export(tmp_path_factory) -> Path:
    from governed_marketing.crm.generate import write_sample_export

    out = tmp_path_factory.mktemp("bench") / "crm"
    write_sample_export(out, contacts=CONTACTS, seed=1)
    return out
