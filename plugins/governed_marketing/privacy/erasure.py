"""Erasure (Art. 17) from every store, physically, proven by a scan, with a receipt free of personal data.

A batch of erasure requests is handled set-based, in this order (each step safe to repeat, so a
retried task finishes the job):

1. identity: every contact row sharing the normalized email (raw and quarantined), its contact ids,
   phones and names, and the marketing pseudonym (keyed HMAC);
2. files first, while the contact ids are still known: archived exports under `landing/` (and any
   other copy of a CRM export under GMP_HOME) rewritten without the person's rows, the outbox
   rewritten atomically without their messages, their own access exports removed;
3. the warehouse in one transaction: raw and quarantine rows, every table the dbt manifest marks
   with `meta.subject_column` (so a new model is never forgotten), the generation ledger; the
   person's requests are kept with the email replaced by the keyed HMAC; the suppression list gets
   the person so a re-sent export cannot bring them back;
4. the scan of every table: what it still finds is a mention in someone else's row (an email in
   their notes), redacted; it reads live rows, which step 5 does not change, so it runs first and
   a redaction costs no second rewrite of the whole warehouse;
5. physically: CHECKPOINT, then the DuckDB file rewritten (COPY FROM DATABASE) and swapped in,
   because deleted rows survive in freed blocks until then (on Postgres: VACUUM FULL);
6. the scan of every file under GMP_HOME: text files (logs) and SQLite files (Airflow's XCom and
   metadata) holding the identifiers are redacted, then scanned again;
7. the verdict from the last scans, and the receipt.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from governed_marketing import warehouse
from governed_marketing.crm import contract
from governed_marketing.policy import Policy
from governed_marketing.privacy import audit, scan
from governed_marketing.privacy.stores import personal_relations
from governed_marketing.privacy.suppression import rewrite_csv, subject_ref, suppress_many
from governed_marketing.pseudonym import pseudonym

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

#: Directories under GMP_HOME that are not copies of a CRM export even when they hold a contacts.csv.
_NOT_EXPORT_COPIES = ("outbox", "exports", "receipts", "reports", "airflow", "logs")
_FILE_CONTACT_COLUMN = {
    contract.CONTACTS.name: "contact_id",
    contract.CONSENT_EVENTS.name: "contact_id",
    contract.ACTIVITY.name: "contact_id",
}


@dataclass(frozen=True)
class ErasureRequest:
    request_id: str
    email: str  # normalized


@dataclass
class ErasureResult:
    """What one request's erasure did: counts per store, the scan, the receipt. No identifiers."""

    request_id: str
    removed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    redacted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    pseudonymized: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    contact_rows: int = 0
    outbox_messages: int = 0
    verification: dict[str, Any] = field(default_factory=dict)
    receipt: Path | None = None

    @property
    def verified(self) -> bool:
        return bool(self.verification.get("verified"))

    def counts(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "rows_removed": sum(self.removed.values()),
            "stores_touched": len(self.removed) + len(self.redacted) + len(self.pseudonymized),
            "verified": self.verified,
            "receipt": str(self.receipt) if self.receipt else None,
        }


# ---- 1. identity -------------------------------------------------------------------------------


def resolve_identities(conn: Warehouse, requests: list[ErasureRequest], *, key: bytes) -> dict[str, scan.Identity]:
    """Every identifier of each person, from the raw contacts and the quarantine."""
    identities = {
        r.request_id: scan.Identity(ref=r.request_id, emails={r.email}, pseudonym=pseudonym(key, r.email))
        for r in requests
    }
    by_email = defaultdict(list)
    for r in requests:
        by_email[r.email].append(r.request_id)
    if warehouse.table_exists(conn, "raw", "crm_contacts"):
        conn.temp_table("erase_emails", pd.DataFrame({"email": list(by_email)}, dtype="string"))
        rows = conn.execute(
            """
            select c.email_normalized, c.contact_id, c.email, c.first_name, c.last_name, c.phone
            from raw.crm_contacts c
            where c.email_normalized in (select email from erase_emails)
            """
        ).fetchall()
        for email, contact_id, written, first, last, phone in rows:
            for ref in by_email[email]:
                identities[ref].add_contact(
                    {"contact_id": contact_id, "email": written, "first_name": first, "last_name": last, "phone": phone}
                )
    if warehouse.table_exists(conn, "raw", "quarantine"):
        for _, ref, record in _quarantine_matches(conn, identities):
            if record.get("_file") == contract.CONTACTS.name:
                identities[ref].add_contact(record)
    return identities


