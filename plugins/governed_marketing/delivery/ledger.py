"""ops.delivery_ledger: who got which campaign, so a crash and a rerun never send a campaign twice.

SMTP offers no exactly-once: the relay may have taken the message when the connection dies before
its "250" reaches us, and no SMTP command asks "did you get Message-ID X?". We choose at most once:
a message is marked `sending` (committed) before DATA, and a `sending` row is never sent again
automatically. A crash therefore leaves `sending` rows that are *in doubt* (reported, never resent):
a person may miss one newsletter, but never gets it twice, and an objector never gets it at all.

Statuses: planned -> sending -> sent | deferred (4xx, retried with back-off) | bounced (5xx, final
for this campaign); planned/deferred -> suppressed (no longer allowed at send time); deferred ->
undeliverable (still 4xx `delivery.give_up_deferred_after_hours` after it was planned: final).

Every function here is one set-based statement over a batch of recipients, so the sender's memory
holds one batch of the outbox, never the campaign.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

STATUSES = ("planned", "sending", "sent", "deferred", "bounced", "suppressed", "undeliverable")
#: Rows a run may send: never `sending` (in doubt) nor a final status.
SENDABLE = ("planned", "deferred")


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def plan(conn: Warehouse, campaign_id: str, rows: pd.DataFrame, *, run_id: str) -> int:
    """Record `planned` for every (recipient_ref, message_key, content_version) not in the ledger yet."""
    if rows.empty:
        return 0
    before = count(conn, campaign_id)
    frame = rows[["recipient_ref", "message_key", "content_version"]].copy()
    frame.insert(0, "campaign_id", campaign_id)
    conn.temp_table("delivery_plan", frame)
    moment = now()
    conn.execute(
        """
        insert into ops.delivery_ledger
            (campaign_id, recipient_ref, message_key, content_version, status, attempts, planned_at, updated_at, run_id)
        select p.campaign_id, p.recipient_ref, p.message_key, p.content_version, 'planned', 0, ?, ?, ?
        from delivery_plan p
        where not exists (
            select 1 from ops.delivery_ledger l
            where l.campaign_id = p.campaign_id and l.recipient_ref = p.recipient_ref
        )
        """,
        [moment, moment, run_id],
    ).fetchall()
    return count(conn, campaign_id) - before


def count(conn: Warehouse, campaign_id: str) -> int:
    return conn.execute("select count(*) from ops.delivery_ledger where campaign_id = ?", [campaign_id]).fetchall()[0][
        0
    ]


def states(conn: Warehouse, campaign_id: str, refs: list[str]) -> dict[str, tuple[str, int, str]]:
    """{recipient_ref: (status, attempts, message_key)} of these recipients of one campaign."""
    rows = conn.execute(
        "select recipient_ref, status, attempts, message_key from ops.delivery_ledger "
        "where campaign_id = ? and recipient_ref = any(cast(? as varchar[]))",
        [campaign_id, list(refs)],
    ).fetchall()
    return {ref: (status, attempts, key) for ref, status, attempts, key in rows}


def give_up(conn: Warehouse, campaign_id: str, *, planned_before: datetime, refs: list[str] | None = None) -> int:
    """`deferred` rows planned before `planned_before` (of `refs`, or of the whole campaign) become
    `undeliverable`; returns how many."""
    if refs is not None and not refs:
        return 0
    only = "" if refs is None else " and recipient_ref = any(cast(? as varchar[]))"
    rows = conn.execute(
        "update ops.delivery_ledger set status = 'undeliverable', updated_at = ? "
        f"where campaign_id = ? and status = 'deferred' and planned_at < ?{only}",
        [now(), campaign_id, planned_before, *([list(refs)] if refs is not None else [])],
    ).fetchall()
    return int(rows[0][0]) if rows else 0


def mark(
    conn: Warehouse,
    campaign_id: str,
    refs: list[str],
    status: str,
    *,
    reply: str | None = None,
    attempted: bool = False,
    run_id: str | None = None,
) -> None:
    """Set `status` on these recipients' rows in one statement (autocommitted: durable when it returns)."""
    if not refs:
        return
    if status not in STATUSES:
        raise ValueError(f"delivery status {status!r} is not one of {', '.join(STATUSES)}")
    moment = now()
    conn.execute(
        f"""
        update ops.delivery_ledger
        set status = ?, updated_at = ?, last_reply = coalesce(?, last_reply),
            attempts = attempts + {1 if attempted else 0},
            sent_at = case when ? = 'sent' then ? else sent_at end,
            run_id = coalesce(?, run_id)
        where campaign_id = ? and recipient_ref = any(cast(? as varchar[]))
        """,
        [status, moment, reply, status, moment, run_id, campaign_id, list(refs)],
    ).fetchall()


def totals(conn: Warehouse) -> dict[str, dict[str, int]]:
    """{campaign_id: {status: n}} over the whole ledger (the report's delivery section)."""
    result: dict[str, dict[str, int]] = {}
    for campaign_id, status, n in conn.execute(
        "select campaign_id, status, count(*) from ops.delivery_ledger group by 1, 2 order by 1, 2"
    ).fetchall():
        result.setdefault(campaign_id, {})[status] = int(n)
    return result
