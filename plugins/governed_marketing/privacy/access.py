"""Access (Art. 15) and portability (Art. 20): a copy of everything held about one person.

`exports/<request_id>/subject.json` holds it all in one structured document; beside it, one CSV per
table (machine-readable, commonly used) for portability. The person is found the same way erasure
finds them: every contact row sharing the normalized email, then everything keyed by those contact
ids or by the person's pseudonym, including every dbt table that marks its subject column. Rows of
other people never enter: each table is filtered by this person's identifiers only.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from governed_marketing import warehouse
from governed_marketing.crm import contract
from governed_marketing.policy import Policy
from governed_marketing.privacy.stores import personal_relations
from governed_marketing.privacy.suppression import subject_ref
from governed_marketing.pseudonym import pseudonym

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from governed_marketing.warehouse import Warehouse

_RAW_TABLES = {("raw", "crm_contacts"), ("raw", "crm_consent_events"), ("raw", "crm_activity")}


@dataclass
class AccessExport:
    request_id: str
    directory: Path
    counts: dict[str, int]
    data_held: bool = True

    def summary(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "export": str(self.directory),
            "rows": dict(self.counts),
            "data_held": self.data_held,
        }


#: What the person's data is; their own requests (held to answer them) are not counted as data held.
_HELD = ("contacts", "consent_history", "activity", "messages", "cohorts", "quarantined_records", "derived")
NO_DATA_HELD = (
    "We hold no personal data about you: no contact record, consent history, activity, message or "
    "derived data matches this email address (GDPR Art. 15(1): confirmation that no data is processed). "
    "The only record is this request itself, kept to show it was answered."
)


def holds_data(data: dict[str, Any]) -> bool:
    """Whether anything beyond the person's own requests is held (the Art. 15(1) confirmation)."""
    return any(data.get(name) for name in _HELD)


