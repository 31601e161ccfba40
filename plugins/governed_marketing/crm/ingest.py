"""Load a CRM export into the raw tables: validated, idempotent, nothing valid dropped.

Every row either lands in its raw table or in `raw.quarantine` with the file, the line and the
reason. Loading the same export twice changes nothing: an export is identified by the SHA-256 of
its files, rows by their keys. A file whose failing share exceeds `ingest.max_quarantine_share`
in governance.yml stops the load before anything is written.

Hostile input (tests/fixtures/hostile/): the reader is strict and resynchronises, so a quote left
open or an oversized field costs its own line only; identifiers holding a control character are
quarantined, free text loses them; an `updated_at` later than the load time plus
`ingest.max_future_skew` is quarantined (it would pin the row); names that break
`contract.normalize_name` are cleared (the contact stays, the reason is counted in
`values_cleared`); columns outside the contract are named in `columns_dropped` and never reach the
warehouse or the landing copy. A missing or empty export raises `ExportUnreadable` before any work.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from governed_marketing.crm import contract
from governed_marketing.crm.contract import ExportFile
from governed_marketing.errors import CrmExportError, ExportUnreadable
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
from governed_marketing.warehouse import scalar

if TYPE_CHECKING:
    import pyarrow as pa

    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


class QuarantineThresholdExceeded(CrmExportError):
    """Too many rows of a file failed validation: the export looks broken, so nothing is loaded."""


class RawCrmGateFailed(CrmExportError):
    """The raw CRM gate failed on the rows about to be loaded: the load stops, nothing is written."""


__all__ = ["CrmExportError", "ExportUnreadable", "IngestResult", "QuarantineThresholdExceeded", "ingest_export"]


@dataclass
class FileResult:
    file_name: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_unchanged: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    #: Columns of the export outside the contract: names only, never read into the warehouse or landing.
    columns_dropped: list[str] = field(default_factory=list)
    #: Values cleared on a loaded row (the row stays), by reason, e.g. a first_name that is not a name.
    values_cleared: dict[str, int] = field(default_factory=dict)


@dataclass
class ReadNotes:
    """What the reader saw besides the rows: decides whether the landing copy is a byte copy."""

    columns_dropped: list[str] = field(default_factory=list)
    unreadable: int = 0  # records the csv module could not read (a quote left open, an oversized field)
    #: contact_id cells of broken records: the person was exported, only the row is broken.
    broken_contact_ids: list[str] = field(default_factory=list)

    @property
    def byte_copy_ok(self) -> bool:
        return not self.columns_dropped and not self.unreadable


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
            "columns_dropped": {f.file_name: f.columns_dropped for f in self.files if f.columns_dropped},
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


def read_export_file(path: Path, spec: ExportFile) -> tuple[pd.DataFrame, list[tuple[int, str, dict]], ReadNotes]:
    """Read one CSV; a file that is not UTF-8 is refused whole, naming the line (nothing half-read)."""
    try:
        return _read_export_file(path, spec)
    except UnicodeDecodeError:
        line = _first_undecodable_line(path)
        raise CrmExportError(
            f"{path}: line {line}: not valid UTF-8 (the CRM export contract requires UTF-8); nothing was loaded"
        ) from None


def _first_line_reason(line: str, error: str | None) -> tuple[str, dict]:
    """Why a record that ran over several lines is broken, judged on its first line alone."""
    try:
        cells = next(csv.reader([line], strict=True))
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            cells = next(csv.reader([line]))
            return "unreadable CSV record: a quoted field is not closed on this line", dict(enumerate(cells))
        return f"unreadable CSV record: {exc}", {}
    return f"unreadable CSV record: {error or 'a quoted field ran into the following lines'}", dict(enumerate(cells))


def _key_only(line: str, header: list[str], spec: ExportFile) -> dict:
    """The record's key cell (and contact_id) alone, when readable and short: which row broke, no other value."""
    wanted = {header.index(c) for c in (spec.key, "contact_id") if c in header}
    with contract.csv_field_limit(None):
        try:
            cells = next(csv.reader([line]))
        except (csv.Error, StopIteration):
            return {}
    return {at: cells[at] for at in sorted(wanted) if at < len(cells) and len(cells[at]) <= 256}


#: A line the columnar split may read as it is: no quote, no NUL, no field that could pass the limit.
_NOT_PLAIN = '["\\x00]'


