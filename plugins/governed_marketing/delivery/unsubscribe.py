"""One-click unsubscribe (RFC 8058) as a GDPR objection (Art. 21(3)), effective at once.

A verified token is first written to a spool folder ($GMP_HOME/unsubscribe_spool/<message_key>.json,
created exclusively, fsynced): that is the moment of the click, and it survives a warehouse that is
busy (DuckDB has one writer; the sender may hold it). `apply_pending` then turns each spooled click
into an objection request (privacy.dsr.submit, source in its details) and a suppression-list entry
in one transaction, and records click and suppression times in ops.unsubscribes. The endpoint applies
at once when it can; the sender applies the spool before every chunk it sends, and the privacy DAG
on every run, so a click is honoured before the next message leaves.

A token names a message, never a person (see tokens). An invalid token changes nothing; a replayed
one finds its click already spooled or recorded and changes nothing either. Neither answer says
whether an address is known.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governed_marketing.delivery import tokens

if TYPE_CHECKING:
    from governed_marketing.policy import Policy
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

SPOOL_DIR = "unsubscribe_spool"
SOURCES = ("one_click", "confirm_page", "mailto")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def spool_click(spool: Path, message_key: str, source: str, *, clicked_at: datetime | None = None) -> bool:
    """Record a verified click durably; False when this message's click is already spooled (a replay)."""
    if source not in SOURCES:
        raise ValueError(f"unsubscribe source {source!r} is not one of {', '.join(SOURCES)}")
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    moment = (clicked_at or _now()).isoformat()
    try:
        descriptor = os.open(spool / f"{message_key}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"message_key": message_key, "source": source, "clicked_at": moment}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def pending(spool: Path) -> list[Path]:
    if not spool.is_dir():
        return []
    return sorted(entry for entry in spool.iterdir() if entry.suffix == ".json")


def apply_pending(conn: Warehouse, spool: Path, *, policy: Policy, pseudonym_key: bytes) -> list[str]:
    """Turn spooled clicks into objections + suppression; return the contact ids suppressed now.

    Cheap when the spool is empty (one directory listing), so the sender calls it before every chunk.
    """
    files = pending(spool)
    if not files:
        return []
    from governed_marketing.privacy import dsr
    from governed_marketing.privacy.suppression import contact_ref, subject_ref, suppress

    contacts: dict[str, tuple[str, str]] | None = None  # contact_ref -> (contact_id, email), built once
    suppressed_now: list[str] = []
    for path in files:
        try:
            click = json.loads(path.read_text(encoding="utf-8"))
            key, source, clicked_at = click["message_key"], click["source"], datetime.fromisoformat(click["clicked_at"])
        except (ValueError, KeyError, OSError) as exc:
            log.warning("%s: unreadable unsubscribe click (%s); left in the spool", path.name, type(exc).__name__)
            continue
        known = conn.execute("select count(*) from ops.unsubscribes where message_key = ?", [key]).fetchall()[0][0]
        target = conn.execute(
            "select campaign_id, recipient_ref from ops.delivery_ledger where message_key = ?", [key]
        ).fetchall()
        if known or not target:  # a replay, or a message we no longer know (its person erased): nothing to do
            path.unlink(missing_ok=True)
            continue
        campaign_id, recipient_ref = target[0]
        if contacts is None:
            contacts = {
                contact_ref(pseudonym_key, cid): (cid, email)
                for cid, email in conn.execute("select contact_id, email_normalized from raw.crm_contacts").fetchall()
            }
        with conn.transaction():
            request_id = None
            person = contacts.get(recipient_ref)
            if person is not None:
                contact_id, email = person
                listed = conn.execute(
                    "select count(*) from ops.suppression where subject_hmac = ?", [subject_ref(pseudonym_key, email)]
                ).fetchall()[0][0]
                if not listed:
                    request_id = dsr.submit(
                        conn,
                        "objection",
                        email,
                        {"source": f"unsubscribe_{source}", "campaign_id": campaign_id},
                        policy=policy,
                        key=pseudonym_key,
                        now=clicked_at,
                    )
                    ids = [
                        r[0]
                        for r in conn.execute(
                            "select contact_id from raw.crm_contacts where email_normalized = ?", [email]
                        ).fetchall()
                    ]
                    suppress(
                        conn, key=pseudonym_key, email=email, contact_ids=ids, reason="objection", request_id=request_id
                    )
                    suppressed_now += ids
            conn.execute(
                "insert into ops.unsubscribes values (?, ?, ?, ?, ?, ?) on conflict do nothing",
                [key, campaign_id, source, clicked_at, _now(), request_id],
            ).fetchall()
        path.unlink(missing_ok=True)
    return suppressed_now


def click(
    token: str,
    source: str,
    *,
    home: Path,
    delivery_key: bytes,
    apply: Callable[[Path], Any] | None = None,
) -> bool:
    """Verify, spool, then try to apply at once. False for a token we did not sign (nothing changes).

    `apply(spool)` opens the warehouse and applies the spool; when the warehouse is busy the click
    stays spooled and the sender or the privacy DAG applies it before anything else is sent.
    """
    key = tokens.verify(delivery_key, token)
    if key is None:
        return False
    spool = home / SPOOL_DIR
    spool_click(spool, key, source)
    if apply is not None:
        try:
            apply(spool)
        except Exception as exc:  # noqa: BLE001 - busy or unreachable warehouse: the spool keeps the click
            log.info("unsubscribe spooled, not yet applied (%s)", type(exc).__name__)
    return True


def apply_with_settings(spool: Path) -> list[str]:
    """Open the configured warehouse and apply the spool (the endpoint and the privacy DAG)."""
    from governed_marketing import warehouse
    from governed_marketing.policy import load_policy
    from governed_marketing.settings import get_settings

    settings = get_settings()
    with warehouse.session(settings=settings) as conn:
        return apply_pending(conn, spool, policy=load_policy(), pseudonym_key=settings.resolve_pseudonym_key()[0])


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>
"""


def create_app(home: Callable[[], Path], delivery_key: Callable[[], bytes], apply: Callable[[Path], Any] | None) -> Any:
    """The endpoint: GET shows a confirmation page (link scanners must not unsubscribe anyone), POST
    (RFC 8058 `List-Unsubscribe=One-Click`, or the page's button) objects at once. No auth: the
    token is the credential."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="Unsubscribe", docs_url=None, redoc_url=None, openapi_url=None)
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}
    invalid = _PAGE.format(
        title="This unsubscribe link is not valid",
        body="<p>Please use the link from the message as it arrived, or reply to the message.</p>",
    )

    @app.get("/{token}", response_class=HTMLResponse)
    def confirm_page(token: str) -> HTMLResponse:
        if tokens.verify(delivery_key(), token) is None:
            return HTMLResponse(invalid, status_code=400, headers=headers)
        body = (
            "<p>Stop all marketing email to you and object to its processing?</p>"
            '<form method="post"><button type="submit" name="List-Unsubscribe" value="One-Click">'
            "Unsubscribe</button></form>"
        )
        return HTMLResponse(_PAGE.format(title="Unsubscribe", body=body), headers=headers)

    @app.post("/{token}", response_class=HTMLResponse)
    def one_click(token: str) -> HTMLResponse:
        if not click(token, "one_click", home=home(), delivery_key=delivery_key(), apply=apply):
            return HTMLResponse(invalid, status_code=400, headers=headers)
        body = "<p>You will receive no more marketing email from us. Your objection is recorded.</p>"
        return HTMLResponse(_PAGE.format(title="You are unsubscribed", body=body), headers=headers)

    return app
