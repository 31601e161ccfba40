"""
## Ingest CRM
Loads a CRM export (the four CSV files of the contract in the README) into the raw tables of the
warehouse. Rows that fail validation go to `raw.quarantine` with the file, line and reason; if a
file's failing share exceeds `ingest.max_quarantine_share` in governance.yml, nothing is loaded and
the run fails naming the file. The export is archived under `$GMP_HOME/landing/<load_id>/`.

Owner: marketing-data - Inputs: `crm_dir` param, else the drop folder `GMP_CRM_DIR`, else
`$GMP_HOME/crm_exports/latest` (what the daily scheduled run reads); or, with `source: hubspot` (param or
`ingest.source` in governance.yml), what changed in HubSpot since the last pull (token: connection
`hubspot_default`, else HUBSPOT_ACCESS_TOKEN) - Outputs: raw tables (asset `RAW_CRM`)
Rerun: safe; an export already loaded (same SHA-256) is a skip: nothing changes, no asset event, nothing
downstream runs. Ends by rebuilding the compliance report (`rebuild_report`, also when a task failed).
On failure: read the task log's one-line reason (also in the run's report); fix the export or raise the
policy limit knowingly. A missing or unreadable export fails at once, without retries.
"""

from datetime import timedelta

from airflow.sdk import Param, dag, task
from governed_marketing.orchestration import assets
from governed_marketing.orchestration.failures import fail_fast
from governed_marketing.orchestration.report_task import rebuild_report
from pendulum import datetime


@dag(
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    default_args={"owner": "marketing-data", "retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["marketing", "crm", "gdpr"],
    max_active_runs=1,
    params={
        "crm_dir": Param(None, type=["null", "string"], description="Directory with the CRM export"),
        "source": Param(
            None,
            type=["null", "string"],
            enum=[None, "csv", "hubspot"],
            description="csv | hubspot (default: ingest.source)",
        ),
        "as_of": Param(None, type=["null", "string"], description="ISO 8601 as-of time for the downstream models"),
    },
)
def ingest_crm():
    @task(outlets=[assets.RAW_CRM], pool=assets.WAREHOUSE_POOL)
    def load_export(params: dict, run_id: str) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from governed_marketing.orchestration.connections import hubspot_token
        from governed_marketing.orchestration.task_bodies import ingest_from_source

        with fail_fast():
            counts = ingest_from_source(  # counts, never rows
                params.get("source"), params.get("crm_dir"), run_id=run_id, hubspot_token=hubspot_token
            )
        if counts.get("already_loaded"):  # skipped: no asset event, so no downstream DAG runs
            raise AirflowSkipException(f"export {counts.get('load_id')} was already loaded; nothing changed")
        return counts

    load_export() >> rebuild_report()


ingest_crm()