def _plain_lines(text: pa.Array, first_data: int, width: int) -> np.ndarray:
    """Which physical lines are a record the csv module would read as `line.split(",")`.

    Plain: no quote character or NUL, no longer than the field limit, exactly `width` fields and at
    least one ASCII letter or digit (so never a blank record). Every other line is read by the csv
    module itself, with its exact rules (multi-line records, strictness, blank lines).
    `text`: the lines' contents (`_contents`), as one Arrow array.
    """
    import pyarrow.compute as pc

    plain = pc.and_(
        pc.invert(pc.match_substring_regex(text, _NOT_PLAIN)),
        pc.less_equal(pc.utf8_length(text), contract.MAX_FIELD_CHARS),
    )
    plain = pc.and_(plain, pc.equal(pc.count_substring(text, ","), width - 1))
    plain = pc.and_(plain, pc.match_substring_regex(text, "[A-Za-z0-9]"))
    mask = plain.to_numpy(zero_copy_only=False).astype(bool)
    mask[:first_data] = False
    return mask


def _contents(text: pa.Array) -> pa.Array:
    """Lines without their terminator (\\r\\n, \\n or \\r), as the csv module ends a record.

    A physical line holds one terminator at most, at its end (`readlines` with newline="" cuts after
    each), so trimming trailing CR and LF removes exactly it: a plain trim, no regex per line.
    """
    import pyarrow.compute as pc

    return pc.utf8_rtrim(text, characters="\r\n")