def _quarantine_matches(conn: Warehouse, identities: dict[str, scan.Identity]) -> list[tuple[tuple, str, dict]]:
    """Quarantined rows that are a person's own: by email (contacts, requests) or contact_id (events).

    Contact rows come first so a quarantined contact's id also catches its quarantined events.
    """
    emails = {e: ref for ref, i in identities.items() for e in i.emails}
    contacts = {c: ref for ref, i in identities.items() for c in i.contact_ids}
    rows = conn.execute(
        "select load_id, file_name, line_number, raw_record from raw.quarantine order by file_name != ?, file_name",
        [contract.CONTACTS.name],
    ).fetchall()
    matches = []
    for load_id, file_name, line, raw_record in rows:
        try:
            record = json.loads(raw_record or "{}")
        except ValueError:
            record = {}
        if not isinstance(record, dict):
            continue
        if "email" not in record and "contact_id" not in record and record:  # a malformed line: cells by position
            spec = next((s for s in contract.EXPORT_FILES if s.name == file_name), None)
            if spec:
                record = {
                    spec.columns[int(k)]: v
                    for k, v in record.items()
                    if str(k).isdigit() and int(k) < len(spec.columns)
                }
        email = contract.normalize_email(record.get("email"))
        contact_id = str(record.get("contact_id") or "").strip()
        ref = emails.get(email) if email else None
        if ref is None and contact_id and file_name != contract.DSR_REQUESTS.name:
            ref = contacts.get(contact_id)
        if ref is not None:
            matches.append(((load_id, file_name, line), ref, {**record, "_file": file_name}))
            if file_name == contract.CONTACTS.name and contact_id:
                identities[ref].contact_ids.add(contact_id)
                contacts[contact_id] = ref
    return matches


# ---- 2. files ----------------------------------------------------------------------------------


def export_copies(home: Path) -> list[Path]:
    """Directories under GMP_HOME holding a copy of a CRM export (landing archives, the demo export)."""
    found = []
    for contacts in sorted(home.rglob(contract.CONTACTS.name)):
        relative = contacts.relative_to(home).parts
        if relative and relative[0] not in _NOT_EXPORT_COPIES:
            found.append(contacts.parent)
    return found


def _erase_export_copy(directory: Path, matcher: scan.Matcher, results: dict[str, ErasureResult], home: Path) -> None:
    identities = matcher.identities
    emails = {e: ref for ref, i in identities.items() for e in i.emails}
    contacts = {c: ref for ref, i in identities.items() for c in i.contact_ids}

    def by_cells(cells: list[str]) -> str | None:
        return next((emails[e] for e in map(contract.normalize_email, cells) if e in emails), None)

    def contacts_owner(row: dict | list) -> str | None:
        if isinstance(row, list):
            return by_cells(row)
        ref = emails.get(contract.normalize_email(row.get("email")))
        return ref or contacts.get((row.get("contact_id") or "").strip())

    def events_owner(row: dict | list) -> str | None:
        return contacts.get((row.get("contact_id") or "").strip()) if isinstance(row, dict) else None

    def requests_owner(row: dict | list) -> str | None:
        return by_cells(row) if isinstance(row, list) else emails.get(contract.normalize_email(row.get("email")))

    owners = {
        contract.CONTACTS.name: contacts_owner,
        contract.CONSENT_EVENTS.name: events_owner,
        contract.ACTIVITY.name: events_owner,
        contract.DSR_REQUESTS.name: requests_owner,
    }
    for spec in contract.EXPORT_FILES:  # contacts first: its rows add contact ids for the event files
        path = directory / spec.name
        if not path.is_file():
            continue
        store = str(path.relative_to(home))
        removed: dict[str, int] = defaultdict(int)
        redacted: dict[str, int] = defaultdict(int)

        def drop(row, owner=owners[spec.name], removed=removed, is_contacts=spec is contract.CONTACTS) -> bool:
            ref = owner(row)
            if ref is None:
                return False
            removed[ref] += 1
            if is_contacts and isinstance(row, dict):
                identities[ref].add_contact(row)
                contact_id = (row.get("contact_id") or "").strip()
                if contact_id:
                    contacts[contact_id] = ref
            return True

        header = _csv_header(path)
        free = [header.index(c) for c in ("notes", "details") if c in header]

        def redact_cells(cells: list[str], redacted=redacted, header=header, free=free) -> list[str]:
            # Other people's rows can mention the person only in free text (a well-formed row's notes).
            text = "\x1f".join(cells[i] for i in free) if len(cells) == len(header) else "\x1f".join(cells)
            refs = matcher.find(text) if text else None
            if not refs:
                return cells
            for ref in refs:
                redacted[ref] += 1
            redact = matcher.redactor(refs, whole_cells=False)  # another person's row: only their notes change
            return [redact(c) if i in free or len(cells) != len(header) else c for i, c in enumerate(cells)]

        free_text = spec in (contract.CONTACTS, contract.DSR_REQUESTS)
        untouched = _untouched(spec, header, free, contacts)
        rewrite_csv(path, drop, redact_row=redact_cells if free_text else None, untouched=untouched)
        for ref, n in removed.items():
            results[ref].removed[store] += n
        for ref, n in redacted.items():
            results[ref].redacted[store] += n


