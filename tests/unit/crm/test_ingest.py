"""CRM ingest: every row lands in its raw table or in the quarantine with file, line and reason.

Small exports are written by hand in tmp_path and loaded into a real DuckDB file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from governed_marketing.crm import contract
from governed_marketing.crm.ingest import (
    CrmExportError,
    IngestResult,
    QuarantineThresholdExceeded,
    ingest_export,
)
from governed_marketing.policy import Policy, load_policy
from governed_marketing.warehouse import connect

REPO = Path(__file__).resolve().parents[3]
RAW_TABLES = ("crm_contacts", "crm_consent_events", "crm_activity", "crm_dsr_requests", "quarantine")


# ---- building exports by hand ----------------------------------------------------------------


def contact(n: int, **fields: str) -> dict[str, str]:
    row = {
        "contact_id": f"c{n:03d}",
        "email": f"person{n}@example.com",
        "first_name": "Ann",
        "last_name": "Lee",
        "phone": "",
        "birth_date": "1990-05-17",
        "country": "DE",
        "language": "de",
        "city": "Berlin",
        "lifecycle_stage": "customer",
        "interests": "shoes;bags",
        "notes": "",
        "created_at": "2025-01-01T09:00:00",
        "updated_at": "2026-01-01T09:00:00",
    }
    return row | fields


def consent_event(n: int, **fields: str) -> dict[str, str]:
    row = {
        "event_id": f"e{n:03d}",
        "contact_id": f"c{n:03d}",
        "purpose": "email_marketing",
        "action": "grant",
        "source": "web_form",
        "notice_version": "v3",
        "occurred_at": "2026-01-02T10:00:00",
    }
    return row | fields


def activity(n: int, **fields: str) -> dict[str, str]:
    row = {
        "event_id": f"a{n:03d}",
        "contact_id": f"c{n:03d}",
        "event_type": "purchase",
        "product_category": "shoes",
        "amount": "59.90",
        "occurred_at": "2026-01-03T11:00:00",
    }
    return row | fields


def dsr_request(n: int, **fields: str) -> dict[str, str]:
    row = {
        "request_id": f"r{n:03d}",
        "email": f"person{n}@example.com",
        "request_type": "objection",
        "details": "{}",
        "received_at": "2026-01-04T12:00:00",
    }
    return row | fields


Row = dict[str, str] | Sequence[str]


def write_csv(
    path: Path,
    spec: contract.ExportFile,
    rows: Sequence[Row],
    *,
    line_end: str = "\n",
    bom: bool = False,
    columns: Sequence[str] | None = None,
) -> None:
    """A CSV as a CRM would export it; a row given as a list is written as is (to break the shape)."""
    columns = list(columns or spec.columns)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row[c] for c in columns] if isinstance(row, dict) else row)
    path.write_text(("\ufeff" if bom else "") + buffer.getvalue(), encoding="utf-8", newline="")


def write_export(
    directory: Path,
    *,
    contacts: Sequence[Row] | None = None,
    consent_events: Sequence[Row] | None = None,
    activities: Sequence[Row] | None = None,
    dsr_requests: Sequence[Row] | None = None,
) -> Path:
    """An export of ten valid contacts with one consent event and one purchase each, unless given.

    Default events belong to the contacts written (events of unknown contacts are quarantined).
    """
    directory.mkdir(parents=True, exist_ok=True)
    contacts = contacts or [contact(n) for n in range(1, 11)]
    exported = [int(c["contact_id"][1:]) for c in contacts if isinstance(c, dict) and c["contact_id"].strip()]
    write_csv(directory / "contacts.csv", contract.CONTACTS, contacts)
    write_csv(
        directory / "consent_events.csv",
        contract.CONSENT_EVENTS,
        consent_events if consent_events is not None else [consent_event(n) for n in exported],
    )
    write_csv(
        directory / "activity.csv",
        contract.ACTIVITY,
        activities if activities is not None else [activity(n) for n in exported],
    )
    if dsr_requests is not None:
        write_csv(directory / "dsr_requests.csv", contract.DSR_REQUESTS, dsr_requests)
    return directory


# ---- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "governance.yml")


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = connect(tmp_path / "w.duckdb")
    yield connection
    connection.close()


@pytest.fixture
def ingest(tmp_path: Path, conn: duckdb.DuckDBPyConnection, policy: Policy):
    def run(directory: Path) -> IngestResult:
        return ingest_export(directory, conn=conn, policy=policy, landing_root=tmp_path / "landing")

    return run


def rows(conn: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cursor = conn.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def quarantine(conn: duckdb.DuckDBPyConnection) -> list[dict]:
    sql = "select file_name, line_number, reason from raw.quarantine order by file_name, line_number"
    return rows(conn, sql)


def count(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    return conn.execute(f"select count(*) from {table}").fetchall()[0][0]


def snapshot(conn: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    tables = [f"raw.{t}" for t in RAW_TABLES] + ["ops.crm_loads"]
    return {table: conn.execute(f"select * from {table} order by all").fetchall() for table in tables}


def contact_row(conn: duckdb.DuckDBPyConnection, contact_id: str) -> dict:
    (row,) = rows(conn, "select * from raw.crm_contacts where contact_id = ?", [contact_id])
    return row


# ---- quarantine: file, line, reason ----------------------------------------------------------

# (file, the bad row at data position 4 (line 5), reason phrase, the invalid value that must not leak)
BAD_ROWS = {
    "contact_id missing": ("contacts.csv", contact(4, contact_id="  "), "contact_id missing", None),
    "email invalid": ("contacts.csv", contact(4, email="ann.at.example"), "email invalid", "ann.at.example"),
    "birth_date not YYYY-MM-DD": (
        "contacts.csv",
        contact(4, birth_date="17/05/1990"),
        "birth_date not YYYY-MM-DD",
        "17/05/1990",
    ),
    "wrong number of fields": (
        "contacts.csv",
        list(contact(4, city="Zwickau").values())[:-1],
        "wrong number of fields",
        "Zwickau",
    ),
    "updated_at not ISO 8601": (
        "contacts.csv",
        contact(4, updated_at="last tuesday"),
        "updated_at missing or not ISO 8601",
        "last tuesday",
    ),
    "consent action not grant|withdraw": (
        "consent_events.csv",
        consent_event(4, action="perhaps"),
        "action not grant|withdraw",
        "perhaps",
    ),
}


def export_with_bad_row(directory: Path, file_name: str, bad: Row) -> Path:
    if file_name == "contacts.csv":
        contacts = [contact(n) for n in range(1, 11)]
        contacts[3] = bad
        return write_export(directory, contacts=contacts)
    events = [consent_event(n) for n in range(1, 11)]
    events[3] = bad
    return write_export(directory, consent_events=events)


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_each_invalid_row_is_quarantined_with_file_line_and_reason(tmp_path, conn, ingest, case):
    file_name, bad, reason, _ = BAD_ROWS[case]
    ingest(export_with_bad_row(tmp_path / "export", file_name, bad))
    (row,) = quarantine(conn)
    assert (row["file_name"], row["line_number"]) == (file_name, 5)
    assert row["reason"].startswith(reason)


@pytest.mark.parametrize("case", [c for c in BAD_ROWS if BAD_ROWS[c][3]], ids=lambda c: c)
def test_quarantine_reason_does_not_contain_the_invalid_value(tmp_path, conn, ingest, case):
    file_name, bad, _, value = BAD_ROWS[case]
    result = ingest(export_with_bad_row(tmp_path / "export", file_name, bad))
    (row,) = quarantine(conn)
    assert value not in row["reason"]
    assert all(value not in reason for f in result.files for reason in f.quarantine_reasons)


def test_quarantine_line_counts_a_quoted_field_spanning_two_lines(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[1] = contact(2, notes="called twice,\nprefers email")  # data row 2: lines 3 and 4
    contacts[2] = contact(3, email="not-an-email")  # so this one starts on line 5
    ingest(write_export(tmp_path / "export", contacts=contacts))
    assert quarantine(conn) == [{"file_name": "contacts.csv", "line_number": 5, "reason": "email invalid"}]
    assert contact_row(conn, "c002")["notes"] == "called twice,\nprefers email"


def test_a_row_failing_several_checks_is_quarantined_once_naming_every_problem(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, email="nope", birth_date="1990-13-45")
    ingest(write_export(tmp_path / "export", contacts=contacts))
    (row,) = quarantine(conn)
    assert row["line_number"] == 2
    assert "email invalid" in row["reason"]
    assert "birth_date not YYYY-MM-DD" in row["reason"]


def test_a_byte_that_is_not_utf8_never_drops_rows_silently(tmp_path, conn, ingest):
    export = write_export(tmp_path / "export", consent_events=[], activities=[])
    contacts = [contact(n) for n in range(1, 400)]
    write_csv(export / "contacts.csv", contract.CONTACTS, contacts)
    text = (export / "contacts.csv").read_bytes()
    line_301 = text.index(b"c300,")  # header + 299 rows before it
    (export / "contacts.csv").write_bytes(text[:line_301] + b"c300,\xf6" + text[line_301 + 5 :])
    try:
        result = ingest(export)
    except CrmExportError as refused:  # refusing the file, naming it and the line, is fine too
        assert "contacts.csv" in str(refused)
        assert "line 301" in str(refused)
        return
    (contacts_result,) = [f for f in result.files if f.file_name == "contacts.csv"]
    assert contacts_result.rows_read == 399
    assert count(conn, "raw.crm_contacts") + count(conn, "raw.quarantine") == 399
    assert [r["line_number"] for r in quarantine(conn)] == [301]


def test_no_valid_row_is_dropped(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[4] = contact(5, email="")
    events = [consent_event(n) for n in range(1, 11)]
    events[6] = consent_event(7, occurred_at="")
    activities = [activity(n) for n in range(1, 11)]
    activities[8] = activity(9, event_type="teleport")
    dsrs = [dsr_request(n) for n in range(1, 6)]
    result = ingest(write_export(tmp_path / "export", contacts=contacts, consent_events=events,
                                 activities=activities, dsr_requests=dsrs))  # fmt: skip

    loaded = {f.file_name: f.rows_loaded for f in result.files}
    assert loaded == {"contacts.csv": 9, "consent_events.csv": 9, "activity.csv": 9, "dsr_requests.csv": 5}
    assert count(conn, "raw.crm_contacts") == 9
    assert count(conn, "raw.crm_consent_events") == 9
    assert count(conn, "raw.crm_activity") == 9
    assert count(conn, "raw.crm_dsr_requests") == 5
    assert count(conn, "raw.quarantine") == 3
    assert all(f.rows_read == f.rows_loaded + f.rows_quarantined for f in result.files)


# ---- normalization ---------------------------------------------------------------------------


def test_email_is_trimmed_and_lowercased_into_email_normalized(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, email="  Ann.Lee@Example.COM  ")
    contacts[1] = contact(2, email="\tBOB@example.com\t")
    ingest(write_export(tmp_path / "export", contacts=contacts))
    assert contact_row(conn, "c001")["email_normalized"] == "ann.lee@example.com"
    assert contact_row(conn, "c002")["email_normalized"] == "bob@example.com"
    assert count(conn, "raw.quarantine") == 0


def test_country_is_upper_cased(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, country=" be ")
    ingest(write_export(tmp_path / "export", contacts=contacts))
    assert contact_row(conn, "c001")["country"] == "BE"


def test_zone_less_timestamps_are_read_as_utc(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, updated_at="2026-03-01T10:00:00")
    ingest(write_export(tmp_path / "export", contacts=contacts))
    assert contact_row(conn, "c001")["updated_at"] == datetime(2026, 3, 1, 10, 0)


def test_offset_timestamps_are_converted_to_utc(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, updated_at="2026-03-01T12:00:00+02:00")
    contacts[1] = contact(2, updated_at="2026-03-01T10:00:00Z")
    events = [consent_event(n) for n in range(1, 11)]
    events[0] = consent_event(1, occurred_at="2026-06-30T23:30:00+02:00")
    ingest(write_export(tmp_path / "export", contacts=contacts, consent_events=events))
    assert contact_row(conn, "c001")["updated_at"] == datetime(2026, 3, 1, 10, 0)
    assert contact_row(conn, "c002")["updated_at"] == datetime(2026, 3, 1, 10, 0)
    (event,) = rows(conn, "select occurred_at from raw.crm_consent_events where event_id = 'e001'")
    assert event["occurred_at"] == datetime(2026, 6, 30, 21, 30)


# ---- idempotence and deltas ------------------------------------------------------------------


def test_loading_the_same_export_twice_changes_nothing(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[2] = contact(3, email="broken")
    export = write_export(tmp_path / "export", contacts=contacts, dsr_requests=[dsr_request(1)])
    first = ingest(export)
    before = snapshot(conn)

    second = ingest(export)

    assert first.already_loaded is False
    assert second.already_loaded is True
    assert second.load_id == first.load_id
    assert snapshot(conn) == before


def test_a_delta_with_a_newer_updated_at_updates_the_contact(tmp_path, conn, ingest):
    ingest(write_export(tmp_path / "full", contacts=[contact(1, city="Berlin")]))
    newer = contact(1, city="Hamburg", updated_at="2026-02-01T09:00:00")
    result = ingest(write_export(tmp_path / "delta", contacts=[newer], consent_events=[], activities=[]))
    row = contact_row(conn, "c001")
    assert row["city"] == "Hamburg"
    assert row["updated_at"] == datetime(2026, 2, 1, 9, 0)
    assert row["load_id"] == result.load_id


def test_a_delta_with_an_older_updated_at_leaves_the_contact_alone(tmp_path, conn, ingest):
    first = ingest(write_export(tmp_path / "full", contacts=[contact(1, city="Berlin")]))
    before = contact_row(conn, "c001")
    older = contact(1, city="Munich", updated_at="2025-06-01T09:00:00")
    ingest(write_export(tmp_path / "delta", contacts=[older], consent_events=[], activities=[]))
    assert contact_row(conn, "c001") == before
    assert before["load_id"] == first.load_id


def test_a_delta_with_an_older_updated_at_is_reported_unchanged_not_loaded(tmp_path, conn, ingest):
    ingest(write_export(tmp_path / "full", contacts=[contact(1, city="Berlin")]))
    older = contact(1, city="Munich", updated_at="2025-06-01T09:00:00")
    result = ingest(write_export(tmp_path / "delta", contacts=[older], consent_events=[], activities=[]))
    (contacts,) = [f for f in result.files if f.file_name == "contacts.csv"]
    assert (contacts.rows_loaded, contacts.rows_unchanged) == (0, 1)


def test_a_delta_redelivering_loaded_events_keeps_them_and_loads_only_the_new_ones(tmp_path, conn, ingest):
    """An event id already loaded stays as it was (events are facts: first delivery wins); the
    delta's new ids are loaded, and the counts say which is which."""
    ingest(write_export(tmp_path / "full"))
    again = [consent_event(1, action="withdraw"), consent_event(2), consent_event(11, contact_id="c001")]
    result = ingest(write_export(tmp_path / "delta", contacts=[], consent_events=again, activities=[activity(1)]))
    assert count(conn, "raw.crm_consent_events") == 11
    (kept,) = rows(conn, "select action from raw.crm_consent_events where event_id = 'e001'")
    assert kept["action"] == "grant"
    loaded = {f.file_name: (f.rows_loaded, f.rows_unchanged) for f in result.files}
    assert loaded["consent_events.csv"] == (1, 2)
    assert loaded["activity.csv"] == (0, 1)


