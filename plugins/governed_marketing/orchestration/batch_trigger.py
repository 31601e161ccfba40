"""An Airflow trigger that waits in the triggerer until OpenAI batches are done.

A deferrable operator submits (or re-attaches to) batches, then defers on `OpenAIBatchTrigger` so
no worker slot is held for hours; the trigger polls the Batch API with `openai.AsyncOpenAI` and
fires one event when every batch is terminal, after which the operator collects them. The trigger
carries batch ids only: the client reads OPENAI_API_KEY and OPENAI_BASE_URL from the triggerer's
environment, so no secret is serialized into the metadata database.

Events (`TriggerEvent.payload`):
    {"status": "done", "batch_ids": [...], "statuses": {batch_id: status}, "error": None}
    {"status": "timeout" | "error", "batch_ids": [...], "statuses": {...}, "error": "<what happened>"}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from governed_marketing.generation.vendor import TERMINAL_BATCH_STATUSES, async_openai_client


class OpenAIBatchTrigger(BaseTrigger):
    """Poll OpenAI batches until each is completed, failed, expired or cancelled.

    Args:
        batch_ids: the vendor batch ids to wait for.
        poll_interval: seconds between polls.
        timeout_s: give up (an event with status "timeout") after this many seconds; the batches
            keep running at the vendor and can be re-attached to.
    """

    def __init__(self, batch_ids: list[str], poll_interval: float = 60.0, timeout_s: float = 26 * 3600) -> None:
        super().__init__()
        if poll_interval <= 0 or timeout_s <= 0:
            raise ValueError("poll_interval and timeout_s must be positive")
        self.batch_ids = list(batch_ids)
        self.poll_interval = float(poll_interval)
        self.timeout_s = float(timeout_s)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"batch_ids": list(self.batch_ids), "poll_interval": self.poll_interval, "timeout_s": self.timeout_s},
        )

    def _event(self, status: str, statuses: dict[str, str], error: str | None = None) -> TriggerEvent:
        return TriggerEvent(
            {"status": status, "batch_ids": list(self.batch_ids), "statuses": dict(statuses), "error": error}
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import openai

        deadline = time.monotonic() + self.timeout_s
        statuses: dict[str, str] = {}
        client = async_openai_client()  # OPENAI_API_KEY / OPENAI_BASE_URL from the triggerer's env
        try:
            while True:
                for batch_id in self.batch_ids:
                    if statuses.get(batch_id) in TERMINAL_BATCH_STATUSES:
                        continue
                    try:
                        batch = await client.batches.retrieve(batch_id)
                    except openai.APIStatusError as exc:
                        if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                            self.log.warning("batch %s: poll answered HTTP %s; polling on", batch_id, exc.status_code)
                            continue
                        yield self._event("error", statuses, f"batch {batch_id}: HTTP {exc.status_code} while polling")
                        return
                    except openai.APIError as exc:  # connection trouble after the SDK's retries
                        self.log.warning("batch %s: poll failed (%s); polling on", batch_id, type(exc).__name__)
                        continue
                    statuses[batch_id] = batch.status
                done = sum(1 for b in self.batch_ids if statuses.get(b) in TERMINAL_BATCH_STATUSES)
                self.log.info("%d of %d batches terminal: %s", done, len(self.batch_ids), statuses)
                if done == len(self.batch_ids):
                    yield self._event("done", statuses)
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    yield self._event("timeout", statuses, f"batches not terminal after {self.timeout_s:.0f} s")
                    return
                await asyncio.sleep(min(self.poll_interval, remaining))
        finally:
            await client.close()
