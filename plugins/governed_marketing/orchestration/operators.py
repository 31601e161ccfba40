"""Airflow operators for content generation: drafting (sync in the worker, or a deferred vendor batch)
and the optional human approval. The logic lives in the library; these only wire it to Airflow.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator

from governed_marketing.orchestration.failures import fail_fast

#: How many times missing units are resubmitted as a new batch within one task run.
MAX_BATCH_ROUNDS = 3


def _as_of(context: Any) -> str | None:
    return (context.get("params") or {}).get("as_of")


class DraftCampaignOperator(BaseOperator):
    """Draft one campaign's outstanding units.

    Offline or `GMP_LLM_MODE=sync`: drafts here, storing each draft as it arrives. `batch`: submits
    (or re-attaches to) vendor batches and defers to `OpenAIBatchTrigger` in the triggerer, so no
    worker slot is held while the vendor works; on completion the outputs are read into the ledger
    and missing units go out again in a new batch, at most MAX_BATCH_ROUNDS times. A task retry
    re-attaches to the batches the ledger records instead of submitting again.
    """

    template_fields = ("campaign_id",)

    def __init__(
        self,
        *,
        campaign_id: str,
        poll_interval: float | None = None,
        batch_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.campaign_id = campaign_id
        self.poll_interval = poll_interval  # None: GMP_LLM_BATCH_POLL_SECONDS
        self.batch_timeout = batch_timeout or timedelta(hours=25)  # the vendor's 24 h window, plus slack

    def on_kill(self) -> None:
        """SIGTERM (Airflow's task runner calls this): stop submitting; in-flight units go to the ledger as in doubt."""
        from governed_marketing import stopping

        stopping.request_stop("SIGTERM")

    def execute(self, context: Any) -> dict:
        from governed_marketing.orchestration.task_bodies import draft_generation

        with fail_fast():
            counts = draft_generation(self.campaign_id, run_id=context["run_id"], as_of=_as_of(context))
        return self._wait_or_finish(counts, rounds=0)

    def _wait_or_finish(self, counts: dict, *, rounds: int) -> dict:
        batch_ids = counts.get("batch_ids") or []
        if not batch_ids:
            return counts
        from governed_marketing.orchestration.batch_trigger import OpenAIBatchTrigger
        from governed_marketing.settings import get_settings

        self.defer(
            trigger=OpenAIBatchTrigger(
                batch_ids=list(batch_ids),
                poll_interval=self.poll_interval or get_settings().llm_batch_poll_seconds,
                timeout_s=self.batch_timeout.total_seconds(),
            ),
            method_name="execute_complete",
            kwargs={"rounds": rounds},
        )
        raise AssertionError("unreachable: defer raises")

    def execute_complete(self, context: Any, event: dict, rounds: int = 0) -> dict:
        from governed_marketing.orchestration.task_bodies import collect_batches

        event = event or {}
        batch_ids = list(event.get("batch_ids") or [])
        if event.get("status") != "done":
            # Nothing is lost: the ledger keeps the batch ids, and the retry re-attaches to them.
            raise RuntimeError(
                f"{self.campaign_id}: waiting for vendor batches ended with {event.get('status')!r} "
                f"({event.get('error') or 'no detail'}); the next try re-attaches to them"
            )
        with fail_fast():
            counts = collect_batches(self.campaign_id, batch_ids, run_id=context["run_id"], as_of=_as_of(context))
        if counts.get("batch_ids") and rounds + 1 >= MAX_BATCH_ROUNDS:
            raise RuntimeError(
                f"{self.campaign_id}: units still missing after {MAX_BATCH_ROUNDS} batch rounds; they stay in "
                "ops.generation_ledger and the next run or task retry requests them again"
            )
        return self._wait_or_finish(counts, rounds=rounds + 1)


class CampaignApprovalOperator(ApprovalOperator):
    """Human approval of a campaign's drafts before the outbox, when governance.yml asks for it.

    `approval: auto` passes straight through. `approval: required` waits in Airflow's
    human-in-the-loop step (Required actions in the UI); the approver sees counts, cost and the drafts
    (no greeting, no name), never a recipient. Reject skips publishing: nothing reaches the outbox.
    """

    template_fields = (*ApprovalOperator.template_fields, "campaign_id")

    def __init__(self, *, campaign_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("subject", "Approve campaign drafts for the outbox")
        super().__init__(**kwargs)
        self.campaign_id = campaign_id

    def execute(self, context: Any) -> Any:
        from governed_marketing.orchestration.task_bodies import approval_preview
        from governed_marketing.policy import load_policy

        if load_policy().campaigns[self.campaign_id].approval == "auto":
            self.log.info("%s: approval is auto in governance.yml; no human step", self.campaign_id)
            return {"chosen_options": [self.APPROVE], "approved_by": "governance.yml approval: auto"}
        preview = approval_preview(self.campaign_id)
        self.subject = f"Approve the drafts of campaign {self.campaign_id}"
        self.body = preview["markdown"]
        return super().execute(context)
