"""
## Purge expired data
Applies every retention rule in governance.yml (`retention`) to its store: loads of the raw CRM
data and their landing archives, generated drafts, outbox files, access exports, the audit log
(never less than 6 years) and inactive contacts (no update and no activity within the period),
from every table that holds them. Deleted rows are made physically gone (the DuckDB file is
rewritten). Counts per rule go to `ops.retention_runs` and the audit log as evidence.
Then checks the privacy-request queue and fails loudly if a request is past its deadline.

Owner: privacy-office - Inputs: governance.yml `retention`, `ops.dsr_requests` - Outputs: evidence in
`ops.retention_runs`, `ops.audit_log`
Rerun: safe; a purge removes only what is older than the cutoff, a second run finds nothing more.
Trigger with `{"dry_run": true}` (or run `gmp purge --dry-run`) to see what would go.
On failure of `check_overdue_requests`: answer or extend the named requests now (`gmp dsr list`,
`gmp dsr process`, `gmp dsr extend --request-id ... --reason ...` within the first month only).
Ends by rebuilding the compliance report (`rebuild_report`, also when a task failed).
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
    default_args={"owner": "privacy-office", "retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["marketing", "gdpr", "retention"],
    max_active_runs=1,
    params={"dry_run": Param(False, type="boolean", description="Report what would go; remove nothing")},
)
def purge_expired_data():
    @task(pool=assets.WAREHOUSE_POOL)
    def purge(params: dict, run_id: str) -> dict:
        from governed_marketing.privacy.retention import purge

        with fail_fast():
            return purge(dry_run=bool(params.get("dry_run")), actor=run_id).counts()  # counts per rule

    @task(pool=assets.WAREHOUSE_POOL)
    def check_overdue_requests() -> dict:
        from governed_marketing.privacy.dsr import check_overdue

        with fail_fast():  # an overdue request fails at once: retrying cannot help, a person must act
            return check_overdue()

    # independent of each other: a failed purge must not hide an overdue request
    [purge(), check_overdue_requests()] >> rebuild_report()


purge_expired_data()
