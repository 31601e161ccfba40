"""
## Build marketing models
Runs the dbt project (`dbt_project/`) through Astronomer Cosmos: one `dbt build` task per model
(`<model>_model_build`: the model and its data tests), rendered from the manifest (dbt unit tests are
excluded here; CI and `make test` run them): staging views
over the raw CRM tables, consent state, suppression, age, eligibility per campaign with one flag
per exclusion reason, then the marts
`campaign_audience` (allow-listed fields + HMAC pseudonym), `generation_cohorts` (cells of at
least k) and `audience_funnel`. Policy comes from governance.yml through the governance tables.

Owner: analytics - Inputs: raw CRM tables (asset `RAW_CRM`) - Outputs: marts (asset `CAMPAIGN_AUDIENCES`)
Warehouse: the dbt profile target is `GMP_WAREHOUSE` (duckdb | postgres), the same warehouse the
other DAGs read and write (`DBT_TARGET` is only the analyst's CLI default; it never steers this DAG).
Cost: each task is one in-process `dbt build`; what it pays besides its model is cut (no JSON
artifacts, relation cache of the model's schemas, Cosmos' gc.collect() over dbt's objects only:
governed_marketing.orchestration.dbt_tasks). Against a plain `dbt build` of the same data
(tests/benchmarks/dbt_mode.py, same run, 2 shared cores): 2,000 contacts 4.2x -> 3.3x, 100,000
contacts 3.9x -> 2.4x; the DAG's CPU fell by a third to a half. The rest is per task (partial-parse load, adapter,
on-run-start policy check) plus the report.
Rerun: safe; models are rebuilt from raw. A failing dbt test fails its model's task and downstream
models are not built: the task's log names the test; clearing a model's task rebuilds that model
alone. Ends by rebuilding the compliance report
(`rebuild_report`, also when a model failed).
"""

import os
from datetime import timedelta
from pathlib import Path

from airflow.sdk import Param, dag, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import InvocationMode, LoadMode, TestBehavior
from governed_marketing.orchestration import assets
from governed_marketing.orchestration.dbt_tasks import DBT_GLOBAL_FLAGS, freeze_heap, unfreeze_heap
from governed_marketing.orchestration.report_task import rebuild_report
from pendulum import datetime

DBT_PROJECT = Path(__file__).resolve().parent.parent / "dbt_project"


@dag(
    schedule=[assets.RAW_CRM],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    default_args={"owner": "analytics", "retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["marketing", "dbt", "gdpr"],
    max_active_runs=1,
    params={"as_of": Param(None, type=["null", "string"], description="ISO 8601 as-of time (default: now)")},
)
def build_marketing_models():
    models = DbtTaskGroup(
        group_id="marketing_models",
        project_config=ProjectConfig(
            manifest_path=DBT_PROJECT / "target" / "manifest.json",
            project_name="governed_marketing",
            dbt_project_path=DBT_PROJECT,
        ),
        profile_config=ProfileConfig(
            profile_name="governed_marketing",
            target_name=os.environ.get("GMP_WAREHOUSE") or "duckdb",
            profiles_yml_filepath=DBT_PROJECT / "profiles.yml",
        ),
        # One in-process `dbt build` per model (per-model status and retries). Cosmos' watcher mode (one build
        # for the project) needs a run and a test task per model and was no faster here; see the README.
        execution_config=ExecutionConfig(invocation_mode=InvocationMode.DBT_RUNNER),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            # Exposures document the vendor (nothing to run). dbt unit tests check the SQL, not the data:
            # CI and `make test` run them (tests/dbt); a scheduled build does not pay for them each time.
            exclude=["resource_type:exposure", "resource_type:unit_test"],
        ),
        operator_args={
            "install_deps": False,
            # The marts' asset is published once by `publish_audiences`; per-model assets only cost time.
            "emit_datasets": False,
            # Env vars, not dbt vars: a var that changes per run makes every task parse the whole project.
            "env": {"GMP_DBT_AS_OF": "{{ params.as_of or '' }}", "GMP_DBT_RUN_ID": "{{ run_id }}"},
            "pool": assets.WAREHOUSE_POOL,
            # Per-task cost that is not the model's (see governed_marketing.orchestration.dbt_tasks):
            # no JSON artifacts in Cosmos' throwaway project copy, a relation cache of the model's schemas,
            # and Cosmos' gc.collect() after the dbt call walks only what that call made.
            "dbt_cmd_global_flags": list(DBT_GLOBAL_FLAGS),
            "pre_execute": freeze_heap,
            "post_execute": unfreeze_heap,
        },
    )

    @task(outlets=[assets.CAMPAIGN_AUDIENCES])
    def publish_audiences() -> str:
        return "campaign_audience"

    models >> publish_audiences() >> rebuild_report()


build_marketing_models()
