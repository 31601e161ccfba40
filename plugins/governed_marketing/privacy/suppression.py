"""The suppression list: keyed HMACs of the people who were erased or objected, so they stay gone.

Regulators accept keeping this minimal record ("suppress rather than delete", UK ICO): without it,
the next CRM export would bring an erased person straight back. A hash of an email is still personal
data (EDPB pseudonymisation guidelines 2025), so it is a keyed HMAC under GMP_PSEUDONYM_KEY, domain
separated from the marketing pseudonyms so the list cannot be joined to old audience tables.

`SuppressionDoor` is what ingest calls: rows of suppressed people are dropped before validation (so
they reach neither the raw tables nor the quarantine) and counted per file in `ops.suppression_door`;
nothing about who was dropped is stored. An erased person's email mentioned in someone else's notes
is replaced by [erased] on the way in (found by hashing the email-like tokens of the notes).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from governed_marketing.crm import contract
from governed_marketing.privacy.scan import EMAIL_TOKEN, REDACTED

if TYPE_CHECKING:  # pandas only types the ingest's frames here; `gmp dsr ...` starts without it
    import pandas as pd

    from governed_marketing.warehouse import Warehouse

_EVENT_FILES = (contract.CONSENT_EVENTS.name, contract.ACTIVITY.name)
_EMAIL_IN_TEXT = re.compile(EMAIL_TOKEN.pattern, re.IGNORECASE)


def _keyed(key: bytes, domain: str, value: str) -> str:
    return hmac.new(key, f"{domain}\x00{value}".encode(), hashlib.sha256).hexdigest()


def subject_ref(key: bytes, email: str) -> str:
    """The keyed HMAC of a normalized email: the person's reference in the suppression list and the DSR ledger."""
    return _keyed(key, "gmp-subject", contract.normalize_email(email))


def contact_ref(key: bytes, contact_id: str) -> str:
    """The keyed HMAC of a CRM contact_id, so events sent without their contact row are caught too."""
    return _keyed(key, "gmp-contact", str(contact_id).strip())


def suppress(
    conn: Warehouse,
    *,
    key: bytes,
    email: str,
    contact_ids: Iterable[str],
    reason: str,
    request_id: str | None,
) -> int:
    """Add a person (their email and every contact_id they had) to the list; returns entries added."""
    now = datetime.now(UTC).replace(tzinfo=None)
    entries = [(subject_ref(key, email), "email")] + [(contact_ref(key, c), "contact_id") for c in set(contact_ids)]
    before = conn.execute("select count(*) from ops.suppression").fetchall()[0][0]
    for digest, identifier in entries:
        conn.execute(
            "insert into ops.suppression values (?, ?, ?, ?, ?) on conflict do nothing",
            [digest, identifier, reason, request_id, now],
        ).fetchall()
    return conn.execute("select count(*) from ops.suppression").fetchall()[0][0] - before


def suppress_many(
    conn: Warehouse,
    *,
    key: bytes,
    people: list[tuple[str | None, str, Iterable[str]]],
    reason: str,
) -> list[int]:
    """`suppress` for many people ((request_id, email, contact_ids) each) in one insert; entries added per person.

    An entry two people share (or one already listed) counts for the first who adds it, as when
    `suppress` is called one by one in the same order.
    """
    if not people:
        return []
    import pandas as pd

    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    wanted: list[list[tuple[str, str]]] = [
        [(subject_ref(key, email), "email")] + [(contact_ref(key, c), "contact_id") for c in sorted(set(contact_ids))]
        for _, email, contact_ids in people
    ]
    conn.temp_table(
        "suppression_wanted",
        pd.DataFrame(sorted({d for entries in wanted for d, _ in entries}), columns=["subject_hmac"], dtype="string"),
    )
    seen = {
        r[0]
        for r in conn.execute(
            "select s.subject_hmac from ops.suppression s join suppression_wanted w using (subject_hmac)"
        ).fetchall()
    }
    added: list[int] = []
    rows: list[tuple[str, str, str, str | None, str]] = []
    for (request_id, _, _), entries in zip(people, wanted, strict=True):
        new = [(digest, identifier) for digest, identifier in dict(entries).items() if digest not in seen]
        seen.update(digest for digest, _ in new)
        rows += [(digest, identifier, reason, request_id, now) for digest, identifier in new]
        added.append(len(new))
    if rows:
        conn.temp_table(
            "suppression_new",
            pd.DataFrame(
                rows, columns=["subject_hmac", "identifier", "reason", "request_id", "added_at"], dtype="string"
            ),
        )
        conn.execute(
            "insert into ops.suppression select subject_hmac, identifier, reason, request_id, "
            "cast(added_at as timestamp) from suppression_new on conflict do nothing"
        ).fetchall()
        conn.execute("drop table if exists suppression_new").fetchall()
    conn.execute("drop table if exists suppression_wanted").fetchall()
    return added