def _untouched(
    spec: contract.ExportFile, header: list[str], free: list[int], contacts: dict[str, str]
) -> Callable[[list[str]], bool] | None:
    """For an event file (no free text; its owner is its contact_id alone), the rows `rewrite_csv` may
    write as they are: a well-formed row whose contact is not being erased, and a malformed one
    (whose owner cannot be told, so it is kept, as `drop` would). `contacts` is read when called:
    the contacts file, rewritten first, adds the ids its rows show."""
    if spec not in (contract.CONSENT_EVENTS, contract.ACTIVITY) or free or "contact_id" not in header:
        return None
    at, width = len(header) - 1 - header[::-1].index("contact_id"), len(header)  # a dict keeps the last
    return lambda cells: len(cells) != width or cells[at].strip() not in contacts


def _csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [h.strip().lower() for h in next(csv.reader(handle), [])]


_OUTBOX_KEYS = re.compile(r'"contact_id": "((?:[^"\\]|\\.)*)".*?"email": "((?:[^"\\]|\\.)*)"')


def _outbox_owner(line: str, emails: dict[str, str], contacts: dict[str, str]) -> str | None:
    """The erased person a message line is for, read cheaply (the outbox's own key order), else parsed."""
    match = _OUTBOX_KEYS.search(line)
    if match and "\\" not in match.group(0):
        return emails.get(contract.normalize_email(match.group(2))) or contacts.get(match.group(1))
    row = json.loads(line)
    return emails.get(contract.normalize_email(row.get("email"))) or contacts.get(str(row.get("contact_id")))


def erase_outbox(outbox: Path, identities: dict[str, scan.Identity]) -> dict[str, dict[str, int]]:
    """Rewrite every outbox file atomically without these people's messages; {ref: {file: removed}}."""
    emails = {e: ref for ref, i in identities.items() for e in i.emails}
    contacts = {c: ref for ref, i in identities.items() for c in i.contact_ids}
    removed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if not outbox.is_dir():
        return removed
    for path in sorted(outbox.rglob("*.jsonl")):
        kept, hit = [], False
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    ref = _outbox_owner(line, emails, contacts)
                except ValueError:
                    kept.append(line)
                    continue
                if ref is None:
                    kept.append(line if line.endswith("\n") else line + "\n")
                else:
                    removed[ref][str(path.relative_to(outbox.parent))] += 1
                    hit = True
        if hit:
            partial = path.with_name(path.name + ".partial")
            with partial.open("w", encoding="utf-8") as handle:
                handle.writelines(kept)
                handle.flush()
                os.fsync(handle.fileno())
            partial.replace(path)
    return removed


# ---- 3. the warehouse --------------------------------------------------------------------------


def _subjects_frames(identities: dict[str, scan.Identity]) -> dict[str, pd.DataFrame]:
    return {
        "erase_emails": pd.DataFrame(
            [(ref, e) for ref, i in identities.items() for e in i.emails], columns=["ref", "email"], dtype="string"
        ),
        "erase_contacts": pd.DataFrame(
            [(ref, c) for ref, i in identities.items() for c in i.contact_ids],
            columns=["ref", "contact_id"],
            dtype="string",
        ),
        "erase_pseudonyms": pd.DataFrame(
            [(ref, i.pseudonym) for ref, i in identities.items() if i.pseudonym],
            columns=["ref", "pseudonym"],
            dtype="string",
        ),
    }


