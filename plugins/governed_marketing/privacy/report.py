"""The privacy section of the compliance report: requests, deadlines, erasure proofs, purges, the audit chain.

Read-only and identity-free: ids, types, dates, statuses and counts. `report_section` returns the
data; `privacy_section` shapes it as a `PrivacySection`, which the report renders generically and
copies into report.json under `privacy_requests`.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from dateutil.relativedelta import relativedelta

from governed_marketing.policy import Policy
from governed_marketing.privacy import audit, dsr
from governed_marketing.warehouse import table_exists

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse


class PrivacyTable(TypedDict):
    title: str
    columns: list[str]
    rows: list[list[Any]]  # counts, ids, dates, statuses: no personal data
    empty: NotRequired[str]  # shown instead of an empty table, e.g. "No purge has run yet."


class PrivacySection(TypedDict, total=False):
    status: str  # one line, e.g. "3 open requests, none overdue"
    summary: dict[str, Any]  # measure -> value, shown as a two-column table
    tables: list[PrivacyTable]
    notes: list[str]


def report_section(
    conn: Warehouse,
    policy: Policy,
    *,
    since: date | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """Open requests with due dates, requests closed since `since` (default: one month back), erasures
    verified, purges done and the audit chain's state."""
    today = today or datetime.now(UTC).date()
    since = since or today - relativedelta(months=1)
    requests = dsr.list_requests(conn)
    open_requests = [
        {
            "request_id": r.request_id,
            "type": r.request_type,
            "channel": r.channel,
            "received": r.received_at.date().isoformat(),
            "due": r.effective_due.isoformat(),
            "extended": r.extended_due_date is not None,
            "days_left": r.days_left(today),
            "status": r.status,
            "overdue": r.overdue(today),
        }
        for r in requests
        if r.is_open
    ]
    closed = [
        {
            "request_id": r.request_id,
            "type": r.request_type,
            "received": r.received_at.date().isoformat(),
            "closed": r.closed_at.date().isoformat(),
            "due": r.effective_due.isoformat(),
            "on_time": r.closed_at.date() <= r.effective_due,
            "days_late": max((r.closed_at.date() - r.effective_due).days, 0),
            "status": r.status,
        }
        for r in requests
        if r.closed_at is not None and r.closed_at.date() >= since
    ]
    erasures = [r for r in requests if r.request_type == "erasure" and r.outcome]
    verified = [r.request_id for r in erasures if r.outcome.get("verified")]
    unverified = [r.request_id for r in erasures if not r.outcome.get("verified") and r.status == "failed"]
    purges: dict[tuple[datetime, bool], dict[str, Any]] = {}
    if table_exists(conn, "ops", "retention_runs"):
        rows = conn.execute(
            "select run_at, dry_run, counts_json from ops.retention_runs where run_at >= ? order by run_at",
            [datetime.combine(since, datetime.min.time())],
        ).fetchall()
        for run_at, dry_run, counts_json in rows:
            entry = purges.setdefault(
                (run_at, bool(dry_run)), {"at": run_at.isoformat(), "dry_run": bool(dry_run), "rules": 0, "items": 0}
            )
            entry["rules"] += 1
            entry["items"] += sum(int(v) for v in json.loads(counts_json).values())
    suppressed = (
        conn.execute(
            "select reason, count(*) from ops.suppression where identifier = 'email' group by reason"
        ).fetchall()
        if table_exists(conn, "ops", "suppression")
        else []
    )
    chain = audit.verify(conn)
    return {
        "period": {"from": since.isoformat(), "to": today.isoformat()},
        "deadline_rule": f"{policy.dsr.deadline} from receipt, extendable by {policy.dsr.extension} (calendar months)",
        "open_requests": open_requests,
        "overdue": [r["request_id"] for r in open_requests if r["overdue"]],
        "closed_this_period": closed,
        "erasures_verified": {"count": len(verified), "request_ids": verified, "not_verified": unverified},
        "purges": list(purges.values()),
        "suppression_list": {reason: int(n) for reason, n in suppressed},
        "audit_chain": {
            "ok": chain.ok,
            "rows": chain.rows,
            "head_seq": chain.head_seq,
            "head_hash": chain.head_hash,
            "broken_seq": chain.broken_seq,
            "reason": chain.reason,
        },
    }


def privacy_section(conn: Warehouse, *, policy: Policy, settings: Any = None) -> PrivacySection:
    """The section as `governed_marketing.report` renders it: status line, summary, tables, notes."""
    data = report_section(conn, policy)
    overdue = data["overdue"]
    chain = data["audit_chain"]
    chain_state = "intact" if chain["ok"] else f"BROKEN at seq {chain['broken_seq']}"
    late = f"{len(overdue)} OVERDUE" if overdue else "none overdue"
    status = f"{len(data['open_requests'])} open request(s), {late}; audit chain {chain_state}"
    return {
        "status": status,
        "summary": {
            "open requests": len(data["open_requests"]),
            "overdue requests": len(overdue),
            f"closed since {data['period']['from']}": len(data["closed_this_period"]),
            "erasures verified by scan": data["erasures_verified"]["count"],
            "erasures not verified (retried)": len(data["erasures_verified"]["not_verified"]),
            "purges run (dry runs included)": len(data["purges"]),
            "people on the suppression list": sum(data["suppression_list"].values()),
            "audit log rows": data["audit_chain"]["rows"],
            "audit log head (sequence number)": chain["head_seq"] if chain["head_seq"] is not None else "none yet",
            "audit log head (hash, first 16 hex digits)": (chain["head_hash"] or "")[:16] or "none yet",
        },
        "tables": [
            {
                "title": "Open requests",
                "columns": ["request", "type", "received", "due", "days left", "on time", "status"],
                "rows": [
                    [
                        r["request_id"],
                        r["type"],
                        r["received"],
                        r["due"],
                        r["days_left"],
                        "overdue" if r["overdue"] else "yes",
                        r["status"],
                    ]
                    for r in data["open_requests"]
                ],
                "empty": "No request is open.",
            },
            {
                "title": "Closed this period",
                "columns": ["request", "type", "received", "closed", "on time", "status"],
                "rows": [
                    [r["request_id"], r["type"], r["received"], r["closed"], _on_time(r), r["status"]]
                    for r in data["closed_this_period"]
                ],
                "empty": f"No request was closed since {data['period']['from']}.",
            },
            {
                "title": "Purges",
                "columns": ["at", "dry run", "rules", "items removed (or that would be)"],
                "rows": [[p["at"], "yes" if p["dry_run"] else "no", p["rules"], p["items"]] for p in data["purges"]],
                "empty": f"No purge has run since {data['period']['from']} (not even a dry run): "
                "`gmp purge --dry-run` shows what retention would remove.",
            },
        ],
        "notes": [
            f"Deadlines: {data['deadline_rule']}; a month from 31 January ends on the last day of February.",
            "Erasure receipts (no personal data) are in $GMP_HOME/receipts/<request_id>.json.",
            "Verified erasures: " + (", ".join(data["erasures_verified"]["request_ids"]) or "none this period") + ".",
        ],
    }


def _on_time(closed: dict[str, Any]) -> str:
    """'yes', or 'no' with how many days late: a reviewer reads words, not Python booleans."""
    if closed["on_time"]:
        return "yes"
    days = closed.get("days_late", 0)
    return f"no ({days} day{'s' if days != 1 else ''} late)" if days else "no"