def door_counts(conn: Warehouse, load_id: str) -> dict[str, int]:
    """Rows the door dropped from one load, per file (counts only)."""
    from governed_marketing.warehouse import table_exists

    if not table_exists(conn, "ops", "suppression_door"):
        return {}
    rows = conn.execute(
        "select file_name, rows_dropped from ops.suppression_door where load_id = ? order by file_name", [load_id]
    ).fetchall()
    return {name: int(n) for name, n in rows}


class SuppressionDoor:
    """Drops suppressed people's rows from a CRM export at the door, counting them per file.

    Built once per load (`open`), then `admit()` on each file's rows as read and `scrub()` on the
    landing copy, so the archived export does not keep what the raw tables refused.
    """

    def __init__(
        self,
        conn: Warehouse | None,
        load_id: str,
        key: bytes | None,
        emails: set[str],
        contacts: set[str],
        erased: set[str] | None = None,
    ) -> None:
        self._conn = conn
        self._load_id = load_id
        self._key = key
        self._emails = emails
        self._contacts = contacts
        self._erased = erased or set()
        self._dropped_ids: set[str] = set()
        self.dropped: dict[str, int] = {}
        self.mentions_redacted = 0

    @classmethod
    def open(cls, conn: Warehouse, *, load_id: str) -> SuppressionDoor:
        """The door for one load; a no-op (and no key needed) while the list is empty."""
        from governed_marketing.warehouse import table_exists

        if not table_exists(conn, "ops", "suppression"):
            return cls(None, load_id, None, set(), set())
        rows = conn.execute("select subject_hmac, identifier, reason from ops.suppression").fetchall()
        if not rows:
            return cls(None, load_id, None, set(), set())
        from governed_marketing.settings import get_settings

        key, _ = get_settings().resolve_pseudonym_key()
        emails = {digest for digest, kind, _ in rows if kind == "email"}
        contacts = {digest for digest, kind, _ in rows if kind == "contact_id"}
        erased = {digest for digest, kind, reason in rows if kind == "email" and reason == "erasure"}
        return cls(conn, load_id, key, emails, contacts, erased)

    @property
    def active(self) -> bool:
        return self._key is not None

    # ---- rows as read (before validation) -------------------------------------------------------
    def _email_hit(self, values: pd.Series) -> pd.Series:
        normalized = values.fillna("").astype(str).str.strip().str.lower()
        digests = {v: subject_ref(self._key, v) for v in normalized.unique() if v}
        return normalized.map(lambda v: digests.get(v) in self._emails if v else False).astype(bool)

    def _contact_hit(self, values: pd.Series) -> pd.Series:
        ids = values.fillna("").astype(str).str.strip()
        digests = {v: contact_ref(self._key, v) for v in ids.unique() if v}
        return ids.map(lambda v: bool(v) and (v in self._dropped_ids or digests[v] in self._contacts)).astype(bool)

    def _cells_hit(self, cells: Iterable[object]) -> bool:
        for cell in cells:
            text = "" if cell is None else str(cell).strip()
            if not text:
                continue
            if subject_ref(self._key, text) in self._emails or contact_ref(self._key, text) in self._contacts:
                return True
            if text in self._dropped_ids:
                return True
        return False

    def admit(
        self, spec: contract.ExportFile, frame: pd.DataFrame, broken: list[tuple[int, str, dict]]
    ) -> tuple[pd.DataFrame, list[tuple[int, str, dict]]]:
        """The file's rows minus those of suppressed people (well-formed and malformed alike)."""
        if not self.active or spec.name == contract.DSR_REQUESTS.name:
            return frame, broken  # a request is always taken: it has to be answered
        if spec.name == contract.CONTACTS.name:
            hit = self._email_hit(frame["email"]) | self._contact_hit(frame["contact_id"])
            self._dropped_ids |= set(frame.loc[hit, "contact_id"].fillna("").astype(str).str.strip()) - {""}
            frame = frame.assign(notes=frame["notes"].map(self.redact_mentions))
        elif spec.name in _EVENT_FILES:
            hit = self._contact_hit(frame["contact_id"])
        else:
            return frame, broken
        kept_broken = [item for item in broken if not self._cells_hit(item[2].values())]
        dropped = int(hit.sum()) + len(broken) - len(kept_broken)
        self._record(spec.name, dropped)
        return frame.loc[~hit].reset_index(drop=True), kept_broken

    def redact_mentions(self, text: object) -> object:
        """An erased person's email inside free text (someone else's notes) -> [erased]."""
        if not self._erased or not isinstance(text, str) or "@" not in text:
            return text

        def replace(match: re.Match) -> str:
            return REDACTED if subject_ref(self._key, match.group(0)) in self._erased else match.group(0)

        redacted = _EMAIL_IN_TEXT.sub(replace, text)
        self.mentions_redacted += redacted != text
        return redacted

    def _record(self, file_name: str, dropped: int) -> None:
        self.dropped[file_name] = dropped
        self._conn.execute(
            "insert or replace into ops.suppression_door values (?, ?, ?, ?)",
            [self._load_id, file_name, dropped, datetime.now(UTC).replace(tzinfo=None)],
        ).fetchall()

    # ---- the landing copy -----------------------------------------------------------------------
    def scrub(self, landing_dir: Path) -> int:
        """Rewrite the landing copy of the export without the rows the door dropped; returns rows removed."""
        if not self.active or not (any(self.dropped.values()) or self.mentions_redacted):
            return 0
        removed = 0
        for name in (contract.CONTACTS.name, *_EVENT_FILES):
            path = landing_dir / name
            redact = self._redact_row if name == contract.CONTACTS.name and self.mentions_redacted else None
            if path.is_file() and (self.dropped.get(name) or redact):
                removed += rewrite_csv(path, lambda row, name=name: self._row_hit(name, row), redact)[0]
        return removed

    def _redact_row(self, cells: list[str]) -> list[str]:
        return [self.redact_mentions(cell) for cell in cells]

    def _row_hit(self, file_name: str, row: dict[str, str] | list[str]) -> bool:
        if isinstance(row, list):
            return self._cells_hit(row)
        if file_name == contract.CONTACTS.name:
            email = contract.normalize_email(row.get("email"))
            contact_id = (row.get("contact_id") or "").strip()
            return (bool(email) and subject_ref(self._key, email) in self._emails) or (
                bool(contact_id)
                and (contact_id in self._dropped_ids or contact_ref(self._key, contact_id) in self._contacts)
            )
        contact_id = (row.get("contact_id") or "").strip()
        return bool(contact_id) and (
            contact_id in self._dropped_ids or contact_ref(self._key, contact_id) in self._contacts
        )


