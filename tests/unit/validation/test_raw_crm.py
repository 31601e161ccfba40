"""The raw CRM gate: loaded rows pass; each expectation fails on its violation; orphan events are quarantined."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pytest
from governed_marketing.crm import contract
from governed_marketing.crm.ingest import CLEANERS, RawCrmGateFailed, ingest_export
from governed_marketing.validation.raw_crm import raw_crm_gate, raw_gate_frame
from governed_marketing.warehouse import connect

from expectations.raw_crm import CONTACT_KNOWN, LOADED_COLUMNS
from tests.unit.crm.test_ingest import activity, consent_event, contact, dsr_request, write_export
from tests.unit.validation.conftest import covered, failed, stored

SECRET = "ann.secret@example-crm.test"
ROWS = {
    contract.CONTACTS.name: [contact(n) for n in (1, 2, 3)],
    contract.CONSENT_EVENTS.name: [consent_event(n) for n in (1, 2, 3)],
    contract.ACTIVITY.name: [activity(n) for n in (1, 2, 3)],
    contract.DSR_REQUESTS.name: [dsr_request(n) for n in (1, 2, 3)],
}
KNOWN = pa.array(["c001", "c002", "c003"], type=pa.large_string())


def loaded(file_name: str) -> pd.DataFrame:
    """What the ingest would load from three valid rows: the cleaned, typed frame, plus the computed check."""
    spec = next(s for s in contract.EXPORT_FILES if s.name == file_name)
    raw = pd.DataFrame(ROWS[file_name], columns=list(spec.columns), dtype="string")
    clean, reasons = CLEANERS[file_name](raw)
    assert (reasons == "").all()
    return raw_gate_frame(file_name, clean, KNOWN)


def _set(column: str, value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[1, column] = value
        return frame

    return mutate


def _as_text(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda f: f.assign(**{column: f[column].astype(str)})


def _duplicate(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda f: f.assign(**{column: [f[column].iloc[0]] * len(f)})


def _common(key: str) -> dict:
    return {
        ("expect_table_columns_to_match_set", None): lambda f: f.assign(password="hunter2"),
        ("expect_column_values_to_not_be_null", key): _set(key, None),
        ("expect_column_values_to_be_unique", key): _duplicate(key),
    }


VIOLATIONS: dict[str, dict[tuple[str, str | None], Callable]] = {
    contract.CONTACTS.name: {
        **_common("contact_id"),
        ("expect_column_values_to_not_match_regex", "contact_id"): _set("contact_id", "c0\x0002"),
        ("expect_column_values_to_not_match_regex", "first_name"): _set("first_name", "<script>x</script>"),
        ("expect_column_value_lengths_to_be_between", "first_name"): _set("first_name", "A" * 101),
        ("expect_column_values_to_not_match_regex", "last_name"): _set("last_name", "Lee\x00"),
        ("expect_column_value_lengths_to_be_between", "last_name"): _set("last_name", ""),
        ("expect_column_values_to_not_be_null", "email_normalized"): _set("email_normalized", None),
        ("expect_column_values_to_match_regex", "email_normalized"): _set("email_normalized", "ann.at.example"),
        ("expect_column_values_to_be_in_type_list", "birth_date"): _set("birth_date", "1990-05-17"),
        ("expect_column_values_to_match_regex", "country"): _set("country", "Germany"),
        ("expect_column_values_to_match_regex", "language"): _set("language", "DE"),
        ("expect_column_values_to_be_in_set", "lifecycle_stage"): _set("lifecycle_stage", "vip"),
        ("expect_column_values_to_not_be_null", "created_at"): _set("created_at", pd.NaT),
        ("expect_column_values_to_be_of_type", "created_at"): _as_text("created_at"),
        ("expect_column_values_to_not_be_null", "updated_at"): _set("updated_at", pd.NaT),
        ("expect_column_values_to_be_of_type", "updated_at"): _as_text("updated_at"),
    },
    contract.CONSENT_EVENTS.name: {
        **_common("event_id"),
        ("expect_column_values_to_not_be_null", "contact_id"): _set("contact_id", None),
        ("expect_column_values_to_be_in_set", CONTACT_KNOWN): _set(CONTACT_KNOWN, False),
        ("expect_column_value_lengths_to_be_between", "purpose"): _set("purpose", ""),
        ("expect_column_values_to_be_in_set", "action"): _set("action", "perhaps"),
        ("expect_column_values_to_not_be_null", "occurred_at"): _set("occurred_at", pd.NaT),
        ("expect_column_values_to_be_of_type", "occurred_at"): _as_text("occurred_at"),
    },
    contract.ACTIVITY.name: {
        **_common("event_id"),
        ("expect_column_values_to_not_be_null", "contact_id"): _set("contact_id", None),
        ("expect_column_values_to_be_in_set", CONTACT_KNOWN): _set(CONTACT_KNOWN, False),
        ("expect_column_values_to_be_in_set", "event_type"): _set("event_type", "teleport"),
        ("expect_column_values_to_be_in_type_list", "amount"): _set("amount", "59,90"),
        ("expect_column_values_to_not_be_null", "occurred_at"): _set("occurred_at", pd.NaT),
        ("expect_column_values_to_be_of_type", "occurred_at"): _as_text("occurred_at"),
    },
    contract.DSR_REQUESTS.name: {
        **_common("request_id"),
        ("expect_column_values_to_not_be_null", "email_normalized"): _set("email_normalized", None),
        ("expect_column_values_to_match_regex", "email_normalized"): _set("email_normalized", SECRET + " x"),
        ("expect_column_values_to_be_in_set", "request_type"): _set("request_type", "delete-me"),
        ("expect_column_values_to_be_json_parseable", "details"): _set("details", "{please forget"),
        ("expect_column_values_to_not_be_null", "received_at"): _set("received_at", pd.NaT),
        ("expect_column_values_to_be_of_type", "received_at"): _as_text("received_at"),
    },
}
CASES = [(file_name, expectation) for file_name, cases in VIOLATIONS.items() for expectation in cases]


@pytest.mark.parametrize("file_name", list(LOADED_COLUMNS))
def test_rows_the_ingest_would_load_pass(file_name):
    result = raw_crm_gate(file_name, loaded(file_name))
    assert result.success, result.one_line()


@pytest.mark.parametrize("file_name", list(LOADED_COLUMNS))
def test_every_expectation_has_a_seeded_violation(file_name):
    assert covered(raw_crm_gate(file_name, loaded(file_name))) == set(VIOLATIONS[file_name])


def _case_id(case) -> str:
    return case if isinstance(case, str) else f"{case[0]}[{case[1]}]"


@pytest.mark.parametrize(("file_name", "expectation"), CASES, ids=_case_id)
def test_each_seeded_violation_fails_its_expectation_and_stores_no_value(file_name, expectation):
    result = raw_crm_gate(file_name, VIOLATIONS[file_name][expectation](loaded(file_name)))
    assert expectation in failed(result)
    assert SECRET not in stored(result)
    assert "ann.at.example" not in stored(result)


# ---- in the ingest ---------------------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path):
    connection = connect(tmp_path / "w.duckdb")
    yield connection
    connection.close()


def _ingest(tmp_path, conn, policy, directory):
    return ingest_export(directory, conn=conn, policy=policy, landing_root=tmp_path / "landing")


def test_an_event_of_a_contact_nobody_exported_is_quarantined_with_its_reason(tmp_path, conn, policy):
    events = [consent_event(n) for n in range(1, 11)] + [consent_event(11, contact_id="c999")]
    _ingest(tmp_path, conn, policy, write_export(tmp_path / "export", consent_events=events))
    rows = conn.execute("select file_name, line_number, reason from raw.quarantine").fetchall()
    assert rows == [("consent_events.csv", 12, "contact_id not in contacts")]
    loaded_ids = {r[0] for r in conn.execute("select contact_id from raw.crm_consent_events").fetchall()}
    assert "c999" not in loaded_ids


def test_an_event_of_a_contact_loaded_earlier_or_quarantined_now_is_loaded(tmp_path, conn, policy):
    _ingest(tmp_path, conn, policy, write_export(tmp_path / "first"))
    contacts = [contact(n) for n in range(11, 21)]
    contacts[0] = contact(11, email="broken")  # quarantined, but the CRM did export this contact
    events = [consent_event(1, event_id="e-late"), *[consent_event(n) for n in range(11, 21)]]
    _ingest(tmp_path, conn, policy, write_export(tmp_path / "delta", contacts=contacts, consent_events=events))
    reasons = [r[0] for r in conn.execute("select reason from raw.quarantine").fetchall()]
    assert reasons == ["email invalid"]
    assert conn.execute("select count(*) from raw.crm_consent_events").fetchall()[0][0] == 21


def test_the_ingest_records_one_raw_gate_result_per_file_under_the_load_id(tmp_path, conn, policy):
    result = _ingest(tmp_path, conn, policy, write_export(tmp_path / "export", dsr_requests=[dsr_request(1)]))
    rows = conn.execute("select run_id, subject, success from ops.gate_results where gate = 'raw_crm'").fetchall()
    assert sorted(rows) == sorted((result.load_id, name, True) for name in LOADED_COLUMNS)


def test_a_failing_raw_gate_stops_the_load_and_records_why(tmp_path, conn, policy, monkeypatch):
    """A cleaner that let a bad row through (simulated): the gate catches it and nothing is loaded."""
    from governed_marketing.crm import ingest

    strict = CLEANERS[contract.CONTACTS.name]

    def lenient(frame: pd.DataFrame):
        clean, reasons = strict(frame)
        clean.loc[clean.index[0], "lifecycle_stage"] = "vip"
        return clean, reasons

    monkeypatch.setitem(ingest.CLEANERS, contract.CONTACTS.name, lenient)
    with pytest.raises(RawCrmGateFailed, match="raw_crm gate failed for contacts.csv"):
        _ingest(tmp_path, conn, policy, write_export(tmp_path / "export"))
    assert conn.execute("select count(*) from raw.crm_contacts").fetchall()[0][0] == 0
    (row,) = conn.execute("select subject, success from ops.gate_results where gate = 'raw_crm'").fetchall()
    assert row == ("contacts.csv", False)
