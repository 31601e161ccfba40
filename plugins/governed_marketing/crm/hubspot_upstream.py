"""Requests answered here, sent back to HubSpot (GDPR Art. 17(2) and 19; Art. 21 and 18 as a status).

Two steps, so the privacy code needs one line:
1. `queue` (called by privacy.process while the requests are read, before an erasure removes the
   person's rows): an erasure of a person held under HubSpot object ids queues a GDPR delete with
   those ids only; an objection or a restriction queues an unsubscribe (the email is the only
   identifier HubSpot's communication preferences take). Kept in `ops.crm_upstream` until sent.
2. `send_pending` (the process_privacy_requests DAG's `inform_crm` task): sends what is queued once
   the request is complete here (erasure done and verified; objection done; restriction in effect),
   at most once per request (a sent row is never sent again), and retries on the next pass what
   failed. A sent row forgets its identifier; an erasure's receipt names HubSpot as a recipient informed.

Only warehouses that hold a HubSpot pull (`ops.hubspot_pulls`) queue anything. Contacts deleted in
HubSpot (request ids `hubspot-archived-*`) are not sent back: HubSpot is where they were deleted.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governed_marketing.crm.hubspot import ARCHIVED_PREFIX

if TYPE_CHECKING:
    from governed_marketing.crm.hubspot import HubSpotClient
    from governed_marketing.policy import Policy
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

GDPR_DELETE = "gdpr_delete"
UNSUBSCRIBE = "unsubscribe"
#: The request states in which each action may leave: the request is complete (or in effect) here.
_READY = {"erasure": ("done",), "objection": ("done",), "restriction": ("in_effect", "done")}
RECIPIENT = "HubSpot (the CRM the contact data came from)"


def queue(conn: Warehouse, pending: list[tuple[Any, ...]]) -> int:
    """Queue the HubSpot side of these requests (rows of request_id, type, email, ...). Returns how many."""
    if not conn.execute("select count(*) from ops.hubspot_pulls").fetchall()[0][0]:
        return 0
    now = datetime.now(UTC).replace(tzinfo=None)
    queued = 0
    for request_id, kind, email, *_ in pending:
        if kind not in _READY or str(request_id).startswith(ARCHIVED_PREFIX) or str(email).startswith("erased:"):
            continue
        if kind == "erasure":
            ids = sorted(
                row[0]
                for row in conn.execute(
                    "select contact_id from raw.crm_contacts where email_normalized = ?", [email]
                ).fetchall()
            )
            # The delete supersedes an unsubscribe still waiting, and the email it holds must go with the person.
            conn.execute(
                "delete from ops.crm_upstream where action = ? and identifier = ? and status = 'pending'",
                [UNSUBSCRIBE, email],
            )
            if not ids:
                continue  # nobody held under a HubSpot id: nothing HubSpot could delete for us
            action, identifier = GDPR_DELETE, ";".join(ids)
        else:
            action, identifier = UNSUBSCRIBE, email
        rows = conn.execute(
            "insert into ops.crm_upstream values (?, ?, ?, 'pending', 0, null, ?, null) on conflict do nothing "
            "returning request_id",
            [request_id, action, identifier, now],
        ).fetchall()
        queued += len(rows)
    return queued


def send_pending(conn: Warehouse, client: HubSpotClient, policy: Policy, *, home: Path) -> dict[str, int]:
    """Send every queued action whose request is complete here; record it; forget the identifier."""
    rows = conn.execute(
        """
        select u.request_id, u.action, u.identifier, l.request_type, l.status
        from ops.crm_upstream u join ops.dsr_requests l using (request_id)
        where u.status = 'pending' order by u.queued_at, u.request_id
        """
    ).fetchall()
    counts = {"sent": 0, "failed": 0, "waiting": 0}
    subscriptions = sorted(policy.hubspot.subscription_types) if policy.hubspot else []
    for request_id, action, identifier, kind, status in rows:
        if status not in _READY.get(kind, ()):
            counts["waiting"] += 1
            continue
        now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        try:
            if action == GDPR_DELETE:
                for object_id in identifier.split(";"):
                    client.gdpr_delete(object_id)
            else:
                explanation = f"{kind} under GDPR Art. {'21' if kind == 'objection' else '18'} (request {request_id})"
                for subscription_id in subscriptions:
                    client.unsubscribe(identifier, subscription_id, explanation)
        except Exception as exc:  # noqa: BLE001 - kept pending, tried again on the next pass
            conn.execute(
                "update ops.crm_upstream set attempts = attempts + 1, last_error = ? "
                "where request_id = ? and action = ?",
                [type(exc).__name__, request_id, action],
            )
            counts["failed"] += 1
            log.warning("request %s: HubSpot %s not sent yet (%s)", request_id, action, type(exc).__name__)
            continue
        conn.execute(
            "update ops.crm_upstream set status = 'sent', attempts = attempts + 1, identifier = null, "
            "last_error = null, sent_at = ? where request_id = ? and action = ?",
            [now, request_id, action],
        )
        counts["sent"] += 1
        if action == GDPR_DELETE:
            _note_in_receipt(home / "receipts" / f"{request_id}.json", now)
    return counts


def _note_in_receipt(path: Path, when: datetime) -> None:
    """Add HubSpot to the receipt's recipients, as informed (Art. 17(2), 19)."""
    if not path.is_file():
        return
    receipt = json.loads(path.read_text(encoding="utf-8"))
    listed = receipt.setdefault("recipients_to_notify", [])
    if any(item.get("recipient") == RECIPIENT for item in listed):
        return
    listed.append(
        {
            "recipient": RECIPIENT,
            "role": "source CRM (processor)",
            "received_personal_data": True,
            "action": "informed: HubSpot's GDPR delete was requested for the contact (Art. 17(2), 19)",
            "informed_at": when.isoformat() + "Z",
            "identifier_sent": "the HubSpot object id only",
        }
    )
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(receipt, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    partial.replace(path)
