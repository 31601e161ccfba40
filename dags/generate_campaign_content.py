"""
## Generate campaign content
Drafts content for every campaign in governance.yml whose audience was rebuilt. Per campaign: the
campaign-audience gate (Great Expectations, fails closed), the last-moment consent check, one draft
per cohort cell from the provider (offline templates, or OpenAI when a key is set: only cohort
attributes are sent), then names merged locally and the outbox written.

Owner: marketing-data - Inputs: `campaign_audience`, `generation_cohorts` - Outputs: outbox (asset `OUTBOX`)
Rerun: safe; drafts are keyed by (campaign, cohort, prompt version, model) and reused, the outbox
file is rewritten atomically. A failed gate fails the task with the gate's one-line reason and
nothing is sent or written.
"""

from datetime import timedelta

from airflow.sdk import Param, dag, task
from governed_marketing import assets
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
        from governed_marketing.pipeline import campaign_ids

        return campaign_ids()

    @task(outlets=[assets.OUTBOX], pool=assets.WAREHOUSE_POOL)
    def generate(campaign_id: str, params: dict, run_id: str) -> dict:
        from airflow.exceptions import AirflowFailException
        from governed_marketing.pipeline import generate
        from governed_marketing.validation import GateFailed

        try:
            return generate(campaign_id, run_id=run_id, as_of=params.get("as_of"))  # counts, never rows
        except GateFailed as failure:  # deterministic: retrying cannot help, so fail without retries
            raise AirflowFailException(str(failure)) from None

    generate.expand(campaign_id=campaigns())


generate_campaign_content()
