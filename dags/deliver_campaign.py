"""
## Deliver campaigns
Sends each campaign's outbox through the SMTP relay (Airflow connection `smtp_default`, else
`GMP_SMTP_URL`), sender and reply-to per campaign from `governance.yml` `delivery.campaigns`, at most
`delivery.per_minute_cap` messages a minute over `delivery.connections` connections. Without a relay,
or without a `delivery` block, every campaign is `deliver: off` and nothing is sent.

At send time, per message: consent, the suppression list, restriction and objection are checked
again, and unsubscribe clicks waiting in the spool are applied first. Every message carries RFC 8058
one-click unsubscribe (HTTPS + mailto); a click is an objection, effective at once.

Owner: marketing-data - Inputs: outbox (asset `OUTBOX`), `ops.suppression`, raw consent and requests -
Outputs: mail at the relay, `ops.delivery_ledger`, `ops.unsubscribes`
Rerun: safe and at most once: each message is marked `sending` (committed) before its DATA; a rerun
sends only `planned` and due `deferred` rows. A crash mid-send leaves `sending` rows, reported as in
doubt and never resent automatically (a duplicate is worse than a missed newsletter). 4xx answers are
retried with back-off (`delivery.retry`), also by the hourly run; 5xx are bounced, counted, not retried.
XCom carries counts only. Ends by rebuilding the compliance report (`rebuild_report`).
"""

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from governed_marketing.orchestration import assets
from governed_marketing.orchestration.failures import fail_fast
from governed_marketing.orchestration.report_task import rebuild_report
from pendulum import datetime


@dag(
    # Each new outbox, and hourly for the deferred (4xx) messages whose back-off has passed.
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 * * * *", timezone="UTC"), assets=[assets.OUTBOX]),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    default_args={"owner": "marketing-data", "retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["marketing", "delivery", "gdpr"],
    max_active_runs=1,
    params={"as_of": Param(None, type=["null", "string"], description="ISO 8601 as-of time (default: now)")},
)
def deliver_campaign():
    @task
    def campaigns() -> list[str]:
        from governed_marketing.orchestration.task_bodies import campaign_ids

        return campaign_ids()

    @task(pool=assets.WAREHOUSE_POOL)
    def deliver(campaign_id: str, params: dict, run_id: str) -> dict:
        from governed_marketing.orchestration.relay import smtp_relay
        from governed_marketing.orchestration.task_bodies import deliver

        with fail_fast():  # counts only; a retry skips what was sent and leaves `sending` rows (in doubt) alone
            return deliver(campaign_id, run_id=run_id, as_of=params.get("as_of"), relay=smtp_relay())

    deliver.expand(campaign_id=campaigns()) >> rebuild_report()


deliver_campaign()