_MATCH = {
    "email": ("erase_emails", "email", "lower(trim(t.{col}::varchar))"),
    "contact_id": ("erase_contacts", "contact_id", "trim(t.{col}::varchar)"),
    "pseudonym": ("erase_pseudonyms", "pseudonym", "t.{col}::varchar"),
}


def _delete_relation(conn: Warehouse, relation, results: dict[str, ErasureResult]) -> None:
    """Delete the people's rows from one table (by its subject column, and by contact_id if it has one)."""
    conditions = [(relation.kind, relation.subject_column)]
    if relation.has_contact_id and relation.kind != "contact_id":
        conditions.append(("contact_id", "contact_id"))
    selects, wheres = [], []
    for kind, column in conditions:
        table, needle, expression = _MATCH[kind]
        value = expression.format(col=f'"{column}"')
        rid = conn.row_id("t")
        selects.append(f"select {rid} as rid, s.ref from {relation.sql} t join {table} s on {value} = s.{needle}")
        wheres.append(f"{value} in (select {needle} from {table})")
    counts = conn.execute(
        f"select ref, count(distinct rid) from ({' union '.join(selects)}) as matched group by ref"
    ).fetchall()
    if not counts:
        return
    conn.execute(f"delete from {relation.sql} t where {' or '.join(wheres)}").fetchall()
    for ref, n in counts:
        results[ref].removed[relation.qualified] += int(n)


def erase_warehouse(
    conn: Warehouse,
    identities: dict[str, scan.Identity],
    results: dict[str, ErasureResult],
    *,
    key: bytes,
    manifest_path: Path | None,
) -> list[str]:
    """Every row of these people in the warehouse, in one transaction. Returns notes for the receipts."""
    for name, frame in _subjects_frames(identities).items():
        conn.temp_table(name, frame)
    relations, unstored, notes = personal_relations(conn, manifest_path)
    conn.execute("begin transaction")
    try:
        for relation in relations:
            _delete_relation(conn, relation, results)
        if warehouse.table_exists(conn, "raw", "quarantine"):
            matches = _quarantine_matches(conn, identities)
            if matches:
                keys = pd.DataFrame([k for k, _, _ in matches], columns=["load_id", "file_name", "line_number"])
                conn.temp_table("erase_quarantine", keys)
                conn.execute(
                    """
                    delete from raw.quarantine q using erase_quarantine e
                    where q.load_id = e.load_id and q.file_name = e.file_name and q.line_number = e.line_number
                    """
                ).fetchall()
                for _, ref, _ in matches:
                    results[ref].removed["raw.quarantine"] += 1
        if warehouse.table_exists(conn, "raw", "crm_dsr_requests"):
            _pseudonymize_requests(conn, identities, results, key=key)
        # Individual-mode drafts and their ledger rows are keyed by the recipient's pseudonym.
        for table in ("generated_content", "generation_ledger"):
            if not warehouse.table_exists(conn, "ops", table):
                continue
            counts = conn.execute(
                f"select s.ref, count(*) from ops.{table} g "
                "join erase_pseudonyms s on g.unit_id = s.pseudonym group by s.ref"
            ).fetchall()
            conn.execute(
                f"delete from ops.{table} where unit_id in (select pseudonym from erase_pseudonyms)"
            ).fetchall()
            for ref, n in counts:
                results[ref].removed[f"ops.{table}"] += int(n)
        suppress_many(
            conn,
            key=key,
            people=[
                (ref, email, identity.contact_ids)
                for ref, identity in identities.items()
                for email in sorted(identity.emails)
            ],
            reason="erasure",
        )
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    for model in unstored:
        notes.append(f"dbt model {model.name}: {model.materialized}, stores no rows (reads the tables erased above)")
    return notes


