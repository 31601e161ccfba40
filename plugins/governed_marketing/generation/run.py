"""One campaign in one go: prepare, draft (sync) and publish back to back, as `gmp run`'s content DAG does.

Its own module because it sits above the three stages (campaign, sync_flow, publish), which import
`campaign` for their shared work.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from governed_marketing.generation.base import ContentProvider
from governed_marketing.generation.campaign import CampaignOutcome, prepare_campaign
from governed_marketing.generation.publish import publish_campaign
from governed_marketing.generation.sync_flow import draft_sync
from governed_marketing.policy import Policy

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse


def run_campaign(
    campaign_id: str,
    *,
    conn: Warehouse,
    policy: Policy,
    provider: ContentProvider,
    as_of: datetime,
    run_id: str,
    outbox_root: Path,
    transport: str | None = None,
) -> CampaignOutcome:
    """Prepare, draft (sync) and publish one campaign in one go: the three DAG steps back to back."""
    transport = transport or ("offline" if provider.name == "offline" else "sync")
    common = {"conn": conn, "policy": policy, "as_of": as_of, "run_id": run_id}
    prepared = prepare_campaign(
        campaign_id, provider=provider.name, model=provider.model, transport=transport, **common
    )
    drafted = draft_sync(campaign_id, provider=provider, transport=transport, **common)
    published = publish_campaign(
        campaign_id,
        provider=provider.name,
        model=provider.model,
        transport=transport,
        outbox_root=outbox_root,
        **common,
    )
    published.vendor_calls = drafted.vendor_calls
    published.reused_drafts = prepared.reused_drafts
    published.estimated_cost_usd = prepared.estimated_cost_usd
    return published
