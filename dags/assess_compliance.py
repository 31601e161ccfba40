"""
## Assess compliance
The regular assessment (the tenth topic of the compliance checklist), monthly and on demand:
computes findings from governance.yml's `review` block and the data (reviews overdue or due within
30 days, vendors without a DPA, transfer safeguard or current review, DPIAs without a current review,
consent proofs under an older notice per campaign, overdue privacy requests, the retention backlog,
the policy changed since its review) and lists who can read the report (Airflow's auth manager).
Each run's findings go to the audit log (hash-chained; codes and counts, never personal data) and to
the report's "Regular assessment" section. A blocking finding also stops generation for the
purposes it affects (checked again at every campaign's prepare step) until it is resolved.

Owner: privacy-office - Inputs: governance.yml, the warehouse (`intermediate`, `ops` tables) -
Outputs: `ops.audit_log` (action `assess`), the report.
Rerun: safe; each run appends one audit entry and changes no data (the retention check is a dry run).
On findings: the run succeeds; act on each finding by its owner and due date (`gmp assess` shows them),
then record the review in governance.yml `review` (and the new `review.policy.sha256` from
`gmp policy check`). Ends by rebuilding the compliance report (`rebuild_report`).
"""

from datetime import timedelta

from airflow.sdk import dag, task
from governed_marketing.orchestration import assets
from governed_marketing.orchestration.failures import fail_fast
from governed_marketing.orchestration.report_task import rebuild_report
from pendulum import datetime


@dag(
    schedule="@monthly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    default_args={"owner": "privacy-office", "retries": 2, "retry_delay": timedelta(minutes=5)},
    tags=["marketing", "gdpr", "assessment"],
    max_active_runs=1,
)
def assess_compliance():
    @task(pool=assets.WAREHOUSE_POOL)
    def assess(run_id: str) -> dict:
        from governed_marketing.assessment import assess

        with fail_fast():
            result = assess(actor=run_id)
            return {"findings": len(result.findings), "audit_seq": result.audit_seq}  # counts only

    assess() >> rebuild_report()


assess_compliance()
