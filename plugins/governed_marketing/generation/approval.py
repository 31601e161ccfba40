"""What a human approver reads before a campaign's drafts may reach the outbox.

Counts, cost and the drafts themselves: drafts carry no greeting and no name (the greeting is
composed locally at publish), so the preview holds no personal data. Individual-mode drafts are per recipient; only a
few are shown, identified by nothing but their position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from governed_marketing.generation import ledger
from governed_marketing.generation.campaign import prompt_version
from governed_marketing.policy import Policy

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

MAX_DRAFTS_SHOWN = 5


def preview(conn: Warehouse, policy: Policy, campaign_id: str, *, model: str) -> dict:
    """Markdown for the approval step, plus the counts it is built from."""
    _, version = prompt_version(policy, campaign_id)
    campaign = policy.campaigns[campaign_id]
    totals = ledger.totals(conn, campaign_id, version, model)
    drafts = conn.execute(
        "select language, subject, preheader, body from ops.generated_content "
        "where campaign_id = ? and prompt_version = ? and model = ? order by unit_id limit ?",
        [campaign_id, version, model, MAX_DRAFTS_SHOWN],
    ).fetchall()
    audience = conn.execute(
        "select count(*) from marts.campaign_audience where campaign_id = ?", [campaign_id]
    ).fetchone()
    lines = [
        f"**Campaign** `{campaign_id}` - purpose `{campaign.purpose}`, {campaign.personalization} mode, "
        f"prompt `{version}`, model `{model}`",
        f"**Audience** {audience[0] if audience else 0} recipients - **drafts** {totals['succeeded']} accepted, "
        f"{totals['failed']} failed, {totals['rejected']} rejected",
        f"**Spent** ${totals['cost_usd']:.4f} ({totals['input_tokens']} input, {totals['output_tokens']} output tokens)"
        + (f" of a ${campaign.budget_usd:.2f} budget" if campaign.budget_usd is not None else ""),
        "",
        f"Approve sends these drafts to the outbox, each after a greeting with the recipient's first name and "
        "before the objection notice, both added locally. "
        f"Showing {len(drafts)} of {totals['succeeded']}:",
    ]
    for number, (language, subject, preheader, body) in enumerate(drafts, start=1):
        quoted = "\n".join(f"> {line}" for line in body.splitlines())
        lines += ["", f"### Draft {number} ({language}): {subject}", f"_{preheader}_", "", quoted]
    return {"markdown": "\n".join(lines), "drafts": totals["succeeded"], "cost_usd": totals["cost_usd"]}
