"""`build_marketing_models` through dag.test() beside a plain `dbt build` of the same project and data.

    uv run --frozen python -m tests.benchmarks.dbt_mode [CONTACTS]   # prints the figures (default 2000)

The export is `gmp crm generate --contacts N --seed 7`, loaded by the ingest_crm DAG at the sample
as-of; then the model DAG runs once, and `dbt build` once on the same warehouse. Each in its own
process, as a worker and an analyst run them. "full_parses" counts dbt's "Unable to do partial
parsing" invocations: each is a task that parsed the whole project.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import PROJECT_ROOT

SEED = 7
FULL_PARSE = "Unable to do partial parsing"
DBT_START = "Running with dbt="
#: The model DAG's selection (dags/build_marketing_models.py), so both sides do the same work.
DBT_EXCLUDE = ["resource_type:exposure", "resource_type:unit_test"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GMP_", "OPENAI_", "PYTEST", "DBT_"))}
    env.update(
        GMP_HOME=str(home),
        GMP_PSEUDONYM_KEY="bench-dbt-mode-key-0123456789abcdef",
        GMP_LLM_PROVIDER="offline",
        AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _dag(home: Path, dag_id: str, conf: dict) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.dag_run", dag_id, json.dumps(conf)],
        cwd=PROJECT_ROOT,
        env=_env(home),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout + done.stderr


def measure(contacts: int = 2000, work: Path | None = None) -> dict:
    from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF

    work = work or Path(tempfile.mkdtemp(prefix="gmp-dbt-mode-"))
    home, export = work / "gmp", work / "export"
    gmp = Path(sys.executable).with_name("gmp")
    subprocess.run(
        [str(gmp), "crm", "generate", "--out", str(export), "--contacts", str(contacts), "--seed", str(SEED)],
        env=_env(home),
        check=True,
        capture_output=True,
    )
    as_of = SAMPLE_AS_OF.isoformat()
    ingest, _ = _dag(home, "ingest_crm", {"crm_dir": str(export), "as_of": as_of})
    assert ingest["state"] == "success", ingest
    models, log = _dag(home, "build_marketing_models", {"as_of": as_of})
    assert models["state"] == "success", models
    dbt_tasks = [t for t in models["tasks"] if t.startswith("marketing_models.")]

    project = Path(tempfile.mkdtemp(prefix="gmp-dbt-plain-")) / "dbt_project"
    shutil.copytree(PROJECT_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    argv = [str(Path(sys.executable).with_name("dbt")), "build", "--project-dir", str(project)]
    argv += [
        "--profiles-dir",
        str(project),
        "--vars",
        json.dumps({"as_of": as_of}),
        "--exclude",
        *DBT_EXCLUDE,
    ]
    start, cpu = time.perf_counter(), _children_cpu()
    plain = subprocess.run(argv, cwd=project, env=_env(home), capture_output=True, text=True, check=False)
    plain_s, plain_cpu = time.perf_counter() - start, _children_cpu() - cpu
    if plain.returncode != 0:
        raise RuntimeError(plain.stdout[-3000:])
    return {
        "contacts": contacts,
        "seed": SEED,
        "dag_test_s": models["seconds"],
        "dag_test_cpu_s": models["cpu_seconds"],
        "dbt_tasks": len(dbt_tasks),
        # One parse can log two reasons ("config ... changed", then which: "profile has changed"):
        # count the dbt invocations that parsed fully, not the lines.
        "full_parses": sum(FULL_PARSE in invocation for invocation in log.split(DBT_START)[1:]),
        "dbt_invocations": log.count(DBT_START),
        "full_parse_reasons": sorted(
            {line.split(FULL_PARSE, 1)[1].strip()[:80] for line in log.splitlines() if FULL_PARSE in line}
        ),
        "plain_dbt_build_s": round(plain_s, 2),
        "plain_dbt_build_cpu_s": round(plain_cpu, 2),
        "ratio_to_plain": round(models["seconds"] / plain_s, 2),
        "cpu_ratio_to_plain": round(models["cpu_seconds"] / plain_cpu, 2),
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2000), indent=2))
