"""Every DAG imports, is documented and owned, retries, and parses fast (Astronomer's integrity test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

DAGS_DIR = PROJECT_ROOT / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))

pytestmark = pytest.mark.dags


@pytest.fixture(scope="module")
def dag_bag():
    from governed_marketing.dbt import ensure_manifest

    ensure_manifest()
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_every_dag_file_imports_without_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert len(dag_bag.dags) == len(DAG_FILES)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_id_is_the_file_stem(dag_bag, path: Path):
    assert path.stem in dag_bag.dags


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_has_owner_tags_retries_and_a_runbook(dag_bag, path: Path):
    dag = dag_bag.dags[path.stem]
    assert dag.owner and dag.owner != "airflow"
    assert {"marketing", "gdpr"} <= set(dag.tags)
    assert dag.default_args.get("retries", 0) >= 1
    assert dag.doc_md and "Rerun:" in dag.doc_md and "Owner:" in dag.doc_md
    assert dag.max_active_runs == 1


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_dag_file_parses_in_under_one_second_of_cpu(path: Path):
    """Measured in a fresh interpreter after Airflow itself is imported, as the DAG processor does.

    CPU time of that process (user + system), not wall time: a busy shared machine stretches the wall
    clock, not the work a parse does. The wall figure is in the benchmarks (bench/results.json).
    """
    script = (
        "import time, importlib.util, airflow.sdk\n"
        f"spec = importlib.util.spec_from_file_location('dag_under_test', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "start = time.process_time(); spec.loader.exec_module(module)\n"
        "print(time.process_time() - start)\n"
    )
    # The least of up to three parses: CPU time too grows on an oversubscribed machine (cache misses; 1.33 s
    # measured at load 11 for a file that parses in well under 1 s on an idle one), never below the work done.
    samples: list[float] = []
    while len(samples) < 3 and (not samples or min(samples) >= 1.0):
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        samples.append(float(out.stdout.strip().splitlines()[-1]))  # time.process_time(): CPU, not wall
    assert min(samples) < 1.0, f"{path.name} took {min(samples):.2f}s of CPU to parse (least of {samples})"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.stem)
def test_every_dag_ends_by_rebuilding_the_report_whatever_happened(dag_bag, path: Path):
    dag = dag_bag.dags[path.stem]
    leaves = [t.task_id for t in dag.tasks if not t.downstream_list]
    assert leaves == ["rebuild_report"]  # the one last task: nothing runs after it, it waits for all
    report = dag.get_task("rebuild_report")
    assert report.trigger_rule == "all_done" and report.retries == 0


def test_deterministic_failures_are_one_list_translated_at_one_place():
    """No DAG file, operator or library module decides by itself which errors skip the retries."""
    edge = PROJECT_ROOT / "plugins" / "governed_marketing" / "orchestration"
    translating = {edge / "failures.py", edge / "report_task.py"}  # the report task fails a failed run on purpose
    sources = [*DAG_FILES, *(PROJECT_ROOT / "plugins" / "governed_marketing").rglob("*.py")]
    for source in sources:
        if source not in translating:
            assert "AirflowFailException" not in source.read_text(), source.name


def test_no_dag_file_touches_a_database_or_variable_at_top_level():
    forbidden = ("Variable.get", "BaseHook.get_connection", "duckdb.connect", "load_policy(")
    for path in DAG_FILES:
        top_level = [line for line in path.read_text().splitlines() if line and not line.startswith((" ", "\t"))]
        for line in top_level:
            assert not any(token in line for token in forbidden), f"{path.name}: {line}"


def test_dags_chain_by_assets(dag_bag):
    from governed_marketing.orchestration import assets

    ingest = dag_bag.dags["ingest_crm"]
    models = dag_bag.dags["build_marketing_models"]
    content = dag_bag.dags["generate_campaign_content"]
    assert any(assets.RAW_CRM in t.outlets for t in ingest.tasks)
    assert any(assets.CAMPAIGN_AUDIENCES in t.outlets for t in models.tasks)
    assert any(assets.OUTBOX in t.outlets for t in content.tasks)
    assert "gmp://warehouse/raw/crm" in str(models.timetable.asset_condition)
    assert "gmp://warehouse/marts/campaign_audience" in str(content.timetable.asset_condition)


def test_model_dag_renders_one_dbt_build_task_per_model_from_the_manifest(dag_bag):
    models = dag_bag.dags["build_marketing_models"]
    dbt_tasks = {t.task_id: t for t in models.tasks if t.task_id.startswith("marketing_models.")}
    for model in ("stg_crm__contacts", "int_campaign_eligibility", "campaign_audience", "generation_cohorts"):
        assert f"marketing_models.{model}_model_build" in dbt_tasks
    assert all(t.retries >= 1 for t in dbt_tasks.values())


def test_scheduled_model_builds_leave_dbt_unit_tests_to_ci(dag_bag):
    """Every dbt task of the production DAG excludes unit tests.

    `make test` and CI still run every one of them: tests/dbt/test_dbt_project.py builds the project with
    plain `dbt build` and asserts that all unit tests the manifest declares ran and passed.
    """
    import json

    from governed_marketing.dbt import manifest_path

    assert json.loads(manifest_path().read_text(encoding="utf-8"))["unit_tests"], "the project has unit tests"
    models = dag_bag.dags["build_marketing_models"]
    # Tasks that can run dbt build or dbt test.
    dbt_tasks = [t for t in models.tasks if set(getattr(t, "base_cmd", None) or []) & {"build", "test"}]
    assert any(t.task_id.endswith("campaign_audience_model_build") for t in dbt_tasks)
    for dbt_task in dbt_tasks:
        exclude = dbt_task.exclude if isinstance(dbt_task.exclude, str) else " ".join(dbt_task.exclude or [])
        assert "resource_type:unit_test" in exclude.split(), (dbt_task.task_id, dbt_task.exclude)


def test_model_tasks_skip_the_per_task_cost_that_is_not_the_model(dag_bag):
    """No JSON artifacts in Cosmos' throwaway copy, a relation cache of the model's schemas, a frozen heap."""
    from governed_marketing.orchestration.dbt_tasks import DBT_GLOBAL_FLAGS, freeze_heap, unfreeze_heap

    models = dag_bag.dags["build_marketing_models"]
    dbt_tasks = [t for t in models.tasks if t.task_id.endswith("_model_build")]
    assert dbt_tasks
    for dbt_task in dbt_tasks:
        assert list(DBT_GLOBAL_FLAGS) == dbt_task.dbt_cmd_global_flags, dbt_task.task_id
        assert dbt_task._pre_execute_hook is freeze_heap
        assert dbt_task._post_execute_hook is unfreeze_heap
        assert dbt_task.partial_parse  # partial parsing between tasks is what keeps the rest cheap
