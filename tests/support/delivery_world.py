"""A small world for delivery tests and the benchmark, built directly (no dbt build): contacts with
consent, the campaign-recipients mart the last-moment check reads, and an outbox file per campaign."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
from governed_marketing.policy import Campaign, DeliveryCampaign, Policy, load_policy
from governed_marketing.warehouse import Warehouse

CAMPAIGNS = ("spring_newsletter", "summer_newsletter")
AS_OF = datetime(2026, 12, 1, 9, 0)
VERSION = "newsletter_v1@1"


def email_of(i: int) -> str:
    return f"seed.person{i:06d}@recipients.example"


def contact_of(i: int) -> str:
    return f"SEEDC{i:06d}"


def policy_for(*, per_minute_cap: int | None = None, connections: int = 2, backoff: float = 0.0) -> Policy:
    """The project's policy with a second campaign and delivery settings for the test."""
    policy = load_policy()
    spring = policy.campaigns["spring_newsletter"]
    campaigns = {**policy.campaigns, "summer_newsletter": Campaign(**{**spring.model_dump(), "budget_usd": None})}
    delivery = policy.delivery.model_copy(
        update={
            "per_minute_cap": per_minute_cap,
            "connections": connections,
            "retry": policy.delivery.retry.model_copy(update={"backoff_seconds": backoff}),
            "campaigns": {
                c: DeliveryCampaign(sender="Example Shop <news@example.com>", reply_to="service@example.com")
                for c in CAMPAIGNS
            },
        }
    )
    return policy.model_copy(update={"campaigns": campaigns, "delivery": delivery})


def seed(conn: Warehouse, n: int, *, campaigns: tuple[str, ...] = CAMPAIGNS) -> None:
    ids = [contact_of(i) for i in range(n)]
    emails = [email_of(i) for i in range(n)]
    granted = AS_OF - timedelta(days=10)
    contacts = pd.DataFrame(
        {
            "contact_id": ids,
            "email": emails,
            "email_normalized": emails,
            "first_name": [f"Seedname{i}" for i in range(n)],
            "updated_at": [granted] * n,
            "load_id": ["seed"] * n,
        }
    )
    conn.temp_table("seed_contacts", contacts)
    conn.execute(
        "insert into raw.crm_contacts (contact_id, email, email_normalized, first_name, updated_at, load_id) "
        "select * from seed_contacts"
    ).fetchall()
    events = pd.DataFrame(
        [
            {"event_id": f"E{purpose[:3]}{cid}", "contact_id": cid, "purpose": purpose, "action": "grant"}
            for cid in ids
            for purpose in ("email_marketing", "ai_personalization")
        ]
    )
    events["occurred_at"] = granted
    conn.temp_table("seed_events", events)
    conn.execute(
        "insert into raw.crm_consent_events (event_id, contact_id, purpose, action, occurred_at, load_id) "
        "select event_id, contact_id, purpose, action, occurred_at, 'seed' from seed_events"
    ).fetchall()
    conn.execute("create schema if not exists marts").fetchall()
    conn.execute(
        "create table if not exists marts.campaign_recipients "
        "(campaign_id varchar, recipient_pseudonym varchar, contact_id varchar)"
    ).fetchall()
    recipients = pd.DataFrame(
        [{"campaign_id": c, "recipient_pseudonym": f"p{cid}", "contact_id": cid} for c in campaigns for cid in ids]
    )
    conn.temp_table("seed_recipients", recipients)
    conn.execute("insert into marts.campaign_recipients select * from seed_recipients").fetchall()


def write_outbox(outbox_root: Path, campaign_id: str, n: int, *, subject: str = "Spring <b>news</b> & more") -> Path:
    """The outbox file generation would publish (the same keys, in its order)."""
    path = outbox_root / campaign_id / f"{VERSION.replace('@', '-')}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            row = {
                "campaign_id": campaign_id,
                "contact_id": contact_of(i),
                "email": email_of(i),
                "language": "en",
                "subject": subject,
                "body": f"Hello Seedname{i},\n\nOur <script>alert(1)</script> picks for you.\n\n--\nObject any time.",
                "prompt_version": VERSION,
                "model": "offline-template",
                "cohort_id": "c1",
                "generated_at": "2026-11-30T10:00:00Z",
            }
            handle.write(json.dumps(row) + "\n")
    return path