def _rows(conn: Warehouse, sql: str, params: list) -> list[dict[str, Any]]:
    result = conn.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _outbox_messages(outbox: Path, email: str, contact_ids: set[str]) -> list[dict[str, Any]]:
    messages = []
    if not outbox.is_dir():
        return messages
    for path in sorted(outbox.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                row = json.loads(line)
                if contract.normalize_email(row.get("email")) == email or str(row.get("contact_id")) in contact_ids:
                    messages.append({**row, "outbox_file": str(path.relative_to(outbox))})
    return messages


def purposes_and_recipients(policy: Policy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the data is used for and who may receive it (Art. 15(1)(a)-(c)), from governance.yml."""
    purposes = [
        {
            "purpose": pid,
            "description": p.description,
            "lawful_basis": p.lawful_basis,
            "requires_consent": ";".join(p.requires_consent),
            "fields_used": ";".join(p.fields),
            "vendors": ";".join(p.vendors),
            "dpia_reference": p.dpia.reference or "",
        }
        for pid, p in sorted(policy.purposes.items())
    ]
    recipients = [
        {
            "recipient": name,
            "role": v.role,
            "region": v.region,
            "transfer_mechanism": v.transfer_mechanism or "",
            "receives": "cohort attributes only (no identifiers)",
        }
        for name, v in sorted(policy.vendors.items())
    ]
    recipients.append(
        {
            "recipient": "email service provider",
            "role": "processor",
            "region": "",
            "transfer_mechanism": "",
            "receives": "the outbox: email address, first name and the message",
        }
    )
    return purposes, recipients


def collect(
    conn: Warehouse,
    email: str,
    *,
    policy: Policy,
    key: bytes,
    outbox: Path,
    manifest_path: Path | None,
) -> dict[str, Any]:
    """Everything held about the person with this normalized email, table by table."""
    email = contract.normalize_email(email)
    data: dict[str, Any] = {}
    has = lambda schema, table: warehouse.table_exists(conn, schema, table)  # noqa: E731
    data["contacts"] = (
        _rows(conn, "select * from raw.crm_contacts where email_normalized = ? order by contact_id", [email])
        if has("raw", "crm_contacts")
        else []
    )
    contact_ids = {str(r["contact_id"]) for r in data["contacts"]}
    ids = sorted(contact_ids)
    data["consent_history"] = (
        _rows(
            conn,
            "select contact_id, purpose, action, source, notice_version, occurred_at, event_id, load_id "
            "from raw.crm_consent_events where contact_id = any(cast(? as varchar[])) order by occurred_at, event_id",
            [ids],
        )
        if has("raw", "crm_consent_events")
        else []
    )
    data["activity"] = (
        _rows(
            conn,
            "select * from raw.crm_activity where contact_id = any(cast(? as varchar[]))"
            " order by occurred_at, event_id",
            [ids],
        )
        if has("raw", "crm_activity")
        else []
    )
    data["messages"] = _outbox_messages(outbox, email, contact_ids)
    person = pseudonym(key, email)
    cohort_ids = sorted({m["cohort_id"] for m in data["messages"] if m.get("cohort_id")})
    if has("marts", "campaign_audience"):
        cohort_ids = sorted(
            set(cohort_ids)
            | {
                r[0]
                for r in conn.execute(
                    "select cohort_id from marts.campaign_audience where recipient_pseudonym = ?", [person]
                ).fetchall()
            }
        )
    data["cohorts"] = (
        _rows(
            conn,
            "select * from marts.generation_cohorts where cohort_id = any(cast(? as varchar[])) "
            "order by campaign_id, cohort_id",
            [cohort_ids],
        )
        if has("marts", "generation_cohorts")
        else []
    )
    requests = (
        _rows(
            conn,
            "select request_id, request_type, details, received_at, channel from raw.crm_dsr_requests "
            "where email_normalized in (?, ?) order by received_at",
            [email, "erased:" + subject_ref(key, email)],
        )
        if has("raw", "crm_dsr_requests")
        else []
    )
    ledger = (
        {
            r["request_id"]: r
            for r in _rows(
                conn,
                "select request_id, status, due_date, extended_due_date, extension_reason, closed_at "
                "from ops.dsr_requests where subject_ref = ?",
                [subject_ref(key, email)],
            )
        }
        if has("ops", "dsr_requests")
        else {}
    )
    data["requests"] = [{**r, **ledger.get(r["request_id"], {})} for r in requests]
    data["quarantined_records"] = _quarantined(conn, email, contact_ids) if has("raw", "quarantine") else []
    derived: dict[str, list[dict[str, Any]]] = {}
    relations, _, _ = personal_relations(conn, manifest_path)
    for relation in relations:
        if (relation.schema, relation.name) in _RAW_TABLES:
            continue
        value_sql = {
            "email": f'lower(trim("{relation.subject_column}"::varchar)) = ?',
            "contact_id": f'trim("{relation.subject_column}"::varchar) = any(cast(? as varchar[]))',
            "pseudonym": f'"{relation.subject_column}" = ?',
        }[relation.kind]
        value = {"email": email, "contact_id": ids, "pseudonym": person}[relation.kind]
        rows = _rows(conn, f"select * from {relation.sql} where {value_sql}", [value])
        if rows:
            derived[relation.qualified] = rows
    data["derived"] = derived
    return data


def _quarantined(conn: Warehouse, email: str, contact_ids: set[str]) -> list[dict[str, Any]]:
    found = []
    for load_id, file_name, line, reason, raw_record in conn.execute(
        "select load_id, file_name, line_number, reason, raw_record from raw.quarantine "
        "order by load_id, file_name, line_number"
    ).fetchall():
        try:
            record = json.loads(raw_record or "{}")
        except ValueError:
            continue
        values = record.values() if isinstance(record, dict) else []
        own_email = contract.normalize_email(record.get("email")) == email if isinstance(record, dict) else False
        own_contact = isinstance(record, dict) and str(record.get("contact_id") or "").strip() in contact_ids
        own_cells = any(contract.normalize_email(str(v)) == email for v in values)
        if own_email or own_cells or (own_contact and file_name != contract.DSR_REQUESTS.name):
            found.append(
                {
                    "file_name": file_name,
                    "line_number": line,
                    "reason": reason,
                    "record": raw_record,
                    "load_id": load_id,
                }
            )
    return found


#: A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV Injection"): `=`, `+`,
#: `-`, `@`, tab, carriage return, and their full-width forms.
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")

CSV_NOTE = (
    "The CSV files are for spreadsheets: a text cell that starts with = + - @, a tab or a carriage return "
    "(a formula to a spreadsheet) is written with a leading single quote (') so that it is shown, never run. "
    "subject.json holds every value exactly as we store it."
)
ENCRYPTED_SUFFIX = ".fernet"
ENCRYPTED_NOTE = (
    "\nThe files are encrypted at rest (Fernet, GMP_EXPORT_ENCRYPTION_KEY): decrypt them with "
    "governed_marketing.privacy.access.decrypt_export before sending them to the person."
)


def neutralise_cell(value: Any) -> Any:
    """Prefix a formula-leading text cell with `'` so a spreadsheet shows it instead of running it.

    Numbers, dates and booleans pass unchanged: their text cannot be a formula.
    """
    if isinstance(value, str) and value.startswith(FORMULA_LEADS):
        return "'" + value
    return value


def csv_for_people(rows: list[dict[str, Any]]) -> str:
    """A CSV meant to be opened in a spreadsheet: columns in first-seen order, formula cells neutralised.

    Lines end in CRLF (RFC 4180): with a bare LF terminator the csv module leaves a lone CR in a cell
    unquoted, and a spreadsheet splits the row there.
    """
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[neutralise_cell(c) for c in columns] or ["(no rows)"], lineterminator="\r\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({neutralise_cell(k): "" if v is None else neutralise_cell(v) for k, v in row.items()})
    return buffer.getvalue()


def write_csv_for_people(path: Path, rows: list[dict[str, Any]], fernet: Fernet | None = None) -> Path:
    """Write `csv_for_people(rows)` to `path` (encrypted to `<path>.fernet` under `fernet`)."""
    return _put(path, csv_for_people(rows).encode("utf-8"), fernet)


def _put(path: Path, data: bytes, fernet: Fernet | None) -> Path:
    """Write an export file; under an export key it is encrypted in memory first, so no clear copy touches disk."""
    if fernet is not None:
        path = path.with_name(path.name + ENCRYPTED_SUFFIX)
        data = fernet.encrypt(data)
    path.write_bytes(data)
    return path


def decrypt_export(directory: Path, key: bytes, out: Path) -> list[Path]:
    """Decrypt an encrypted export (`*.fernet`) into `out`, for the person to receive; returns the files.

    Raises:
        cryptography.fernet.InvalidToken: the key is not the one the export was written with.
    """
    from cryptography.fernet import Fernet

    fernet = Fernet(key)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    written = []
    for path in sorted(directory.glob(f"*{ENCRYPTED_SUFFIX}")):
        target = out / path.name.removesuffix(ENCRYPTED_SUFFIX)
        target.write_bytes(fernet.decrypt(path.read_bytes()))
        written.append(target)
    return written


def export_subject(
    conn: Warehouse,
    request_id: str,
    request_type: str,
    email: str,
    *,
    policy: Policy,
    key: bytes,
    home: Path,
    manifest_path: Path | None,
    now: datetime | None = None,
    encryption_key: bytes | None | Literal["settings"] = "settings",
) -> AccessExport:
    """Write exports/<request_id>/ (subject.json plus one CSV per table) and return the counts.

    With an export key (GMP_EXPORT_ENCRYPTION_KEY, read through settings by default) every file but
    README.txt is written Fernet-encrypted as `<name>.fernet`; `decrypt_export` opens them.
    """
    if encryption_key == "settings":
        from governed_marketing.settings import get_settings

        encryption_key = get_settings().resolve_export_key()
    fernet = None
    if encryption_key:
        from cryptography.fernet import Fernet

        fernet = Fernet(encryption_key)
    now = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    data = collect(conn, email, policy=policy, key=key, outbox=home / "outbox", manifest_path=manifest_path)
    purposes, recipients = purposes_and_recipients(policy)
    directory = home / "exports" / request_id
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    head = _answer_head(request_id, request_type, email, policy=policy, now=now)
    if not holds_data(data):
        return _no_data_held(head, data, fernet=fernet, partial=partial)
    document = {
        **head,
        "data_held": True,
        "purposes": purposes,
        "recipients": recipients,
        "retention": dict(policy.retention),
        "source": "your record in our CRM (contacts, consent events, activity) and what our pipelines derived from it",
        "automated_decisions": "none with legal or similarly significant effects (Art. 22): content only, "
        "drafted per cohort",
        "rights": "rectification, erasure, restriction, objection to direct marketing, portability; complaint "
        "to a supervisory authority",
        **{name: rows for name, rows in data.items() if name != "derived"},
        "derived": data["derived"],
    }
    _put(
        partial / "subject.json",
        (json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"),
        fernet,
    )
    tables = {name: rows for name, rows in data.items() if name != "derived"}
    tables |= {f"derived__{name.replace('.', '__')}": rows for name, rows in data["derived"].items()}
    tables |= {"purposes": purposes, "recipients": recipients}
    for name, rows in tables.items():
        write_csv_for_people(partial / f"{name}.csv", [{k: _cell(v) for k, v in r.items()} for r in rows], fernet)
    (partial / "README.txt").write_text(CSV_NOTE + (ENCRYPTED_NOTE if fernet else "") + "\n", encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    counts = {name: len(rows) for name, rows in tables.items() if name not in ("purposes", "recipients")}
    return AccessExport(request_id, directory, counts)


def _answer_head(request_id: str, request_type: str, email: str, *, policy: Policy, now: datetime) -> dict:
    """What every answer to an access or portability request opens with, data held or not."""
    return {
        "request_id": request_id,
        "request_type": request_type,
        "article": "GDPR Art. 20" if request_type == "portability" else "GDPR Art. 15",
        "generated_at": now.isoformat() + "Z",
        "controller": policy.controller.model_dump(),
        "subject": {"email": contract.normalize_email(email)},
    }


def _no_data_held(head: dict, data: dict[str, Any], *, fernet: Fernet | None, partial: Path) -> AccessExport:
    """The answer when nothing is held: a confirmation in subject.json (encrypted like any export), no CSVs."""
    document = {**head, "data_held": False, "answer": NO_DATA_HELD, "requests": data.get("requests", [])}
    _put(
        partial / "subject.json",
        (json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"),
        fernet,
    )
    directory = partial.with_name(head["request_id"])
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return AccessExport(head["request_id"], directory, {}, data_held=False)


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value