def test_a_duplicated_event_id_is_counted_once_and_the_copy_quarantined_naming_the_kept_line(tmp_path, conn, ingest):
    events = [consent_event(n) for n in range(1, 11)]
    events[3] = consent_event(1, action="withdraw")  # line 5 repeats e001 from line 2
    result = ingest(write_export(tmp_path / "export", consent_events=events))
    assert count(conn, "raw.crm_consent_events") == 9
    (kept,) = rows(conn, "select action from raw.crm_consent_events where event_id = 'e001'")
    assert kept["action"] == "grant"
    (row,) = quarantine(conn)
    assert (row["file_name"], row["line_number"]) == ("consent_events.csv", 5)
    assert "duplicate event_id" in row["reason"]
    assert "line 2" in row["reason"]
    (events_result,) = [f for f in result.files if f.file_name == "consent_events.csv"]
    assert (events_result.rows_loaded, events_result.rows_quarantined) == (9, 1)


# ---- the quarantine threshold ----------------------------------------------------------------


def test_too_many_failing_rows_raise_naming_the_file_and_load_nothing(tmp_path, conn, ingest, policy):
    assert policy.ingest.max_quarantine_share < 0.3
    contacts = [contact(n) for n in range(1, 11)]
    for i in (1, 4, 7):
        contacts[i] = contact(i + 1, email="broken")
    export = write_export(tmp_path / "export", contacts=contacts)

    with pytest.raises(QuarantineThresholdExceeded) as caught:
        ingest(export)

    assert str(export / "contacts.csv") in str(caught.value)
    assert "broken" not in str(caught.value).replace(str(tmp_path), "")
    assert {table: count(conn, f"raw.{table}") for table in RAW_TABLES} == dict.fromkeys(RAW_TABLES, 0)
    assert count(conn, "ops.crm_loads") == 0
    assert not (tmp_path / "landing").exists()


