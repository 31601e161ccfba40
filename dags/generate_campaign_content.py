"""
## Generate campaign content
Drafts content for every campaign in governance.yml once its audience is rebuilt. Per campaign:

1. **prepare** - the campaign-audience gate (Great Expectations, fails closed), the last-moment
   consent check, one unit per cohort cell (or per recipient in individual mode, where governance.yml
   allows it), the intent recorded in `ops.generation_ledger` with a cost estimate, and the budget
   check (`campaigns.<id>.budget_usd`): over budget, nothing is submitted.
2. **draft** - the vendor-payload gate over exactly what leaves, then only the units the ledger says
   are still to do: `GMP_LLM_MODE=sync` drafts here under a rate limiter; `batch` submits a vendor
   batch and defers to the triggerer until it finishes. Offline templates when no key is set.
3. **approve** - `approval: required` waits for a human in Required actions; `auto` passes.
4. **publish** - consent re-checked, names merged locally, the generated-content gate, the outbox.

Owner: marketing-data - Inputs: `campaign_audience`, `generation_cohorts` - Outputs: outbox (asset `OUTBOX`)
Rerun: safe. Drafts are keyed by (campaign, unit, prompt version, model) in the ledger: a rerun or a
task retry reuses finished units, re-attaches to batches in flight and pays for nothing twice. A
failed gate, an exhausted budget or quota, or units rejected for their content (after one re-ask)
fail the task at once with the reason, without retries: a retry would pay for the same answers.
Units that failed at the vendor (5xx, timeouts) are recorded and requested again by the retry.
Every paid attempt, rejected or not, is in the ledger with its tokens and cost. Ends by rebuilding
the compliance report (`rebuild_report`, also when a task failed).
"""

from datetime import timedelta

from airflow.sdk import Param, dag, task
from governed_marketing.orchestration import assets
from governed_marketing.orchestration.failures import fail_fast
from governed_marketing.orchestration.operators import CampaignApprovalOperator, DraftCampaignOperator
from governed_marketing.orchestration.report_task import rebuild_report
from pendulum import datetime


@dag(
    schedule=[assets.CAMPAIGN_AUDIENCES],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    doc_md=__doc__,
    default_args={"owner": "marketing-data", "retries": 2, "retry_delay": timedelta(seconds=30)},
    tags=["marketing", "llm", "gdpr"],
    max_active_runs=1,
    params={"as_of": Param(None, type=["null", "string"], description="ISO 8601 as-of time (default: now)")},
)
def generate_campaign_content():
    @task
    def campaigns() -> list[str]:
        from governed_marketing.orchestration.task_bodies import campaign_ids

        return campaign_ids()

    @task(pool=assets.WAREHOUSE_POOL)
    def prepare(campaign_id: str, params: dict, run_id: str) -> dict:
        from governed_marketing.orchestration.task_bodies import prepare_generation

        with fail_fast():
            return prepare_generation(campaign_id, run_id=run_id, as_of=params.get("as_of"))  # counts only

    @task(outlets=[assets.OUTBOX], pool=assets.WAREHOUSE_POOL)
    def publish(campaign_id: str, params: dict, run_id: str) -> dict:
        from governed_marketing.orchestration.task_bodies import publish_generation

        with fail_fast():  # a failed content gate: rejected drafts are marked; the next run drafts them again
            return publish_generation(campaign_id, run_id=run_id, as_of=params.get("as_of"))

    campaign_ids = campaigns()
    prepared = prepare.expand(campaign_id=campaign_ids)
    drafted = DraftCampaignOperator.partial(task_id="draft", pool=assets.WAREHOUSE_POOL).expand(
        campaign_id=campaign_ids
    )
    approved = CampaignApprovalOperator.partial(task_id="approve").expand(campaign_id=campaign_ids)
    prepared >> drafted >> approved >> publish.expand(campaign_id=campaign_ids) >> rebuild_report()


generate_campaign_content()