def _pseudonymize_requests(
    conn: Warehouse,
    identities: dict[str, scan.Identity],
    results: dict[str, ErasureResult],
    *,
    key: bytes,
) -> None:
    """Keep the person's requests (the record that they were answered) without their email or details.

    One UPDATE for the batch, joined to the emails and their keyed HMACs.
    """
    pairs: dict[str, str] = {}
    for ref, identity in identities.items():  # an email two requests share counts for the first, as before
        for email in sorted(identity.emails):
            pairs.setdefault(email, ref)
    if not pairs:
        return
    frame = pd.DataFrame(
        [(ref, e, "erased:" + subject_ref(key, e)) for e, ref in pairs.items()],
        columns=["ref", "email", "erased"],
        dtype="string",
    )
    conn.temp_table("erase_request_emails", frame)
    counts = conn.execute(
        "select s.ref, count(*) from raw.crm_dsr_requests r join erase_request_emails s "
        "on r.email_normalized = s.email group by s.ref"
    ).fetchall()
    if counts:
        conn.execute(
            "update raw.crm_dsr_requests set email_normalized = s.erased, details = '{}' "
            "from erase_request_emails s where raw.crm_dsr_requests.email_normalized = s.email"
        ).fetchall()
    for ref, n in counts:
        results[ref].pseudonymized["raw.crm_dsr_requests"] += int(n)
    conn.execute("drop table if exists erase_request_emails").fetchall()


# ---- the whole erasure -------------------------------------------------------------------------


def own_request_ids(conn: Warehouse, identities: dict[str, scan.Identity]) -> dict[str, set[str]]:
    """The request ids a person made (their access exports are erased with them)."""
    owned: dict[str, set[str]] = defaultdict(set)
    if not warehouse.table_exists(conn, "raw", "crm_dsr_requests"):
        return owned
    for ref in identities:
        owned[ref] = set()
    conn.temp_table(
        "erase_owner_emails",
        pd.DataFrame(
            [(ref, e) for ref, i in identities.items() for e in sorted(i.emails)],
            columns=["ref", "email"],
            dtype="string",
        ),
    )
    for ref, request_id in conn.execute(
        "select s.ref, r.request_id from raw.crm_dsr_requests r join erase_owner_emails s "
        "on r.email_normalized = s.email"
    ).fetchall():
        owned[ref].add(request_id)
    conn.execute("drop table if exists erase_owner_emails").fetchall()
    return owned


def erase(
    requests: list[ErasureRequest],
    *,
    home: Path,
    warehouse_path: Path | None,
    policy: Policy,
    key: bytes,
    manifest_path: Path | None,
    now: datetime | None = None,
    compact: bool = True,
    timings: dict[str, float] | None = None,
    clock: Clock | None = None,
) -> dict[str, ErasureResult]:
    """Erase a batch of people everywhere, verify, and write one receipt per request.

    Args:
        warehouse_path: the DuckDB file; None: the configured warehouse (GMP_WAREHOUSE), on Postgres
            with VACUUM FULL as the physical step and no database file under GMP_HOME to scan.
        timings: filled with seconds per phase (for benchmarks and the step record).
        clock: the caller's running clock, lapped instead of a new one over `timings` (the caller's
            next lap then starts where erasure ended).
    """
    now = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    results = {r.request_id: ErasureResult(r.request_id) for r in requests}
    if not requests:
        return results
    clock = clock or Clock(timings if timings is not None else {})
    with warehouse.session(warehouse_path) as conn:
        identities = resolve_identities(conn, requests, key=key)
        owned = own_request_ids(conn, identities)
    for ref, identity in identities.items():
        results[ref].contact_rows = len(identity.contact_ids)
    matcher = scan.Matcher(identities.values())
    clock.lap("identity")

    # 2. files, while the contact ids are known
    _erase_files(home, identities, owned, matcher, results)
    clock.lap("files")

    # 3. the warehouse
    with warehouse.session(warehouse_path) as conn:
        notes = erase_warehouse(conn, identities, results, key=key, manifest_path=manifest_path)
        conn.checkpoint()
    clock.lap("warehouse_delete")
    # 4. the scan of every table (mentions in someone else's row redacted), then 5. the one rewrite of the file
    tables = _verify_tables(warehouse_path, matcher, results, clock=clock)
    if compact:
        warehouse.erase_physically(warehouse_path)
    clock.lap("warehouse_compact")
    # 6. the scan of every file (the database file's bytes too, after the rewrite)
    files = _verify_files(home, warehouse_path, matcher, results, clock=clock)
    clock.lap("files_redact_mentions")

    # 7. the verdict, then receipts
    verdicts = _verdicts(identities, tables, files, home)
    for ref, result in results.items():
        result.verification = verdicts[ref]
        result.receipt = write_receipt(home, result, policy=policy, notes=notes, now=now)
    clock.lap("receipts")
    return results