def rewrite_csv(
    path: Path,
    drop: Callable[[dict[str, str] | list[str]], bool],
    redact_row: Callable[[list[str]], list[str]] | None = None,
    *,
    untouched: Callable[[list[str]], bool] | None = None,
) -> tuple[int, int]:
    """Rewrite a CSV atomically without the rows `drop(row)` selects; `redact_row(cells)` cleans kept rows.

    `untouched(cells)`: a cheap test the caller knows to imply "neither dropped nor redacted" (the
    row's key is nobody's being erased, it has no free text): such a row is written as it is, without
    building its dict or calling `drop` (most rows of a large file, most of the time).

    Rows are dicts by header (lower-cased names); a row with the wrong number of fields is passed as
    its list of cells. Returns (rows removed, rows redacted); the file is untouched when both are 0.
    Fields of any length are read (an archive written before ingest enforced its field limit holds
    them), so an erasure never fails on a stored copy.
    """
    partial = path.with_name(path.name + ".partial")
    removed = redacted = 0
    with (
        contract.csv_field_limit(None),
        path.open(encoding="utf-8-sig", newline="") as source,
        partial.open("w", encoding="utf-8", newline="") as target,
    ):
        reader = csv.reader(source)
        writer = csv.writer(target, lineterminator="\n")
        header = next(reader, None)
        if header is None:
            partial.unlink()
            return 0, 0
        writer.writerow(header)
        names = [h.strip().lower() for h in header]
        for cells in reader:
            if not cells:
                continue
            if untouched is not None and untouched(cells):
                writer.writerow(cells)
                continue
            row = dict(zip(names, cells, strict=True)) if len(cells) == len(names) else list(cells)
            if drop(row):
                removed += 1
                continue
            kept = redact_row(cells) if redact_row else cells
            redacted += kept != cells
            writer.writerow(kept)
        target.flush()
        os.fsync(target.fileno())
    if removed or redacted:
        partial.replace(path)
    else:
        partial.unlink()
    return removed, redacted
