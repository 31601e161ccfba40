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
from collections import defaultdict
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
    return _outbox_messages_of(outbox, {"_": (email, contact_ids)})["_"]


def _outbox_messages_of(outbox: Path, people: dict[str, tuple[str, set[str]]]) -> dict[str, list[dict[str, Any]]]:
    """Each person's pending messages, in one read of the outbox for all of them ({ref: (email, contact ids)})."""
    messages: dict[str, list[dict[str, Any]]] = {ref: [] for ref in people}
    if not outbox.is_dir() or not people:
        return messages
    order = {ref: i for i, ref in enumerate(people)}
    by_email: dict[str, list[str]] = defaultdict(list)
    by_contact: dict[str, list[str]] = defaultdict(list)
    for ref, (email, contact_ids) in people.items():
        by_email[email].append(ref)
        for contact_id in contact_ids:
            by_contact[contact_id].append(ref)
    for path in sorted(outbox.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                row = json.loads(line)
                owners = {*by_email.get(contract.normalize_email(row.get("email")), ())}
                owners.update(by_contact.get(str(row.get("contact_id")), ()))
                for ref in sorted(owners, key=order.__getitem__):
                    messages[ref].append({**row, "outbox_file": str(path.relative_to(outbox))})
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
    return collect_many(conn, {"_": email}, policy=policy, key=key, outbox=outbox, manifest_path=manifest_path)["_"]


def _grouped(conn: Warehouse, sql: str, params: list | None = None) -> dict[str, list[dict[str, Any]]]:
    """Rows of a query whose first column is the request they answer, grouped by it (that column dropped)."""
    result = conn.execute(sql, params or [])
    names = [d[0] for d in result.description][1:]
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ref, *row in result.fetchall():
        grouped[ref].append(dict(zip(names, row, strict=True)))
    return grouped


def collect_many(
    conn: Warehouse,
    subjects: dict[str, str],
    *,
    policy: Policy,
    key: bytes,
    outbox: Path,
    manifest_path: Path | None,
) -> dict[str, dict[str, Any]]:
    """What `collect` finds, for many people at once: one query per table joined to all of them.

    Args:
        subjects: {request id (or any ref): email}. The answer is keyed the same way.
    """
    import pandas as pd

    del policy  # what the person is told comes from the policy in export_subject
    refs = list(subjects)
    emails = {ref: contract.normalize_email(email) for ref, email in subjects.items()}
    data: dict[str, dict[str, Any]] = {ref: {} for ref in refs}
    has = lambda schema, table: warehouse.table_exists(conn, schema, table)  # noqa: E731
    refs_of = {email: subject_ref(key, email) for email in set(emails.values())}
    people = pd.DataFrame(
        [
            (ref, emails[ref], pseudonym(key, emails[ref]), refs_of[emails[ref]], f"erased:{refs_of[emails[ref]]}")
            for ref in refs
        ],
        columns=["ref", "email", "pseudonym", "subject_ref", "erased_email"],
        dtype="string",
    )
    conn.temp_table("access_people", people)
    contacts = (
        _grouped(
            conn,
            "select p.ref, c.* from raw.crm_contacts c join access_people p on c.email_normalized = p.email "
            "order by p.ref, c.contact_id",
        )
        if has("raw", "crm_contacts")
        else {}
    )
    contact_ids = {ref: {str(r["contact_id"]) for r in contacts.get(ref, [])} for ref in refs}
    conn.temp_table(
        "access_contacts",
        pd.DataFrame(
            [(ref, c) for ref in refs for c in sorted(contact_ids[ref])], columns=["ref", "contact_id"], dtype="string"
        ),
    )
    consent = (
        _grouped(
            conn,
            "select k.ref, e.contact_id, e.purpose, e.action, e.source, e.notice_version, e.occurred_at, e.event_id, "
            "e.load_id from raw.crm_consent_events e join access_contacts k on e.contact_id = k.contact_id "
            "order by k.ref, e.occurred_at, e.event_id",
        )
        if has("raw", "crm_consent_events")
        else {}
    )
    activity = (
        _grouped(
            conn,
            "select k.ref, a.* from raw.crm_activity a join access_contacts k on a.contact_id = k.contact_id "
            "order by k.ref, a.occurred_at, a.event_id",
        )
        if has("raw", "crm_activity")
        else {}
    )
    messages = _outbox_messages_of(outbox, {ref: (emails[ref], contact_ids[ref]) for ref in refs})
    audience: dict[str, set[str]] = defaultdict(set)
    if has("marts", "campaign_audience"):
        for ref, cohort_id in conn.execute(
            "select p.ref, a.cohort_id from marts.campaign_audience a join access_people p "
            "on a.recipient_pseudonym = p.pseudonym"
        ).fetchall():
            audience[ref].add(cohort_id)
    cohort_ids = {
        ref: sorted({m["cohort_id"] for m in messages[ref] if m.get("cohort_id")} | audience.get(ref, set()))
        for ref in refs
    }
    wanted = sorted({c for ids in cohort_ids.values() for c in ids})
    if has("marts", "generation_cohorts") and wanted:
        result = conn.execute(
            "select * from marts.generation_cohorts where cohort_id = any(cast(? as varchar[])) "
            "order by campaign_id, cohort_id",
            [wanted],
        )
        names = [d[0] for d in result.description]
        ordered = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    else:
        ordered = []
    requests = (
        _grouped(
            conn,
            "select p.ref, r.request_id, r.request_type, r.details, r.received_at, r.channel "
            "from raw.crm_dsr_requests r join access_people p on r.email_normalized in (p.email, p.erased_email) "
            "order by p.ref, r.received_at",
        )
        if has("raw", "crm_dsr_requests")
        else {}
    )
    ledger = (
        _grouped(
            conn,
            "select p.ref, l.request_id, l.status, l.due_date, l.extended_due_date, l.extension_reason, l.closed_at "
            "from ops.dsr_requests l join access_people p on l.subject_ref = p.subject_ref",
        )
        if has("ops", "dsr_requests")
        else {}
    )
    quarantined = _quarantined_of(conn, emails, contact_ids) if has("raw", "quarantine") else {}
    derived: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(dict)
    relations, _, _ = personal_relations(conn, manifest_path)
    for relation in relations:
        if (relation.schema, relation.name) in _RAW_TABLES:
            continue
        column = f'"{relation.subject_column}"'
        join = {
            "email": f"join access_people p on lower(trim(t.{column}::varchar)) = p.email",
            "contact_id": f"join access_contacts p on trim(t.{column}::varchar) = p.contact_id",
            "pseudonym": f"join access_people p on t.{column} = p.pseudonym",
        }[relation.kind]
        for ref, rows in _grouped(conn, f"select p.ref, t.* from {relation.sql} t {join}").items():
            derived[ref][relation.qualified] = rows
    for name in ("access_people", "access_contacts"):
        conn.execute(f"drop table if exists {name}").fetchall()
    for ref in refs:
        own = set(cohort_ids[ref])
        requests_of = requests.get(ref, [])
        ledger_of = {r["request_id"]: r for r in ledger.get(ref, [])}
        data[ref] = {
            "contacts": contacts.get(ref, []),
            "consent_history": consent.get(ref, []),
            "activity": activity.get(ref, []),
            "messages": messages[ref],
            "cohorts": [row for row in ordered if row.get("cohort_id") in own],
            "requests": [{**r, **ledger_of.get(r["request_id"], {})} for r in requests_of],
            "quarantined_records": quarantined.get(ref, []),
            "derived": dict(derived.get(ref, {})),
        }
    return data


def _quarantined(conn: Warehouse, email: str, contact_ids: set[str]) -> list[dict[str, Any]]:
    return _quarantined_of(conn, {"_": email}, {"_": contact_ids}).get("_", [])


def _quarantined_of(
    conn: Warehouse, emails: dict[str, str], contact_ids: dict[str, set[str]]
) -> dict[str, list[dict[str, Any]]]:
    """Each person's quarantined rows, in one read of the quarantine for all of them.

    A row is the person's when its email, or any of its cells, is their normalized email, or (outside
    the requests file) its contact_id is one of theirs. Each row is parsed once, whatever the number
    of people asked about (it was read and parsed once per request).
    """
    by_email: dict[str, list[str]] = defaultdict(list)
    by_contact: dict[str, list[str]] = defaultdict(list)
    for ref, email in emails.items():
        by_email[email].append(ref)
        for contact_id in contact_ids.get(ref, ()):
            by_contact[contact_id].append(ref)
    order = {ref: i for i, ref in enumerate(emails)}
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for load_id, file_name, line, reason, raw_record in conn.execute(
        "select load_id, file_name, line_number, reason, raw_record from raw.quarantine "
        "order by load_id, file_name, line_number"
    ).fetchall():
        try:
            record = json.loads(raw_record or "{}")
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        owners: set[str] = set()
        for value in [record.get("email"), *(str(v) for v in record.values())]:
            owners.update(by_email.get(contract.normalize_email(value), ()))
        if file_name != contract.DSR_REQUESTS.name:
            owners.update(by_contact.get(str(record.get("contact_id") or "").strip(), ()))
        for ref in sorted(owners, key=order.__getitem__):
            found[ref].append(
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
    data: dict[str, Any] | None = None,
) -> AccessExport:
    """Write exports/<request_id>/ (subject.json plus one CSV per table) and return the counts.

    With an export key (GMP_EXPORT_ENCRYPTION_KEY, read through settings by default) every file but
    README.txt is written Fernet-encrypted as `<name>.fernet`; `decrypt_export` opens them.
    `data`: what `collect_many` found for this request (`export_subjects` passes it); collected here when None.
    """
    if encryption_key == "settings":
        from governed_marketing.settings import get_settings

        encryption_key = get_settings().resolve_export_key()
    fernet = None
    if encryption_key:
        from cryptography.fernet import Fernet

        fernet = Fernet(encryption_key)
    now = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    if data is None:  # a batch passes what collect_many found for this request
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


def export_subjects(
    conn: Warehouse,
    requests: list[tuple[str, str, str]],
    *,
    policy: Policy,
    key: bytes,
    home: Path,
    manifest_path: Path | None,
    now: datetime | None = None,
) -> dict[str, AccessExport]:
    """`export_subject` for many requests ((request_id, type, email) each), the tables read once for all."""
    if not requests:
        return {}
    from governed_marketing.settings import get_settings

    encryption_key = get_settings().resolve_export_key()
    found = collect_many(
        conn,
        {request_id: email for request_id, _, email in requests},
        policy=policy,
        key=key,
        outbox=home / "outbox",
        manifest_path=manifest_path,
    )
    return {
        request_id: export_subject(
            conn,
            request_id,
            kind,
            email,
            policy=policy,
            key=key,
            home=home,
            manifest_path=manifest_path,
            now=now,
            encryption_key=encryption_key,
            data=found[request_id],
        )
        for request_id, kind, email in requests
    }


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
