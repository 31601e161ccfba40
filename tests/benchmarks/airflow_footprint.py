"""`make airflow` (`gmp airflow standalone`) after start: how many processes, how much memory.

    uv run --frozen python -m tests.benchmarks.airflow_footprint   # prints the figures

Starts the standalone in a fresh GMP_HOME on a free port, waits until the login banner says the UI
is up, lets the components settle, then counts the processes of its tree and sums their RSS and PSS
(psutil; the RSS sum counts pages shared by forked workers once per process), and stops it (SIGTERM
to its own process group, then SIGKILL if it lingers).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.dbt_mode import _env
from tests.conftest import PROJECT_ROOT

READY = "Airflow is up"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tree(pid: int) -> list:
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def measure(home: Path | None = None, *, settle_s: float = 30.0, ready_timeout_s: float = 600.0) -> dict:
    import psutil

    home = home or Path(tempfile.mkdtemp(prefix="gmp-footprint-"))
    log = home.parent / "standalone.log"
    gmp = Path(sys.executable).with_name("gmp")
    env = {**_env(home), "AIRFLOW__API__PORT": str(_free_port()), "AIRFLOW__API__HOST": "127.0.0.1"}
    # `airflow standalone` starts its components as `airflow ...` from PATH (`make airflow` runs in the venv).
    env["PATH"] = f"{gmp.parent}{os.pathsep}{env.get('PATH', '')}"
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(  # noqa: S603 - our own venv's gmp
            [str(gmp), "airflow", "standalone"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        while READY not in log.read_text(encoding="utf-8", errors="replace"):
            if process.poll() is not None or time.perf_counter() - start > ready_timeout_s:
                raise RuntimeError(f"standalone did not come up; see {log}")
            time.sleep(2)
        ready_s = time.perf_counter() - start
        time.sleep(settle_s)
        processes = _tree(process.pid)
        rss = pss = 0
        names: dict[str, int] = {}
        for proc in processes:
            try:
                memory = proc.memory_full_info()  # pss: shared pages split among the processes sharing them
                rss, pss = rss + memory.rss, pss + memory.pss
                cmd = " ".join(proc.cmdline()[:3])
            except psutil.NoSuchProcess:
                continue
            key = next((w for w in ("api-server", "scheduler", "dag-processor", "triggerer", "supervisor") if w in cmd),
                       Path(proc.cmdline()[0]).name if proc.cmdline() else "?")  # fmt: skip
            names[key] = names.get(key, 0) + 1
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return {
        "ready_s": round(ready_s, 1),
        "settle_s": settle_s,
        "processes": len(processes),
        "rss_mib": round(rss / 2**20, 1),
        "pss_mib": round(pss / 2**20, 1),
        "processes_by_kind": dict(sorted(names.items())),
    }


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
