"""Answer every data subject request that is due for work: what `process_privacy_requests` and `gmp dsr process` run.

Every request received by now (wall clock) is registered in the ledger and answered, whatever the
as-of time: the as-of fixes eligibility so a run can be reproduced, but it never delays a right (a
back-dated run, a backfill or a rerun answers the requests received since). Requests are handled by type:
access and portability (an export), rectification (raw contact rows corrected), restriction (in
effect at once, kept out of the outbox until lifted), objection (suppressed for good) and erasure
(all erasures of the pass in one set-based batch). The result holds request ids and counts only:
it goes to XCom, the step records and the audit log.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from governed_marketing import warehouse
from governed_marketing.crm import hubspot_upstream
from governed_marketing.policy import Policy, load_policy
from governed_marketing.privacy import audit, dsr
from governed_marketing.privacy.erasure import Clock, ErasureRequest, erase, erase_outbox
from governed_marketing.privacy.scan import Identity
from governed_marketing.settings import Settings, get_settings

log = logging.getLogger(__name__)

PURPOSE = "data_subject_rights"


def _as_of(value: str | datetime | None) -> datetime:
    from governed_marketing.runs import parse_as_of

    return parse_as_of(value)


def _manifest(settings: Settings) -> Path | None:
    from governed_marketing.dbt import ensure_manifest, manifest_path

    try:
        return ensure_manifest(settings)
    except Exception as exc:  # noqa: BLE001 - fall back to the last manifest, and to column names
        log.warning("dbt manifest could not be refreshed (%s); using the one on disk", type(exc).__name__)
        path = manifest_path(settings)
        return path if path.is_file() else None


def process_pending(
    *,
    as_of: str | datetime | None = None,
    actor: str = audit.ACTOR_CLI,
    settings: Settings | None = None,
    policy: Policy | None = None,
    compact: bool = True,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Register new requests and answer every open one received by now, whatever `as_of` says.

    Returns:
        {"registered": n, "answered": n, "<type>": [request ids], "failed": [...], "needs_review": [...],
        "left_open": [{"request_id", "type", "status", "reason"}]} - ids, counts and reasons, no identities.
    """
    settings = settings or get_settings()
    policy = policy or load_policy(settings.policy_path)
    key, _ = settings.resolve_pseudonym_key()
    moment = _as_of(as_of)
    # A right never waits for the clock: the as-of only fixes eligibility.
    received_by = max(moment, datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    home = settings.home_dir
    clock = Clock(timings if timings is not None else {})
    manifest = _manifest(settings)
    clock.lap("dsr_manifest")
    done: dict[str, list[str]] = defaultdict(list)
    erasures: list[ErasureRequest] = []
    outbox_holds: dict[str, Identity] = {}
    with warehouse.session(settings=settings) as conn:
        registered = dsr.sync_ledger(conn, policy=policy, key=key, as_of=received_by)
        clock.lap("dsr_ledger")
        pending = conn.execute(
            """
            select l.request_id, l.request_type, r.email_normalized, r.details
            from ops.dsr_requests l join raw.crm_dsr_requests r using (request_id)
            where l.status in ('received', 'failed') and l.received_at <= ?
            order by l.received_at, l.request_id
            """,
            [received_by],
        ).fetchall()
        outcomes = _answer_all(conn, pending, policy=policy, key=key, home=home, manifest=manifest, clock=clock)
        statuses: list[tuple[str, str, dict[str, Any] | None]] = []
        entries: list[dict[str, Any]] = []
        for request_id, kind, email, _ in pending:  # in the order received: the audit chain's order
            if email.startswith("erased:") and kind == "erasure":  # erased by an earlier request
                erasures.append(ErasureRequest(request_id, email))
                continue
            if email.startswith("erased:"):  # the person was erased by an earlier request
                statuses.append((request_id, "done", {"note": "the person's data was already erased"}))
                done[kind].append(request_id)
                continue
            if kind == "erasure":  # erasures run together, after everything else, in one set-based batch
                erasures.append(ErasureRequest(request_id, email))
                continue
            outcome = outcomes[request_id]
            if kind in ("objection", "restriction"):
                outbox_holds[request_id] = Identity(
                    ref=request_id, emails={email}, contact_ids=set(outcome.pop("_contact_ids", []))
                )
            status = outcome.pop("_status", "done")
            statuses.append((request_id, status, outcome))
            entries.append(
                {
                    "action": f"dsr:{kind}",
                    "counts": {"request_id": request_id, "status": status, **_countable(outcome)},
                }
            )
            done[status if status in ("needs_review", "failed") else kind].append(request_id)
        dsr.set_statuses(conn, statuses)  # one statement for the pass, one for its audit rows
        audit.record_many(conn, entries, actor=actor, purpose=PURPOSE)
        hubspot_upstream.queue(conn, pending)  # HubSpot's ids for these requests, before an erasure removes them
    clock.lap("dsr_statuses_audit")
    if outbox_holds:  # objection and restriction take effect at once: no pending message goes out
        for request_id, files in erase_outbox(home / "outbox", outbox_holds).items():
            log.info("request %s: %d pending messages withdrawn from the outbox", request_id, sum(files.values()))
    clock.lap("dsr_outbox_holds")
    if erasures:
        _erase(
            erasures,
            settings=settings,
            policy=policy,
            key=key,
            manifest=manifest,
            actor=actor,
            done=done,
            compact=compact,
            clock=clock,
        )
    answered = sum(len(v) for k, v in done.items() if k not in ("needs_review", "failed"))
    counts = {
        "as_of": moment.isoformat(),
        "registered": registered,
        "answered": answered,
        **{k: sorted(v) for k, v in done.items()},
    }
    from governed_marketing.runs import record_step

    with warehouse.session(settings=settings) as conn:
        counts["left_open"] = left_open(conn, now=received_by)
        record_step(conn, actor, "privacy_requests", "dsr", counts)  # evidence beside the other steps
    clock.lap("dsr_left_open_step")
    return counts


def left_open(conn, *, now: datetime) -> list[dict[str, str]]:
    """Every request still open after a pass, with why: the person (or a reviewer) is what it waits for."""
    return [
        {"request_id": r.request_id, "type": r.request_type, "status": r.status, "reason": r.note(now)}
        for r in dsr.list_requests(conn, include_closed=False)
    ]


def summary(result: dict[str, Any], *, ids: int = 50) -> dict[str, Any]:
    """The pass for XCom: counts per outcome and at most `ids` request ids each (a big CRM intake stays small)."""
    short: dict[str, Any] = {}
    for name, value in result.items():
        if isinstance(value, list):
            short[f"{name}_count"] = len(value)
            short[name] = value[:ids]
        else:
            short[name] = value
    return short


def _countable(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outcome.items() if not k.startswith("_")}


def _answer_all(
    conn,
    pending: list[tuple[str, str, str, str | None]],
    *,
    policy: Policy,
    key: bytes,
    home: Path,
    manifest: Path | None,
    clock: Clock,
) -> dict[str, dict[str, Any]]:
    """Every non-erasure request of the pass answered by type, each type in one pass over the tables.

    Returns each request's outcome (counts, paths, the status under `_status`), by request id.
    """
    import pandas as pd

    live = [(r, k, e, d) for r, k, e, d in pending if not e.startswith("erased:") and k != "erasure"]
    unknown = [(r, k) for r, k, _, _ in live if k not in _ANSWERED]
    if unknown:
        raise dsr.DsrError(f"{unknown[0][0]}: unknown request type {unknown[0][1]!r}")
    outcomes: dict[str, dict[str, Any]] = {}
    corrections = [(r, e, d) for r, k, e, d in live if k == "rectification"]
    if corrections:  # first, so an export in the same pass shows the corrected data
        from governed_marketing.privacy.rectification import rectify_many

        for request_id, result in rectify_many(conn, corrections).items():
            outcomes[request_id] = _rectified(result, policy)
    clock.lap("dsr_rectification")
    exports = [(r, k, e) for r, k, e, _ in live if k in ("access", "portability")]
    if exports:
        from governed_marketing.privacy.access import export_subjects

        for request_id, export in export_subjects(
            conn, exports, policy=policy, key=key, home=home, manifest_path=manifest
        ).items():
            if not export.data_held:  # the answer is a confirmation that nothing is held (Art. 15(1))
                outcomes[request_id] = {"export": str(export.directory.relative_to(home)), "data_held": False}
            else:
                outcomes[request_id] = {"export": str(export.directory.relative_to(home)), "rows": export.counts}
    clock.lap("dsr_access_exports")
    holds = [(r, k, e) for r, k, e, _ in live if k in ("objection", "restriction")]
    if holds:
        conn.temp_table("dsr_hold_emails", pd.DataFrame({"email": sorted({e for _, _, e in holds})}, dtype="string"))
        contact_ids: dict[str, list[str]] = {}
        for email, contact_id in conn.execute(
            "select c.email_normalized, c.contact_id from raw.crm_contacts c "
            "join dsr_hold_emails h on c.email_normalized = h.email order by c.email_normalized, c.contact_id"
        ).fetchall():
            contact_ids.setdefault(email, []).append(contact_id)
        conn.execute("drop table if exists dsr_hold_emails").fetchall()
        objections = [(r, e, contact_ids.get(e, [])) for r, k, e in holds if k == "objection"]
        if objections:
            from governed_marketing.privacy.suppression import suppress_many

            added = suppress_many(conn, key=key, people=objections, reason="objection")
            for (request_id, _, ids), n in zip(objections, added, strict=True):
                outcomes[request_id] = {"suppression_entries": n, "contact_rows": len(ids), "_contact_ids": ids}
        for request_id, kind, email in holds:
            if kind == "restriction":
                ids = contact_ids.get(email, [])
                outcomes[request_id] = {
                    "_status": "in_effect",
                    "contact_rows": len(ids),
                    "_contact_ids": ids,
                    "effect": "excluded from every campaign until lifted (gmp dsr lift)",
                    "notify": _recipient_names(policy),
                }
    clock.lap("dsr_objection_restriction")
    return outcomes


_ANSWERED = ("access", "portability", "rectification", "objection", "restriction")


def _rectified(result, policy: Policy) -> dict[str, Any]:
    """A rectification's outcome; `needs_review` when it could not be applied (the reason says why)."""
    from governed_marketing.privacy.rectification import RectificationError

    if isinstance(result, RectificationError):
        return {"_status": "needs_review", "reason": str(result)}
    if not result.fields:
        return {"_status": "needs_review", "reason": "no corrected values in details: ask the person what to correct"}
    return {**result.counts(), "models": "rebuilt from raw on the next run", "notify": _recipient_names(policy)}


def _recipient_names(policy: Policy) -> list[str]:
    return [*sorted(policy.vendors), "email service provider"]


def _erase(
    erasures: list[ErasureRequest],
    *,
    settings: Settings,
    policy: Policy,
    key: bytes,
    manifest: Path | None,
    actor: str,
    done: dict[str, list[str]],
    compact: bool,
    clock: Clock,
) -> None:
    email_requests = [r for r in erasures if not r.email.startswith("erased:")]
    results = erase(
        email_requests,
        home=settings.home_dir,
        warehouse_path=warehouse.file_path(settings),
        policy=policy,
        key=key,
        manifest_path=manifest,
        compact=compact,
        clock=clock,
    )
    statuses: list[tuple[str, str, dict[str, Any] | None]] = []
    entries: list[dict[str, Any]] = []
    for request in erasures:
        result = results.get(request.request_id)
        if result is None:  # already erased by an earlier request: nothing left to find
            statuses.append((request.request_id, "done", {"note": "already erased by an earlier request"}))
            done["erasure"].append(request.request_id)
            continue
        status = "done" if result.verified else "failed"
        outcome = {**result.counts(), "receipt": str(result.receipt.relative_to(settings.home_dir))}
        statuses.append((request.request_id, status, outcome))
        entries.append(
            {
                "action": "dsr:erasure",
                "counts": {**outcome, "status": status, "hits": result.verification.get("hits")},
            }
        )
        done["erasure" if result.verified else "failed"].append(request.request_id)
    with warehouse.session(settings=settings) as conn:
        dsr.set_statuses(conn, statuses)
        audit.record_many(conn, entries, actor=actor, purpose=PURPOSE)
    clock.lap("erasure_statuses_audit")
