"""
## Process privacy requests
Answers the data subjects' requests (GDPR Art. 15-21) that arrived through the CRM export
(`dsr_requests.csv`) or `gmp dsr submit`: access and portability exports
(`$GMP_HOME/exports/<request_id>/`), rectification of the contact rows, restriction and objection
(effective at once; pending outbox messages withdrawn; objectors suppressed for good), and erasure
from every store, physically, verified by a scan of every table and file, with a receipt in
`$GMP_HOME/receipts/<request_id>.json` that holds no personal data. `gmp run` runs it after the
ingest and before the models are built, so an erased person is never modelled again.

Owner: privacy-office - Inputs: `raw.crm_dsr_requests`, the dbt manifest - Outputs: exports, receipts,
`ops.dsr_requests` (the ledger), `ops.suppression`, `ops.audit_log`
Rerun: safe; only requests still open are handled, each step of an erasure can be repeated, and an
erasure whose scan still finds the person stays `failed` and is retried on the next run.
On failure: `gmp dsr list` shows what is open and its days left; the receipt names the stores the
scan found (never the identifiers). Overdue requests fail `purge_expired_data.check_overdue_requests`.
With the HubSpot source, `inform_crm` then asks HubSpot to GDPR-delete erased contacts (object id
only) and writes objections and restrictions back as unsubscribes; what fails is retried next run.
XCom carries request ids and counts only. Ends by rebuilding the compliance report (`rebuild_report`).
"""

from datetime import timedelta

from airflow.sdk import Param, dag, task
from governed_marketing.orchestration import assets
from governed_marketing.orchestration.failures import fail_fast
from governed_marketing.orchestration.report_task import rebuild_report
from pendulum import datetime


@dag(
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    default_args={"owner": "privacy-office", "retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["marketing", "gdpr", "privacy"],
    max_active_runs=1,
    params={"as_of": Param(None, type=["null", "string"], description="ISO 8601 as-of time (default: now)")},
)
def process_privacy_requests():
    @task(pool=assets.WAREHOUSE_POOL)
    def answer_requests(params: dict, run_id: str) -> dict:
        from governed_marketing.delivery.mailbox import collect_mailto_unsubscribes
        from governed_marketing.privacy.process import process_pending, summary

        with fail_fast():
            unsubscribes = collect_mailto_unsubscribes()  # mailto unsubscribes + spooled clicks: objections now
            return {**summary(process_pending(as_of=params.get("as_of"), actor=run_id)), "unsubscribes": unsubscribes}

    @task(pool=assets.WAREHOUSE_POOL)
    def inform_crm(run_id: str) -> dict:
        """HubSpot asked to erase / unsubscribe what was answered here (only with the HubSpot source)."""
        from governed_marketing.orchestration.connections import hubspot_token
        from governed_marketing.orchestration.task_bodies import inform_crm

        with fail_fast():
            return inform_crm(run_id=run_id, token=hubspot_token())  # counts only

    answer_requests() >> inform_crm() >> rebuild_report()


process_privacy_requests()