def _erase_files(
    home: Path,
    identities: dict[str, scan.Identity],
    owned: dict[str, set[str]],
    matcher: scan.Matcher,
    results: dict[str, ErasureResult],
) -> None:
    """Copies of earlier exports, the outbox, and the person's own access exports."""
    for directory in export_copies(home):
        _erase_export_copy(directory, matcher, results, home)
    for ref, files in erase_outbox(home / "outbox", identities).items():
        for store, n in files.items():
            results[ref].removed[store] += n
            results[ref].outbox_messages += n
    for ref, request_ids in owned.items():
        for request_id in sorted(request_ids):
            export = home / "exports" / request_id
            if export.is_dir():
                count = sum(1 for p in export.rglob("*") if p.is_file())
                shutil.rmtree(export)
                results[ref].removed[f"exports/{request_id}"] += count


def _verify_tables(
    warehouse_path: Path | None,
    matcher: scan.Matcher,
    results: dict[str, ErasureResult],
    *,
    clock: Clock,
) -> scan.TableScan:
    """Every table scanned; a mention left in someone else's row is redacted (the caller then rewrites the file)."""
    with warehouse.session(warehouse_path, read_only=True) as conn:
        tables = scan.scan_tables(conn, matcher)
    clock.lap("verify_tables")
    if tables.hits:
        with warehouse.session(warehouse_path) as conn:
            for ref, stores in scan.redact_table_hits(conn, matcher, tables).items():
                for store, n in stores.items():
                    results[ref].redacted[store] += n
            tables.hits = scan.recheck(conn, matcher, tables.hits)  # only these rows changed since the scan
            conn.checkpoint()
        clock.lap("warehouse_redact_mentions")
    return tables


def _verify_files(
    home: Path,
    warehouse_path: Path | None,
    matcher: scan.Matcher,
    results: dict[str, ErasureResult],
    *,
    clock: Clock,
) -> scan.FileScan:
    """Every file scanned: text redacted in place, SQLite redacted and vacuumed, then scanned again."""
    files = scan.scan_files(home, matcher)
    clock.lap("verify_files")
    changed_any = False
    for path, refs in _group_file_hits(files).items():
        store = str(path.relative_to(home))
        if scan.is_sqlite(path):
            changed = scan.redact_sqlite(path, matcher, refs)
        elif scan.is_text_file(path):
            changed = scan.redact_text_file(path, matcher, refs)
        else:
            continue
        changed_any = changed_any or bool(changed)
        for ref in refs:
            results[ref].redacted[store] += changed
    if changed_any:
        files = scan.scan_files(home, matcher)
    # The database file, byte by byte: a value still held rightly in someone else's live row is not a remnant.
    in_db = [hit for hit in files.hits if warehouse_path is not None and hit.path == warehouse_path]
    if in_db:
        with warehouse.session(warehouse_path, read_only=True) as conn:
            live = scan.live_values(conn, {m for hit in in_db for m in hit.matches})
        for hit in in_db:
            if hit.matches <= live:
                files.hits.remove(hit)
    return files


def _verdicts(
    identities: dict[str, scan.Identity], tables: scan.TableScan, files: scan.FileScan, home: Path
) -> dict[str, dict[str, object]]:
    """What each receipt says was searched and found: counts and store names, never an identifier."""
    table_hits, file_hits = tables.by_ref(), files.by_ref()
    table_stores, file_paths = tables.stores_by_ref(), files.paths_by_ref()
    scanned_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"
    verdicts = {}
    for ref, identity in identities.items():
        hits = {
            kind: table_hits.get(ref, {}).get(kind, 0) + file_hits.get(ref, {}).get(kind, 0)
            for kind in ("email", "phone", "name")
        }
        verdicts[ref] = {
            "scanned_at": scanned_at,
            "tables_scanned": tables.tables,
            "text_columns_scanned": tables.columns,
            "files_scanned": files.files,
            "bytes_scanned": files.bytes,
            "file_engine": files.engine,
            "identifiers_searched": {
                "emails": len(identity.emails),
                "phones": len(identity.phones),
                "names": len(identity.names),
            },
            "hits": hits,
            "stores_with_hits": sorted(
                table_stores.get(ref, set()) | {str(p.relative_to(home)) for p in file_paths.get(ref, set())}
            ),
            "verified": not any(hits.values()),
        }
    return verdicts


class Clock:
    """Seconds per phase, added into a dict (a phase lapped twice adds up): where a pass's time goes."""

    def __init__(self, sink: dict[str, float]) -> None:
        self.sink = sink
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.sink[phase] = self.sink.get(phase, 0.0) + now - self.last
        self.last = now