def test_a_failing_share_at_the_threshold_still_loads(tmp_path, conn, ingest, policy):
    assert policy.ingest.max_quarantine_share == 0.2
    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, email="broken")
    contacts[1] = contact(2, email="broken")
    result = ingest(write_export(tmp_path / "export", contacts=contacts))
    assert result.already_loaded is False
    assert count(conn, "raw.crm_contacts") == 8


# ---- the shape of the export -----------------------------------------------------------------


@pytest.mark.parametrize("file_name", ["contacts.csv", "consent_events.csv", "activity.csv"])
def test_a_missing_required_file_raises_naming_it(tmp_path, ingest, file_name):
    export = write_export(tmp_path / "export")
    (export / file_name).unlink()
    with pytest.raises(CrmExportError, match=file_name):
        ingest(export)


def test_a_missing_column_raises_naming_the_column(tmp_path, ingest):
    export = write_export(tmp_path / "export")
    columns = [c for c in contract.CONTACTS.columns if c != "lifecycle_stage"]
    write_csv(export / "contacts.csv", contract.CONTACTS, [contact(1)], columns=columns)
    with pytest.raises(CrmExportError) as caught:
        ingest(export)
    assert "lifecycle_stage" in str(caught.value)
    assert "contacts.csv" in str(caught.value)