def _frame(
    text: pa.Array,
    plain: np.ndarray,
    first_data: int,
    positions: list[int],
    records: list[list[str]],
    numbers: list[int],
    spec: ExportFile,
) -> pd.DataFrame:
    """The well-formed records in line order: plain lines split in columns, the csv module's records merged in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    at = np.flatnonzero(plain)
    cells = pc.split_pattern(text.filter(pa.array(plain)), ",")
    columns = {
        column: pc.list_element(cells, position) for column, position in zip(spec.columns, positions, strict=True)
    }
    del cells  # each column is its own array now
    split = pa.table({**columns, "_line": pa.array(at + 1, type=pa.int64())})
    by_column = list(zip(*records, strict=True)) if records else [()] * len(spec.columns)
    read = pa.table(
        {
            **{column: pa.array(by_column[i], type=pa.large_string()) for i, column in enumerate(spec.columns)},
            "_line": pa.array(numbers, type=pa.int64()),
        }
    )
    if read.num_rows:  # records the csv module read sit between the plain lines: merge by line
        merged = pa.concat_tables([split.cast(read.schema), read]).sort_by("_line")
    else:  # the plain lines alone are already in line order: no sort, no copy
        merged = split.cast(read.schema)
    # large_string as it is: pandas' Arrow strings are large_string (a cast to string is copied back)
    frame = pd.DataFrame({column: pd.array(merged.column(column), dtype="string") for column in spec.columns})
    frame["_line"] = merged.column("_line").to_numpy() if merged.num_rows else []  # as pandas types an empty list
    return frame


class _PhysicalLines:
    """A file's physical lines as the csv module meets them (`newline=""`), held in Arrow.

    `text` holds each line's contents without its terminator, one Arrow string per line, for the
    columnar split; `line(i)` gives one line with its terminator as a Python string, for the csv
    module, which reads only the lines that are not plain. So the bulk of a file never becomes a
    Python object. A file with a lone CR (a terminator `split("\\n")` cannot see) is cut by
    `readlines` instead, as the csv module would.
    """

    def __init__(self, data: bytes) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # encoding="utf-8-sig"
        self._list: list[str] | None = None
        if data.count(b"\r") != data.count(b"\r\n"):  # a lone CR ends a line too
            self._list = io.StringIO(data[start:].decode("utf-8"), newline="").readlines()
            self.total = len(self._list)
            self.text = _contents(pa.array(self._list, type=pa.large_string()))
            return
        whole = pa.py_buffer(data).slice(start)  # no copy of the file
        offsets = pa.py_buffer(np.array([0, whole.size], dtype=np.int64).tobytes())
        content = pa.LargeStringArray.from_buffers(1, offsets, whole)
        try:
            content.validate(full=True)
        except pa.ArrowInvalid:  # not UTF-8: as a decoder says it (`read_export_file` names the line)
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "invalid UTF-8") from None
        self._ends_open = not data.endswith(b"\n")  # the last line has no terminator
        pieces = pc.split_pattern(content, "\n").flatten() if whole.size else pa.array([], pa.large_string())
        self._pieces = pieces if self._ends_open else pieces.slice(0, len(pieces) - 1)
        self.total = len(self._pieces)
        self.text = _contents(self._pieces) if b"\r" in data else self._pieces

    def release(self) -> None:
        """Drop the lines with their terminators (the largest copy but `text`) once the csv module is done."""
        self._list = self._pieces = None

    def line(self, at: int) -> str:
        if self._list is not None:
            return self._list[at]
        text = self._pieces[at].as_py()
        return text if self._ends_open and at == self.total - 1 else text + "\n"

    def lines(self, start: int, stop: int) -> Iterator[str]:
        return map(self.line, range(start, stop))

    def lines_at(self, at: np.ndarray) -> list[str]:
        """The lines at these positions (ascending), terminators kept, converted in one go."""
        if self._list is not None:
            return [self._list[i] for i in at.tolist()]
        import pyarrow as pa

        texts = [text + "\n" for text in self._pieces.take(pa.array(at, pa.int64())).to_pylist()]
        if texts and self._ends_open and at[-1] == self.total - 1:
            texts[-1] = texts[-1][:-1]
        return texts


def _whole_records(lines: _PhysicalLines, at: np.ndarray, width: int) -> dict[int, tuple[list[str] | str, int]]:
    """The csv module's reading of the records that start on the lines `at` and end on them.

    One reader goes over these lines only (the lines that are not plain). A record it reads
    starting between records, from lines that follow each other in the file, is what a reader
    started on its first line reads: the csv module resets its state per record and sees the same
    lines. Kept: records on one line (cells, or the error's text), and records over several lines
    that hold `width` cells. Left out, for `_read_export_file` to read in their own stretch:
    records that ran on past a gap in `at` (into a plain line), broken ones over several lines
    (read again line by line), and an error on the last line (the file may go on past it).
    Keys: the record's first line; values: (cells or error, lines spanned).
    """
    found: dict[int, tuple[list[str] | str, int]] = {}
    reader = csv.reader(lines.lines_at(at), strict=True)
    last = len(at)
    numbers = at.tolist()  # Python ints: indexed once per record
    while True:
        first = reader.line_num
        try:
            row: list[str] | str = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row = str(exc)
        span = reader.line_num - first
        start = numbers[first]
        if span == 1:
            if not (isinstance(row, str) and reader.line_num == last):
                found[start] = (row, 1)
        elif isinstance(row, list) and len(row) == width and numbers[first + span - 1] == start + span - 1:
            found[start] = (row, span)
    return found


def _read_export_file(path: Path, spec: ExportFile) -> tuple[pd.DataFrame, list[tuple[int, str, dict]], ReadNotes]:
    """Read one CSV by the csv module's rules (strict), keeping each record's line number.

    Plain lines (`_plain_lines`: the bulk of an export) are split in columns by pyarrow, with no
    Python work per row. Every other line is read by the csv module itself: by one reader over all
    of them where that reads what a reader started on the record's first line would
    (`_whole_records`), else in a stretch that starts at that line and ends when the reader is
    between records and the next line is plain. Both give the same cells the csv module alone would.

    Returns the well-formed records (all strings, with a `_line` column), the structurally broken
    ones as (line, reason, record) for the quarantine, and what the landing copy must leave out.
    A broken record costs its own lines only: when a record that ran over several lines (a quote
    left open) does not parse into the header's number of fields, only its first line is
    quarantined and reading resumes on the next line, so the rows after it survive.
    """
    broken: list[tuple[int, str, dict]] = []
    records: list[list[str]] = []
    numbers: list[int] = []
    notes = ReadNotes()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CrmExportError(f"{path}: cannot open: {exc.strerror}") from None
    with contract.csv_field_limit(contract.MAX_FIELD_CHARS):
        lines = _PhysicalLines(data)
        del data
        reader = csv.reader(lines.lines(0, lines.total), strict=True)
        try:
            header = [name.strip().lower() for name in next(reader)]
        except StopIteration:
            raise contract.ExportUnreadable(f"{path}: empty file, expected a header row") from None
        except csv.Error as exc:
            raise CrmExportError(f"{path}: line 1: cannot read the header: {exc}") from None
        missing = [column for column in spec.columns if column not in header]
        if missing:
            raise CrmExportError(
                f"{path}: header lacks column(s) {', '.join(missing)} required by the CRM export contract"
            )
        notes.columns_dropped = [column for column in header if column not in spec.columns]
        positions = [header.index(column) for column in spec.columns]
        in_order = positions == list(range(len(header)))
        width = len(header)
        first_data = reader.line_num
        text = lines.text
        plain = _plain_lines(text, first_data, width)
        done = first_data
        total = lines.total
        specials = np.flatnonzero(~plain[first_data:]) + first_data
        whole = _whole_records(lines, specials, width)

        def take(row: list[str] | None, error: str | None, first: int, span: int) -> bool:
            """File one record read by the csv module; False when it was a quote left open (read on after it)."""
            line = first + 1
            if row is not None and len(row) == width:
                if "".join(row).strip():  # not every cell blank
                    records.append(row if in_order else [row[i] for i in positions])
                    numbers.append(line)
                return True
            if row is not None and not row:  # a blank line
                return True
            notes.unreadable += row is None or span > 1
            if span > 1:  # a quote left open swallowed the lines after it: this line only, then read on
                broken.append((line, *_first_line_reason(lines.line(first), error)))
                return False
            if row is None:
                broken.append((line, f"unreadable CSV record: {error}", _key_only(lines.line(first), header, spec)))
            elif any(cell.strip() for cell in row):
                broken.append(
                    (line, f"wrong number of fields (expected {width}, found {len(row)})", dict(enumerate(row)))
                )
            return True

        for special in specials:
            if special < done:
                continue  # consumed by the stretch before (a record running over several lines)
            done = int(special)
            if done in whole:  # its record was read already
                read, span = whole[done]
                if isinstance(read, str):  # the csv module's error on this line
                    take(None, read, done, span)
                else:
                    take(read, None, done, span)
                done += span
                continue
            while done < total:  # one csv reader per stretch; a new one after a broken multi-line record
                reader = csv.reader(lines.lines(done, total), strict=True)
                base = done
                restart = False
                while done < total and not (done > special and plain[done]):
                    error = None
                    try:
                        row = next(reader)
                    except StopIteration:
                        done = total
                        break
                    except csv.Error as exc:
                        row, error = None, str(exc)
                    first = done  # index of the record's first line
                    done = base + reader.line_num
                    plain[first:done] = False  # read here, not by the columnar split
                    if not take(row, error, first, done - first):
                        done = first + 1
                        plain[done : base + reader.line_num] = _plain_lines(
                            text.slice(done, base + reader.line_num - done), 0, width
                        )
                        restart = True
                        break
                if not restart or done >= total or (done > special and plain[done]):
                    break
        lines.release()  # the split needs only the contents
        del reader, whole
        frame = _frame(text, plain, first_data, positions, records, numbers, spec)
        del text
    if spec is contract.CONTACTS:
        at = header.index("contact_id")
        notes.broken_contact_ids = [str(record[at]) for _, _, record in broken if at in record]
    return frame, broken, notes


def _timestamps(values: pd.Series) -> pd.Series:
    """ISO 8601 to naive UTC; zone-less input is UTC. Unparseable -> NaT."""
    parsed = pd.to_datetime(values.str.strip(), utc=True, format="ISO8601", errors="coerce")
    return parsed.dt.tz_convert(None).astype("datetime64[us]")


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.str.strip() == "")


def _has_control(values: pd.Series) -> pd.Series:
    return values.fillna("").str.contains(contract.CONTROL.pattern, regex=True)


def _free_text(values: pd.Series, column: str, notes: dict[str, pd.Series]) -> pd.Series:
    """Free text loses its control characters (tab and line breaks stay); the rows touched are noted."""
    cleaned = values.str.replace(contract.CONTROL_IN_FREE_TEXT.pattern, "", regex=True)
    notes[f"{column}: control characters removed"] = cleaned.fillna("") != values.fillna("")
    return cleaned


def _names(values: pd.Series, column: str, notes: dict[str, pd.Series]) -> pd.Series:
    """first_name / last_name by `contract.normalize_name`; a value that is not a name is cleared (null).

    The row stays (a bad first name costs only the greeting); the reason is noted, never the value.
    """
    judged = {value: contract.normalize_name(value) for value in values.dropna().unique()}
    verdicts = [judged[v] if isinstance(v, str) else (None, None) for v in values]
    reasons = pd.Series([reason for _, reason in verdicts], index=values.index, dtype=object)
    for reason in sorted({r for _, r in judged.values() if r}):
        notes[f"{column} cleared: {reason}"] = reasons == reason
    return pd.Series([name for name, _ in verdicts], index=values.index, dtype="string")


def _ids_without_control(checks: _Checks, frame: pd.DataFrame, *columns: str) -> None:
    """An identifier holding a control character is not the identifier it looks like: the row is quarantined."""
    for column in columns:  # after trimming, as the key is stored
        checks.fail(_has_control(frame[column].str.strip()), f"{column} has a control character")


def _value_notes(out: pd.DataFrame, notes: dict[str, pd.Series]) -> pd.DataFrame:
    """Per-row notes on values changed or cleared, carried to `ingest_export` in the frame's attrs."""
    out.attrs["value_notes"] = {reason: mask.fillna(False).astype(bool) for reason, mask in notes.items()}
    return out


class _Checks:
    """Collects per-row failure reasons for one file.

    Each check keeps its mask; the reason texts are joined at the end for the failing rows only
    (a few in a real export), so a check that passes costs one mask, not a string column.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.index = frame.index
        self.failures: list[tuple[np.ndarray, str]] = []

    def fail(self, mask: pd.Series, reason: str) -> None:
        failed = mask.fillna(True).astype(bool).to_numpy()
        if failed.any():
            self.failures.append((failed, reason))

    def reason_text(self) -> pd.Series:
        """Per row, the reasons of its failed checks joined by "; ", in check order; empty where all passed."""
        return _reason_text(self.index, self.failures)


def _reason_text(index: pd.Index, failures: list[tuple[np.ndarray, str]]) -> pd.Series:
    failing = np.zeros(len(index), dtype=bool)
    for mask, _ in failures:
        failing |= mask
    at = np.flatnonzero(failing)
    texts = [[] for _ in at]
    for mask, reason in failures:
        for row in np.flatnonzero(mask[at]):
            texts[row].append(reason)
    text = np.full(len(index), "", dtype=object)
    text[at] = ["; ".join(parts) for parts in texts]
    return pd.Series(text, index=index, dtype="string")


def _add_reason(reasons: pd.Series, mask: pd.Series, reason: str) -> pd.Series:
    """`reason` appended (after "; " when there is one already) on the rows of `mask`; the rest untouched."""
    if not mask.any():
        return reasons
    hit = mask.to_numpy(dtype=bool)
    text = reasons.to_numpy(dtype=object)  # a new array: the caller's series is not changed
    text[hit] = [f"{before}; {reason}" if before else reason for before in text[hit]]
    return pd.Series(text, index=reasons.index, dtype="string")


def _clean_contacts(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    checks = _Checks(frame)
    out = pd.DataFrame(index=frame.index)
    out["contact_id"] = frame["contact_id"].str.strip()
    checks.fail(_blank(frame["contact_id"]), "contact_id missing")
    out["email"] = frame["email"]
    out["email_normalized"] = frame["email"].str.strip().str.lower()
    checks.fail(~out["email_normalized"].str.fullmatch(contract.EMAIL.pattern), "email invalid")
    _ids_without_control(checks, frame, "contact_id")
    notes: dict[str, pd.Series] = {}
    for column in ("first_name", "last_name"):
        out[column] = _names(frame[column], column, notes)
    for column in ("phone", "city", "interests", "notes"):
        out[column] = _free_text(frame[column], column, notes).str.strip().replace("", pd.NA)
    birth = frame["birth_date"].str.strip()
    known = birth != ""
    parsed_birth = pd.to_datetime(birth.where(birth.str.fullmatch(ISO_DATE)), format="%Y-%m-%d", errors="coerce")
    checks.fail(known & parsed_birth.isna(), "birth_date not YYYY-MM-DD")
    # `.dt.date` keeps datetime64 when every value is NaT (an export with no birth dates at all): dates or None.
    out["birth_date"] = parsed_birth.dt.date.astype(object).where(parsed_birth.notna(), None)
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
    return _value_notes(out, notes), checks.reason_text()


def _clean_consent_events(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    checks = _Checks(frame)
    out = pd.DataFrame(index=frame.index)
    out["event_id"] = frame["event_id"].str.strip()
    checks.fail(_blank(frame["event_id"]), "event_id missing")
    out["contact_id"] = frame["contact_id"].str.strip()
    checks.fail(_blank(frame["contact_id"]), "contact_id missing")
    out["purpose"] = frame["purpose"].str.strip().str.lower()
    checks.fail(out["purpose"] == "", "purpose missing")
    _ids_without_control(checks, frame, "event_id", "contact_id", "purpose")
    out["action"] = frame["action"].str.strip().str.lower()
    checks.fail(~out["action"].isin(contract.CONSENT_ACTIONS), "action not grant|withdraw")
    notes: dict[str, pd.Series] = {}
    for column in ("source", "notice_version"):
        out[column] = _free_text(frame[column], column, notes).str.strip().replace("", pd.NA)
    out["occurred_at"] = _timestamps(frame["occurred_at"])
    checks.fail(out["occurred_at"].isna(), "occurred_at missing or not ISO 8601")
    return _value_notes(out, notes), checks.reason_text()


def _clean_activity(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    checks = _Checks(frame)
    out = pd.DataFrame(index=frame.index)
    out["event_id"] = frame["event_id"].str.strip()
    checks.fail(_blank(frame["event_id"]), "event_id missing")
    out["contact_id"] = frame["contact_id"].str.strip()
    checks.fail(_blank(frame["contact_id"]), "contact_id missing")
    out["event_type"] = frame["event_type"].str.strip().str.lower()
    checks.fail(~out["event_type"].isin(contract.ACTIVITY_TYPES), "event_type not in the contract")
    _ids_without_control(checks, frame, "event_id", "contact_id")
    notes: dict[str, pd.Series] = {}
    category = _free_text(frame["product_category"], "product_category", notes)
    out["product_category"] = category.str.strip().str.lower().replace("", pd.NA)
    amount_text = frame["amount"].str.strip()
    out["amount"] = pd.to_numeric(amount_text.replace("", pd.NA), errors="coerce").round(2)
    checks.fail((amount_text != "") & out["amount"].isna(), "amount not a number")
    out["occurred_at"] = _timestamps(frame["occurred_at"])
    checks.fail(out["occurred_at"].isna(), "occurred_at missing or not ISO 8601")
    return _value_notes(out, notes), checks.reason_text()


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
    _ids_without_control(checks, frame, "request_id")
    out["email_normalized"] = frame["email"].str.strip().str.lower()
    checks.fail(~out["email_normalized"].str.fullmatch(contract.EMAIL.pattern), "email invalid")
    out["request_type"] = frame["request_type"].str.strip().str.lower()
    checks.fail(~out["request_type"].isin(contract.DSR_TYPES), "request_type not in the contract")
    # A request is honoured even when its details are unreadable: they are kept, wrapped, for a human.
    notes: dict[str, pd.Series] = {}
    details = _free_text(frame["details"], "details", notes).fillna("").astype(object)
    out["details"] = [
        (text if text.strip() else "{}") if _valid_json_object(text) else json.dumps({"unparsed_details": text})
        for text in details
    ]
    out["received_at"] = _timestamps(frame["received_at"])
    checks.fail(out["received_at"].isna(), "received_at missing or not ISO 8601")
    out["channel"] = "crm_export"
    return _value_notes(out, notes), checks.reason_text()


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
    """Keep one row per key within a file; the others go to quarantine, naming the kept line.

    Only the rows whose key occurs more than once are sorted and compared (a few in a real export);
    the rest are kept as they are, in line order.
    """
    repeated = clean[spec.key].duplicated(keep=False).to_numpy(dtype=bool)
    if not repeated.any():
        return _in_line_order(clean), []
    kept, rows = _split_repeated(clean.loc[repeated], spec)
    keep = ~repeated
    keep[repeated] = clean.index[repeated].isin(kept.index)
    return _in_line_order(clean.loc[keep]), rows


def _in_line_order(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows by line number; as they come from the reader they already are (no copy then)."""
    return rows if rows["_line"].is_monotonic_increasing else rows.sort_values("_line")


def _split_repeated(clean: pd.DataFrame, spec: ExportFile) -> tuple[pd.DataFrame, list[tuple[int, str, dict]]]:
    """`_split_duplicates` over rows that all share their key with another: which one wins, and why."""
    tie = None
    if spec is contract.CONTACTS:
        ordered = clean.sort_values(["updated_at", "_line"], ascending=[False, False])
        note = "duplicate contact_id in file (newer version on line {kept} loaded)"
        tie = "duplicate contact_id with the same updated_at (the later line in the file wins: line {kept} loaded)"
    else:
        ordered = clean.sort_values("_line")
        note = f"duplicate {spec.key} in file (counted once, from line {{kept}})"
    first = ~ordered.duplicated(spec.key, keep="first")
    kept = ordered.loc[first]
    dropped = ordered.loc[~first]
    if dropped.empty:
        return kept.sort_values("_line"), []
    winners = kept.set_index(spec.key).loc[dropped[spec.key]]  # one winner per dropped row, in its order
    kept_lines = winners["_line"].astype(int).tolist()
    if tie is not None:
        same = (winners["updated_at"].to_numpy() == dropped["updated_at"].to_numpy()).tolist()
    else:
        same = [False] * len(dropped)
    rows = [
        (int(line), (tie if is_tie else note).format(kept=winner), record)
        for line, winner, is_tie, record in zip(
            dropped["_line"].tolist(), kept_lines, same, _records(dropped), strict=True
        )
    ]
    return kept.sort_values("_line"), rows


def _records(rows: pd.DataFrame) -> list[dict]:
    """Each row as {column: text or None} (without `_line`): the quarantined record, as `_record` gives it."""
    columns = [c for c in rows.columns if c != "_line"]
    values = rows[columns].astype(object)
    values = values.where(values.notna(), None)
    return [
        {k: (None if v is None or v is pd.NA else str(v)) for k, v in zip(columns, row, strict=True)}
        for row in values.itertuples(index=False, name=None)
    ]


def _record(row: pd.Series) -> dict:
    return {k: (None if pd.isna(v) else str(v)) for k, v in row.items() if k != "_line"}


#: Event files: rows whose key is not loaded yet are inserted, the others left as they are. The
#: anti-join finds them (`incoming` holds one row per key: `_split_duplicates`); where another
#: session may insert the same key meanwhile (Postgres), `on conflict do nothing` still decides
#: (`_upsert_sql`). DuckDB's ON CONFLICT costs about as much again as the insert itself, even with
#: no conflict (measured: 2.8M activity rows, 5.8 CPU s with it, 3.1 without), and its file has
#: one writer.
_INSERT_NEW = (
    "insert into raw.{table} ({{columns}}) select {{columns}} from incoming i"
    " where not exists (select 1 from raw.{table} t where t.{key} = i.{key})"
)
#: Upserts from the registered frame `incoming`: explicit column lists, the same SQL on DuckDB and Postgres
#: (but for the conflict clause `_upsert_sql` adds on Postgres).
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
    **{
        spec.name: _INSERT_NEW.format(table=spec.table, key=spec.key)
        for spec in (contract.CONSENT_EVENTS, contract.ACTIVITY, contract.DSR_REQUESTS)
    },
}