def _group_file_hits(found: scan.FileScan) -> dict[Path, set[str]]:
    grouped: dict[Path, set[str]] = defaultdict(set)
    for hit in found.hits:
        grouped[hit.path] |= set(hit.refs)
    return grouped


# ---- the receipt -------------------------------------------------------------------------------


def recipients(policy: Policy, *, had_outbox_messages: bool) -> list[dict[str, Any]]:
    """Art. 19: everyone the data may have been disclosed to: the vendors in governance.yml and the ESP."""
    cohort_only = all(c.personalization == "cohort" for c in policy.campaigns.values())
    listed = [
        {
            "recipient": name,
            "role": vendor.role,
            "region": vendor.region,
            "received_personal_data": False if cohort_only else "possibly (individual personalization)",
            "action": "none needed: only cohort attributes were sent, stored with store=false"
            if cohort_only
            else "notify the vendor and ask it to delete",
        }
        for name, vendor in sorted(policy.vendors.items())
    ]
    listed.append(
        {
            "recipient": "email service provider (receives the outbox)",
            "role": "processor",
            "region": "not declared in governance.yml",
            "received_personal_data": had_outbox_messages,
            "action": "notify: remove the address from the ESP's lists, sends and logs"
            if had_outbox_messages
            else "notify as a precaution: no message for this person was in the outbox",
        }
    )
    return listed


def vendor_side(policy: Policy) -> list[dict[str, str]]:
    """What vendors hold of the person. In cohort mode: nothing, and the receipt says so plainly."""
    held = []
    for name in sorted(policy.vendors):
        campaigns = [cid for cid, c in policy.campaigns.items() if name in policy.purposes[c.purpose].vendors]
        modes = {policy.campaigns[c].personalization for c in campaigns}
        held.append(
            {
                "vendor": name,
                "held": "none" if modes <= {"cohort"} else "unknown: ask the vendor",
                "why": "cohort mode sends only attributes shared by at least k people; "
                f"store={str(policy.vendors[name].store).lower()}; no files uploaded"
                if modes <= {"cohort"}
                else "individual personalization may have sent this person's allow-listed fields",
            }
        )
    return held


def write_receipt(home: Path, result: ErasureResult, *, policy: Policy, notes: list[str], now: datetime) -> Path:
    """receipts/<request_id>.json: what was done, where, and the proof; no personal data."""
    receipt = {
        "request_id": result.request_id,
        "request_type": "erasure",
        "article": "GDPR Art. 17",
        "completed_at": now.isoformat() + "Z",
        "controller": policy.controller.name,
        "subject": "identified by normalized email; no identifier is written in this receipt",
        "contact_records_found": result.contact_rows,
        "stores": [
            *({"store": s, "action": "rows removed", "rows": n} for s, n in sorted(result.removed.items())),
            *(
                {"store": s, "action": "identity replaced by a keyed HMAC (the request record is kept)", "rows": n}
                for s, n in sorted(result.pseudonymized.items())
            ),
            *(
                {"store": s, "action": "mentions redacted in other records", "rows": n}
                for s, n in sorted(result.redacted.items())
                if n
            ),
        ],
        "rows_removed_total": sum(result.removed.values()),
        "physical_erasure": {
            "warehouse": "DuckDB: DELETE, CHECKPOINT, then the database file rewritten (COPY FROM DATABASE) and "
            "swapped in, so freed blocks holding old rows are gone",
            "postgres": "on a Postgres warehouse run VACUUM (FULL) on the touched tables; plain VACUUM only marks "
            "space reusable",
            "files": "rewritten to a new file and renamed over the old one (CSV, JSONL); logs and SQLite redacted "
            "in place, SQLite then VACUUMed",
        },
        "suppression": "a keyed HMAC of the email and of each contact id is kept so a re-sent CRM export cannot "
        "bring the person back (dropped and counted at ingest)",
        "vendor_side": vendor_side(policy),
        "verification": result.verification,
        "recipients_to_notify": recipients(policy, had_outbox_messages=result.outbox_messages > 0),
        "notes": notes,
        # The audit chain's head when the receipt was written: a copy outside the warehouse that
        # `gmp audit verify` checks the table against (truncation, re-hashing).
        "audit_head": audit.latest_recorded_head(home),
    }
    path = home / "receipts" / f"{result.request_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(receipt, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    partial.replace(path)
    return path