def test_dsr_requests_file_may_be_absent(tmp_path, conn, ingest):
    result = ingest(write_export(tmp_path / "export"))
    assert [f.file_name for f in result.files] == ["contacts.csv", "consent_events.csv", "activity.csv"]
    assert count(conn, "raw.crm_contacts") == 10
    assert count(conn, "raw.crm_dsr_requests") == 0


def test_a_dsr_request_with_unparseable_details_is_still_loaded_with_details_wrapped(tmp_path, conn, ingest):
    dsrs = [dsr_request(1, request_type="erasure", details="{please forget me"), dsr_request(2)]
    ingest(write_export(tmp_path / "export", dsr_requests=dsrs))
    (row,) = rows(conn, "select * from raw.crm_dsr_requests where request_id = 'r001'")
    assert row["request_type"] == "erasure"
    assert row["email_normalized"] == "person1@example.com"
    assert json.loads(row["details"]) == {"unparsed_details": "{please forget me"}
    assert count(conn, "raw.quarantine") == 0


def test_a_dsr_request_with_a_json_array_as_details_is_loaded_wrapped(tmp_path, conn, ingest):
    ingest(write_export(tmp_path / "export", dsr_requests=[dsr_request(1, details='["a", "b"]')]))
    (row,) = rows(conn, "select details from raw.crm_dsr_requests")
    assert json.loads(row["details"]) == {"unparsed_details": '["a", "b"]'}


