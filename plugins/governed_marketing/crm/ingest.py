"""Load a CRM export into the raw tables: validated, idempotent, nothing valid dropped.

Every row either lands in its raw table or in `raw.quarantine` with the file, the line and the
reason. Loading the same export twice changes nothing: an export is identified by the SHA-256 of
its files, rows by their keys. A file whose failing share exceeds `ingest.max_quarantine_share`
in governance.yml stops the load before anything is written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from governed_marketing.crm import contract
from governed_marketing.crm.contract import ExportFile
from governed_marketing.policy import Policy
from governed_marketing.privacy.suppression import SuppressionDoor
from governed_marketing.validation.evidence import record_gate
from governed_marketing.validation.raw_crm import (
    ORPHAN_REASON,
    known_contact_ids,
    raw_crm_gate,
    raw_gate_frame,
    unknown_contact,
)
from governed_marketing.warehouse import ensure_raw_layer, scalar

log = logging.getLogger(__name__)

ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


class CrmExportError(ValueError):
    """The export cannot be read as the contract says; the message names the file and the problem."""


class QuarantineThresholdExceeded(CrmExportError):
    """Too many rows of a file failed validation: the export looks broken, so nothing is loaded."""


class RawCrmGateFailed(CrmExportError):
    """The raw CRM gate failed on the rows about to be loaded: the load stops, nothing is written."""


@dataclass
class FileResult:
    file_name: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_unchanged: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class IngestResult:
    load_id: str
    already_loaded: bool
    files: list[FileResult]

    @property
    def contacts_read(self) -> int:
        return sum(f.rows_read for f in self.files if f.file_name == contract.CONTACTS.name)

    @property
    def rows_quarantined(self) -> int:
        return sum(f.rows_quarantined for f in self.files)

    def counts(self) -> dict:
        """Counts only: safe for XCom, logs and the summary."""
        return {
            "load_id": self.load_id,
            "already_loaded": self.already_loaded,
            "contacts_read": self.contacts_read,
            "rows_quarantined": self.rows_quarantined,
            "files": [asdict(f) for f in self.files],
        }


# ---- reading ---------------------------------------------------------------------------------


def export_fingerprint(crm_dir: Path) -> str:
    digest = hashlib.sha256()
    for spec in contract.EXPORT_FILES:
        path = crm_dir / spec.name
        if path.is_file():
            digest.update(spec.name.encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _first_undecodable_line(path: Path) -> int:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def read_export_file(path: Path, spec: ExportFile) -> tuple[pd.DataFrame, list[tuple[int, str, dict]]]:
    """Read one CSV; a file that is not UTF-8 is refused whole, naming the line (nothing half-read)."""
    try:
        return _read_export_file(path, spec)
    except UnicodeDecodeError:
        line = _first_undecodable_line(path)
        raise CrmExportError(
            f"{path}: line {line}: not valid UTF-8 (the CRM export contract requires UTF-8); nothing was loaded"
        ) from None


def _read_export_file(path: Path, spec: ExportFile) -> tuple[pd.DataFrame, list[tuple[int, str, dict]]]:
    """Read one CSV with the csv module, keeping each record's line number.

    Returns the well-formed records (all strings, with a `_line` column) and the structurally
    broken ones as (line, reason, record) for the quarantine.
    """
    broken: list[tuple[int, str, dict]] = []
    records: list[list[str]] = []
    lines: list[int] = []
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise CrmExportError(f"{path}: cannot open: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [name.strip().lower() for name in next(reader)]
        except StopIteration:
            raise CrmExportError(f"{path}: empty file, expected a header row") from None
        except csv.Error as exc:
            raise CrmExportError(f"{path}: line 1: cannot read the header: {exc}") from None
        missing = [column for column in spec.columns if column not in header]
        if missing:
            raise CrmExportError(
                f"{path}: header lacks column(s) {', '.join(missing)} required by the CRM export contract"
            )
        positions = [header.index(column) for column in spec.columns]
        previous_end = reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                broken.append((previous_end + 1, f"unreadable CSV record: {exc}", {}))
                previous_end = reader.line_num
                continue
            line = previous_end + 1
            previous_end = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                broken.append(
                    (
                        line,
                        f"wrong number of fields (expected {len(header)}, found {len(row)})",
                        dict(enumerate(row)),
                    )
                )
                continue
            records.append([row[i] for i in positions])
            lines.append(line)
    frame = pd.DataFrame(records, columns=list(spec.columns), dtype="string")
    frame["_line"] = lines
    return frame, broken


def _timestamps(values: pd.Series) -> pd.Series:
    """ISO 8601 to naive UTC; zone-less input is UTC. Unparseable -> NaT."""
    parsed = pd.to_datetime(values.str.strip(), utc=True, format="ISO8601", errors="coerce")
    return parsed.dt.tz_convert(None).astype("datetime64[us]")


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.str.strip() == "")


class _Checks:
    """Collects per-row failure reasons for one file."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.reasons = pd.Series([""] * len(frame), index=frame.index, dtype="string")

    def fail(self, mask: pd.Series, reason: str) -> None:
        mask = mask.fillna(True).astype(bool)
        self.reasons = self.reasons.where(~mask, self.reasons + "; " + reason)

    def failing(self) -> pd.Series:
        return self.reasons != ""

    def reason_text(self) -> pd.Series:
        return self.reasons.str.removeprefix("; ")


