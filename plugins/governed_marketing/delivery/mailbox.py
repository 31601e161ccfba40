"""The mailto path of List-Unsubscribe: mails to `delivery.unsubscribe_mailto`, read from a folder.

The mail system delivers them as files (a Maildir's new/ and cur/, or plain .eml files) under
$GMP_HOME/unsubscribe_mailbox. The privacy DAG reads them each run: a token in the subject (or
body) that verifies is spooled as a `mailto` click and applied with the one-click ones. Every file
is deleted once read: it holds the sender's address, which we have no reason to keep.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import policy as email_policy
from email.parser import BytesParser
from pathlib import Path

from governed_marketing.delivery import tokens
from governed_marketing.delivery.unsubscribe import SPOOL_DIR, spool_click

MAILBOX_DIR = "unsubscribe_mailbox"
_TOKEN = re.compile(r"\b[0-9a-f]{32}\.[0-9a-f]{32}\b")


def _token_of(path: Path) -> str | None:
    with path.open("rb") as handle:
        message = BytesParser(policy=email_policy.default).parse(handle)
    body = message.get_body(preferencelist=("plain",))
    text = f"{message.get('Subject', '')}\n{body.get_content() if body is not None else ''}"
    found = _TOKEN.search(text.lower())
    return found.group(0) if found else None


def read_mailbox(home: Path, *, delivery_key: bytes) -> dict[str, int]:
    """Spool the verified mailto unsubscribes in the mailbox folder; counts only (files read, spooled, ignored)."""
    folder = home / MAILBOX_DIR
    counts = {"mails": 0, "spooled": 0, "ignored": 0}
    if not folder.is_dir():
        return counts
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        counts["mails"] += 1
        try:
            token = _token_of(path)
        except (OSError, ValueError, LookupError):
            token = None
        key = tokens.verify(delivery_key, token) if token else None
        received = datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)
        if key is not None and spool_click(home / SPOOL_DIR, key, "mailto", clicked_at=received):
            counts["spooled"] += 1
        elif key is None:
            counts["ignored"] += 1
        path.unlink(missing_ok=True)
    return counts


def collect_mailto_unsubscribes() -> dict[str, int]:
    """The privacy DAG's call: read the mailbox, then apply every spooled click (mailto and one-click)."""
    from governed_marketing.delivery.unsubscribe import apply_with_settings
    from governed_marketing.settings import get_settings

    settings = get_settings()
    if not (settings.home_dir / MAILBOX_DIR).is_dir() and not (settings.home_dir / SPOOL_DIR).is_dir():
        return {"mails": 0, "spooled": 0, "ignored": 0, "suppressed": 0}  # nothing was ever sent or clicked
    counts = read_mailbox(settings.home_dir, delivery_key=settings.resolve_delivery_key())
    counts["suppressed"] = len(apply_with_settings(settings.home_dir / SPOOL_DIR))
    return counts