def test_the_export_is_archived_under_landing_load_id_byte_for_byte(tmp_path, ingest):
    export = write_export(tmp_path / "export", dsr_requests=[dsr_request(1)])
    result = ingest(export)
    landing = tmp_path / "landing" / result.load_id
    archived = sorted(p.name for p in landing.iterdir())
    assert archived == sorted(spec.name for spec in contract.EXPORT_FILES)
    for name in archived:
        assert (landing / name).read_bytes() == (export / name).read_bytes()


def test_a_bom_and_crlf_line_endings_are_accepted(tmp_path, conn, ingest):
    export = write_export(tmp_path / "export")
    write_csv(export / "contacts.csv", contract.CONTACTS, [contact(n) for n in range(1, 11)],
              line_end="\r\n", bom=True)  # fmt: skip
    assert (export / "contacts.csv").read_bytes().startswith(b"\xef\xbb\xbfcontact_id,")
    result = ingest(export)
    assert count(conn, "raw.crm_contacts") == 10
    assert count(conn, "raw.quarantine") == 0
    assert contact_row(conn, "c010")["updated_at"] == datetime(2026, 1, 1, 9, 0)
    assert result.contacts_read == 10


def test_unicode_names_round_trip(tmp_path, conn, ingest):
    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, first_name="Zoë", last_name="Łukasiewicz-Øster", city="Köln")
    contacts[1] = contact(2, first_name="李", last_name="小龍", notes="emoji ok 🎉")
    export = write_export(tmp_path / "export", contacts=contacts)
    write_csv(export / "contacts.csv", contract.CONTACTS, contacts, line_end="\r\n", bom=True)
    ingest(export)
    first, second = contact_row(conn, "c001"), contact_row(conn, "c002")
    assert (first["first_name"], first["last_name"], first["city"]) == ("Zoë", "Łukasiewicz-Øster", "Köln")
    assert (second["first_name"], second["last_name"], second["notes"]) == ("李", "小龍", "emoji ok 🎉")


def test_an_export_whose_crm_keeps_no_birth_dates_loads_every_contact(tmp_path, ingest, conn):
    """A CRM that records no birth dates at all (the column empty in every row) is a valid export.

    Seen from the HubSpot source: an all-empty column became datetime64 in pandas, not dates, and the raw
    gate's type check failed the whole load.
    """
    result = ingest(write_export(tmp_path / "export", contacts=[contact(n, birth_date="") for n in range(1, 11)]))

    assert result.contacts_read == 10 and result.rows_quarantined == 0
    held = rows(conn, "select count(*) as n, count(birth_date) as dated from raw.crm_contacts")
    assert held == [{"n": 10, "dated": 0}]