def _upsert_sql(conn: Warehouse, spec: ExportFile, columns: str) -> str:
    """The file's upsert; an event file's gets `on conflict do nothing` where others may write meanwhile."""
    sql = _UPSERT[spec.name].format(columns=columns)
    if spec is not contract.CONTACTS and not conn.sole_writer:
        sql += " on conflict do nothing"
    return sql


def _column_list(frame: pd.DataFrame) -> str:
    return ", ".join(f'"{c}"' for c in frame.columns if c != "_line")


def _count(conn: Warehouse, table: str) -> int:
    return int(scalar(conn, f"select count(*) from raw.{table}") or 0)


def _gate_loaded_rows(conn: Warehouse, load_id: str, staged: list, known_contacts: pa.Array) -> None:
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
    conn: Warehouse,
    policy: Policy,
    landing_root: Path,
    now: datetime | None = None,
) -> IngestResult:
    """Validate and load one export; archive it under landing/<load_id>/.

    Raises:
        CrmExportError: a required file or column is missing, naming it.
        QuarantineThresholdExceeded: a file's failing share is above the policy's limit.
    """
    crm_dir = contract.check_export(crm_dir)
    fingerprint = export_fingerprint(crm_dir)
    load_id = f"load_{fingerprint[:16]}"
    previous = scalar(conn, "select files_json from ops.crm_loads where export_sha256 = ?", [fingerprint])
    if previous:
        files = [FileResult(**item) for item in json.loads(previous)]
        log.info("export %s already loaded; nothing to do", load_id)
        return IngestResult(load_id=load_id, already_loaded=True, files=files)

    now = now or datetime.now(UTC).replace(tzinfo=None)
    max_share = policy.ingest.max_quarantine_share
    latest = now + policy.ingest.future_skew  # a later updated_at would pin the row against every correction
    staged: list[tuple[ExportFile, pd.DataFrame, pd.DataFrame, FileResult]] = []
    landing_plan: dict[str, ReadNotes] = {}
    door = SuppressionDoor.open(conn, load_id=load_id)  # erased and objecting people are not let back in
    for spec in contract.EXPORT_FILES:
        path = crm_dir / spec.name
        if not path.is_file():
            continue
        frame, broken, read_notes = read_export_file(path, spec)
        landing_plan[spec.name] = read_notes
        frame, broken = door.admit(spec, frame, broken)  # dropped and counted (ops.suppression_door), never stored
        clean, reasons = CLEANERS[spec.name](frame)
        value_notes = clean.attrs.pop("value_notes", {})
        if spec is contract.CONTACTS:  # first in EXPORT_FILES: events are checked against it below
            exported = pd.concat([frame["contact_id"], pd.Series(read_notes.broken_contact_ids, dtype="string")])
            known_contacts = known_contact_ids(conn, exported)
            future = clean["updated_at"] > latest
            reason = (
                f"updated_at more than {policy.ingest.max_future_skew} after the load time (ingest.max_future_skew)"
            )
            reasons = _add_reason(reasons, future, reason)
        elif spec in (contract.CONSENT_EVENTS, contract.ACTIVITY):
            orphan = unknown_contact(clean, known_contacts)
            reasons = _add_reason(reasons, orphan, ORPHAN_REASON)
        clean["_line"] = frame["_line"]
        failing = reasons != ""
        failed = frame.loc[failing]
        quarantined = broken + list(
            zip(
                failed["_line"].astype(int).tolist(),
                reasons.loc[failing].astype(str).tolist(),
                _records(failed),
                strict=True,
            )
        )
        valid, duplicates = _split_duplicates(clean.loc[~failing], spec)
        quarantined += duplicates
        result = FileResult(
            file_name=spec.name, rows_read=len(frame) + len(broken), columns_dropped=read_notes.columns_dropped
        )
        loaded = ~failing & ~frame["_line"].isin([line for line, _, _ in duplicates])
        result.values_cleared = {
            reason: int((mask & loaded).sum()) for reason, mask in value_notes.items() if (mask & loaded).any()
        }
        result.rows_quarantined = len(quarantined)
        result.quarantine_reasons = dict(
            Counter(part.split(" (")[0] for _, reason, _ in quarantined for part in reason.split("; "))
        )
        _check_quarantine_share(path, result, quarantined, invalid=len(quarantined) - len(duplicates), limit=max_share)
        staged.append((spec, valid, _quarantine_frame(load_id, spec.name, quarantined, now), result))
        del frame, clean, failed
        _release_unused()  # the file's intermediates are freed: hand their pages back before the next file

    _gate_loaded_rows(conn, load_id, staged, known_contacts)
    _load_staged(conn, load_id, fingerprint, crm_dir, now, staged)
    _archive_landing(landing_root / load_id, crm_dir, staged, landing_plan, door)
    result = IngestResult(load_id=load_id, already_loaded=False, files=[r for *_, r in staged])
    log.info(
        "loaded export %s: %d contacts read, %d rows quarantined",
        load_id,
        result.contacts_read,
        result.rows_quarantined,
    )
    for item in result.files:
        if item.columns_dropped:  # names only: the values were never read
            log.warning("%s: columns outside the contract dropped: %s", item.file_name, ", ".join(item.columns_dropped))
    return result


