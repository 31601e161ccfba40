"""The report's delivery section: counts from the ledger and the unsubscribes, no identifiers."""

from __future__ import annotations

from statistics import median
from typing import TYPE_CHECKING, Any

from governed_marketing.delivery import ledger

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse


def _exists(conn: Warehouse, table: str) -> bool:
    return bool(
        conn.execute(
            "select count(*) from information_schema.tables where table_schema = 'ops' and table_name = ?", [table]
        ).fetchall()[0][0]
    )


def delivery_section(conn: Warehouse) -> dict[str, Any]:
    """Per campaign: sent, deferred, bounced, suppressed at send time, in doubt; unsubscribes by source
    and the seconds from click to suppression (median, max)."""
    if not _exists(conn, "delivery_ledger"):
        return {"campaigns": [], "unsubscribes": {}, "click_to_suppression_seconds": None}
    campaigns = [
        {
            "campaign_id": campaign_id,
            **{status: counts.get(status, 0) for status in ledger.STATUSES if status != "sending"},
            "in_doubt": counts.get("sending", 0),
        }
        for campaign_id, counts in ledger.totals(conn).items()
    ]
    rows = conn.execute("select source, clicked_at, suppressed_at, request_id from ops.unsubscribes").fetchall()
    by_source: dict[str, int] = {}
    for source, *_ in rows:
        by_source[source] = by_source.get(source, 0) + 1
    waits = [(done - clicked).total_seconds() for _, clicked, done, rid in rows if done is not None and rid]
    return {
        "campaigns": campaigns,
        "unsubscribes": by_source,
        "click_to_suppression_seconds": (
            {"median": round(median(waits), 3), "max": round(max(waits), 3), "n": len(waits)} if waits else None
        ),
    }