def _clean_contacts(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    checks = _Checks(frame)
    out = pd.DataFrame(index=frame.index)
    out["contact_id"] = frame["contact_id"].str.strip()
    checks.fail(_blank(frame["contact_id"]), "contact_id missing")
    out["email"] = frame["email"]
    out["email_normalized"] = frame["email"].str.strip().str.lower()
    checks.fail(~out["email_normalized"].str.fullmatch(contract.EMAIL.pattern), "email invalid")
    for column in ("first_name", "last_name", "phone", "city", "interests", "notes"):
        out[column] = frame[column].str.strip().replace("", pd.NA)
    birth = frame["birth_date"].str.strip()
    known = birth != ""
    parsed_birth = pd.to_datetime(birth.where(birth.str.fullmatch(ISO_DATE)), format="%Y-%m-%d", errors="coerce")
    checks.fail(known & parsed_birth.isna(), "birth_date not YYYY-MM-DD")
    out["birth_date"] = parsed_birth.dt.date
    country = frame["country"].str.strip().str.upper()
    out["country"] = country.where(country.str.fullmatch(r"[A-Z]{2}"))
    language = frame["language"].str.strip().str.lower()
    out["language"] = language.where(language.str.fullmatch(r"[a-z]{2}"))
    stage = frame["lifecycle_stage"].str.strip().str.lower()
    out["lifecycle_stage"] = stage.where(stage.isin(contract.LIFECYCLE_STAGES))
    out["created_at"] = _timestamps(frame["created_at"])
    checks.fail(out["created_at"].isna(), "created_at missing or not ISO 8601")
    out["updated_at"] = _timestamps(frame["updated_at"])
    checks.fail(out["updated_at"].isna(), "updated_at missing or not ISO 8601")
    return out, checks.reason_text()


def _clean_consent_events(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    checks = _Checks(frame)
    out = pd.DataFrame(index=frame.index)
    out["event_id"] = frame["event_id"].str.strip()
    checks.fail(_blank(frame["event_id"]), "event_id missing")
    out["contact_id"] = frame["contact_id"].str.strip()
    checks.fail(_blank(frame["contact_id"]), "contact_id missing")
    out["purpose"] = frame["purpose"].str.strip().str.lower()
    checks.fail(out["purpose"] == "", "purpose missing")
    out["action"] = frame["action"].str.strip().str.lower()
    checks.fail(~out["action"].isin(contract.CONSENT_ACTIONS), "action not grant|withdraw")
    out["source"] = frame["source"].str.strip().replace("", pd.NA)
    out["notice_version"] = frame["notice_version"].str.strip().replace("", pd.NA)
    out["occurred_at"] = _timestamps(frame["occurred_at"])
    checks.fail(out["occurred_at"].isna(), "occurred_at missing or not ISO 8601")
    return out, checks.reason_text()


def _clean_activity(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    checks = _Checks(frame)
    out = pd.DataFrame(index=frame.index)
    out["event_id"] = frame["event_id"].str.strip()
    checks.fail(_blank(frame["event_id"]), "event_id missing")
    out["contact_id"] = frame["contact_id"].str.strip()
    checks.fail(_blank(frame["contact_id"]), "contact_id missing")
    out["event_type"] = frame["event_type"].str.strip().str.lower()
    checks.fail(~out["event_type"].isin(contract.ACTIVITY_TYPES), "event_type not in the contract")
    out["product_category"] = frame["product_category"].str.strip().str.lower().replace("", pd.NA)
    amount_text = frame["amount"].str.strip()
    out["amount"] = pd.to_numeric(amount_text.replace("", pd.NA), errors="coerce").round(2)
    checks.fail((amount_text != "") & out["amount"].isna(), "amount not a number")
    out["occurred_at"] = _timestamps(frame["occurred_at"])
    checks.fail(out["occurred_at"].isna(), "occurred_at missing or not ISO 8601")
    return out, checks.reason_text()


def _valid_json_object(text: str) -> bool:
    if not text.strip():
        return True
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _clean_dsr_requests(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    checks = _Checks(frame)
    out = pd.DataFrame(index=frame.index)
    out["request_id"] = frame["request_id"].str.strip()
    checks.fail(_blank(frame["request_id"]), "request_id missing")
    out["email_normalized"] = frame["email"].str.strip().str.lower()
    checks.fail(~out["email_normalized"].str.fullmatch(contract.EMAIL.pattern), "email invalid")
    out["request_type"] = frame["request_type"].str.strip().str.lower()
    checks.fail(~out["request_type"].isin(contract.DSR_TYPES), "request_type not in the contract")
    # A request is honoured even when its details are unreadable: they are kept, wrapped, for a human.
    details = frame["details"].fillna("").astype(object)
    out["details"] = [
        (text if text.strip() else "{}") if _valid_json_object(text) else json.dumps({"unparsed_details": text})
        for text in details
    ]
    out["received_at"] = _timestamps(frame["received_at"])
    checks.fail(out["received_at"].isna(), "received_at missing or not ISO 8601")
    out["channel"] = "crm_export"
    return out, checks.reason_text()


CLEANERS = {
    contract.CONTACTS.name: _clean_contacts,
    contract.CONSENT_EVENTS.name: _clean_consent_events,
    contract.ACTIVITY.name: _clean_activity,
    contract.DSR_REQUESTS.name: _clean_dsr_requests,
}


# ---- loading ---------------------------------------------------------------------------------


def _quarantine_frame(load_id: str, file_name: str, rows: list[tuple[int, str, dict]], now: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "load_id": load_id,
            "file_name": file_name,
            "line_number": [line for line, _, _ in rows],
            "reason": [reason for _, reason, _ in rows],
            "raw_record": [json.dumps(record, ensure_ascii=False, default=str) for _, _, record in rows],
            "quarantined_at": now,
        },
        columns=["load_id", "file_name", "line_number", "reason", "raw_record", "quarantined_at"],
    )


def _split_duplicates(clean: pd.DataFrame, spec: ExportFile) -> tuple[pd.DataFrame, list[tuple[int, str, dict]]]:
    """Keep one row per key within a file; the others go to quarantine, naming the kept line."""
    if spec is contract.CONTACTS:
        ordered = clean.sort_values(["updated_at", "_line"], ascending=[False, False])
        note = "duplicate contact_id in file (newer version on line {kept} loaded)"
    else:
        ordered = clean.sort_values("_line")
        note = f"duplicate {spec.key} in file (counted once, from line {{kept}})"
    kept = ordered.drop_duplicates(spec.key, keep="first")
    dropped = ordered.loc[~ordered.index.isin(kept.index)]
    kept_line = kept.set_index(spec.key)["_line"]
    rows = [
        (int(row["_line"]), note.format(kept=int(kept_line[row[spec.key]])), _record(row))
        for _, row in dropped.iterrows()
    ]
    return kept.sort_values("_line"), rows


def _record(row: pd.Series) -> dict:
    return {k: (None if pd.isna(v) else str(v)) for k, v in row.items() if k != "_line"}


#: Upserts from the registered frame `incoming` (explicit column lists: the same SQL on DuckDB and Postgres).
_UPSERT = {
    contract.CONTACTS.name: """
        insert into raw.crm_contacts as t ({columns}) select {columns} from incoming
        on conflict (contact_id) do update set
            email = excluded.email, email_normalized = excluded.email_normalized,
            first_name = excluded.first_name, last_name = excluded.last_name, phone = excluded.phone,
            birth_date = excluded.birth_date, country = excluded.country, language = excluded.language,
            city = excluded.city, lifecycle_stage = excluded.lifecycle_stage, interests = excluded.interests,
            notes = excluded.notes, created_at = excluded.created_at, updated_at = excluded.updated_at,
            load_id = excluded.load_id
        where excluded.updated_at > t.updated_at
    """,
    contract.CONSENT_EVENTS.name: (
        "insert into raw.crm_consent_events ({columns}) select {columns} from incoming on conflict do nothing"
    ),
    contract.ACTIVITY.name: (
        "insert into raw.crm_activity ({columns}) select {columns} from incoming on conflict do nothing"
    ),
    contract.DSR_REQUESTS.name: (
        "insert into raw.crm_dsr_requests ({columns}) select {columns} from incoming on conflict do nothing"
    ),
}


def _column_list(frame: pd.DataFrame) -> str:
    return ", ".join(f'"{c}"' for c in frame.columns if c != "_line")


def _count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(scalar(conn, f"select count(*) from raw.{table}") or 0)


def _gate_loaded_rows(conn: duckdb.DuckDBPyConnection, load_id: str, staged: list, known_contacts: set[str]) -> None:
    """The raw CRM gate over each file's rows about to be loaded, recorded under the load's id.

    Raises:
        RawCrmGateFailed: a loaded row breaks the contract after all; nothing is written.
    """
    for spec, valid, _, _ in staged:
        result = raw_crm_gate(spec.name, raw_gate_frame(spec.name, valid, known_contacts))
        record_gate(conn, load_id, result)
        if not result.success:
            raise RawCrmGateFailed(f"{result.one_line()}; nothing was loaded")


def ingest_export(
    crm_dir: Path,
    *,
    conn: duckdb.DuckDBPyConnection,
    policy: Policy,
    landing_root: Path,
    now: datetime | None = None,
) -> IngestResult:
    """Validate and load one export; archive it under landing/<load_id>/.

    Raises:
        CrmExportError: a required file or column is missing, naming it.
        QuarantineThresholdExceeded: a file's failing share is above the policy's limit.
    """
    crm_dir = Path(crm_dir)
    if not crm_dir.is_dir():
        raise CrmExportError(f"{crm_dir}: CRM export directory not found")
    for spec in contract.EXPORT_FILES:
        if spec.required and not (crm_dir / spec.name).is_file():
            raise CrmExportError(f"{crm_dir / spec.name}: required export file is missing")
    ensure_raw_layer(conn)
    fingerprint = export_fingerprint(crm_dir)
    load_id = f"load_{fingerprint[:16]}"
    previous = scalar(conn, "select files_json from ops.crm_loads where export_sha256 = ?", [fingerprint])
    if previous:
        files = [FileResult(**item) for item in json.loads(previous)]
        log.info("export %s already loaded; nothing to do", load_id)
        return IngestResult(load_id=load_id, already_loaded=True, files=files)

    now = now or datetime.now(UTC).replace(tzinfo=None)
    max_share = policy.ingest.max_quarantine_share
    staged: list[tuple[ExportFile, pd.DataFrame, pd.DataFrame, FileResult]] = []
    door = SuppressionDoor.open(conn, load_id=load_id)  # erased and objecting people are not let back in
    for spec in contract.EXPORT_FILES:
        path = crm_dir / spec.name
        if not path.is_file():
            continue
        frame, broken = read_export_file(path, spec)
        frame, broken = door.admit(spec, frame, broken)  # dropped and counted (ops.suppression_door), never stored
        clean, reasons = CLEANERS[spec.name](frame)
        if spec is contract.CONTACTS:  # first in EXPORT_FILES: events are checked against it below
            known_contacts = known_contact_ids(conn, frame["contact_id"])
        elif spec in (contract.CONSENT_EVENTS, contract.ACTIVITY):
            orphan = unknown_contact(clean, known_contacts)
            reasons = reasons.where(~orphan, (reasons + "; " + ORPHAN_REASON).str.removeprefix("; "))
        clean["_line"] = frame["_line"]
        failing = reasons != ""
        quarantined = broken + [
            (int(frame.at[i, "_line"]), str(reasons.at[i]), _record(frame.loc[i])) for i in frame.index[failing]
        ]
        valid, duplicates = _split_duplicates(clean.loc[~failing], spec)
        quarantined += duplicates
        result = FileResult(file_name=spec.name, rows_read=len(frame) + len(broken))
        result.rows_quarantined = len(quarantined)
        result.quarantine_reasons = dict(
            Counter(part.split(" (")[0] for _, reason, _ in quarantined for part in reason.split("; "))
        )
        invalid = len(quarantined) - len(duplicates)
        if result.rows_read and invalid / result.rows_read > max_share:
            top = ", ".join(f"{reason}: {n}" for reason, n in Counter(r for _, r, _ in quarantined).most_common(3))
            raise QuarantineThresholdExceeded(
                f"{path}: {invalid} of {result.rows_read} rows failed validation "
                f"({invalid / result.rows_read:.0%} > ingest.max_quarantine_share {max_share:.0%}); "
                f"nothing was loaded. Most common: {top}"
            )
        staged.append((spec, valid, _quarantine_frame(load_id, spec.name, quarantined, now), result))

    _gate_loaded_rows(conn, load_id, staged, known_contacts)
    conn.execute("begin transaction")
    try:
        for spec, valid, quarantine, result in staged:
            incoming = valid.assign(load_id=load_id)
            before = _count(conn, spec.table)
            conn.register("incoming", incoming.drop(columns="_line", errors="ignore"))
            updated = int(scalar(conn, _UPSERT[spec.name].format(columns=_column_list(incoming))) or 0)
            conn.unregister("incoming")
            after = _count(conn, spec.table)
            result.rows_loaded = max(updated, after - before)
            result.rows_unchanged = len(valid) - result.rows_loaded
            if len(quarantine):
                conn.register("quarantined", quarantine)
                scalar(
                    conn,
                    f"insert into raw.quarantine ({_column_list(quarantine)})"
                    f" select {_column_list(quarantine)} from quarantined on conflict do nothing",
                )
                conn.unregister("quarantined")
        scalar(
            conn,
            "insert into ops.crm_loads values (?, ?, ?, ?, ?)",
            [load_id, fingerprint, crm_dir.name, now, json.dumps([asdict(r) for *_, r in staged])],
        )
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise

    landing = landing_root / load_id
    if not landing.exists():
        partial = landing.with_name(landing.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for spec, *_ in staged:
            shutil.copy2(crm_dir / spec.name, partial / spec.name)
            (partial / spec.name).chmod(0o600)  # personal data: owner-only, whatever the export's mode
        door.scrub(partial)  # the archive keeps no row the door refused
        partial.rename(landing)
    result = IngestResult(load_id=load_id, already_loaded=False, files=[r for *_, r in staged])
    log.info(
        "loaded export %s: %d contacts read, %d rows quarantined",
        load_id,
        result.contacts_read,
        result.rows_quarantined,
    )
    return result