def _release_unused() -> None:
    """Return Arrow's freed pages to the system now: its allocator keeps them a while, so the peak of one
    file's reading would otherwise add to the next one's."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _check_quarantine_share(
    path: Path, result: FileResult, quarantined: list[tuple[int, str, dict]], *, invalid: int, limit: float
) -> None:
    """A file whose failing share passes `ingest.max_quarantine_share` stops the load before anything is written."""
    if result.rows_read and invalid / result.rows_read > limit:
        top = ", ".join(f"{reason}: {n}" for reason, n in Counter(r for _, r, _ in quarantined).most_common(3))
        raise QuarantineThresholdExceeded(
            f"{path}: {invalid} of {result.rows_read} rows failed validation "
            f"({invalid / result.rows_read:.0%} > ingest.max_quarantine_share {limit:.0%}); "
            f"nothing was loaded. Most common: {top}"
        )


def _load_staged(
    conn: Warehouse,
    load_id: str,
    fingerprint: str,
    crm_dir: Path,
    now: datetime,
    staged: list[tuple[ExportFile, pd.DataFrame, pd.DataFrame, FileResult]],
) -> None:
    """Valid rows upserted, quarantined rows kept, the load recorded: one transaction, all or nothing."""
    conn.execute("begin transaction")
    try:
        for spec, valid, quarantine, result in staged:
            incoming = valid.assign(load_id=load_id)
            before = _count(conn, spec.table)
            conn.register("incoming", incoming.drop(columns="_line", errors="ignore"))
            updated = int(scalar(conn, _upsert_sql(conn, spec, _column_list(incoming))) or 0)
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


def _archive_landing(
    landing: Path,
    crm_dir: Path,
    staged: list[tuple[ExportFile, pd.DataFrame, pd.DataFrame, FileResult]],
    landing_plan: dict[str, ReadNotes],
    door: SuppressionDoor,
) -> None:
    """landing/<load_id>/: the contract's columns only, owner-only, without the rows the door refused."""
    if landing.exists():
        return
    partial = landing.with_name(landing.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for spec, *_ in staged:
        _archive(crm_dir / spec.name, partial / spec.name, spec, landing_plan[spec.name])
        (partial / spec.name).chmod(0o600)  # personal data: owner-only, whatever the export's mode
    door.scrub(partial)  # the archive keeps no row the door refused
    partial.rename(landing)


def _archive(source: Path, target: Path, spec: ExportFile, notes: ReadNotes) -> None:
    """The landing copy of one file: the contract's columns only, nothing the reader could not read.

    A file that has exactly the contract's columns and read cleanly is copied byte for byte. Otherwise
    it is written anew: the contract's header, then each well-formed record's contract columns (so an
    extra column such as `ssn`, or an oversized field, never reaches the disk again). Records the
    reader could not read are kept only in raw.quarantine (with their line and reason).
    """
    if notes.byte_copy_ok:
        shutil.copy2(source, target)
        return
    frame, _, _ = read_export_file(source, spec)
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(spec.columns)
        writer.writerows(frame[list(spec.columns)].itertuples(index=False, name=None))
