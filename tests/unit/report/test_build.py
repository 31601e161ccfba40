"""The compliance report: every section, offline, no personal data, and the privacy-requests hook."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from governed_marketing.crm.ingest import ingest_export
from governed_marketing.policy import load_policy
from governed_marketing.report import build_report
from governed_marketing.report.build import SECTIONS
from governed_marketing.settings import Settings
from governed_marketing.warehouse import connect

from tests.unit.crm.test_ingest import consent_event, contact, write_export

REPO = Path(__file__).resolve().parents[3]
DISTINCT = {
    "first_name": "Zebulon",
    "last_name": "Quixotica",
    "email": "zebulon.q@example.com",
    "phone": "+49 5550 987 654",
}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "gmp", project_root=REPO)


@pytest.fixture
def loaded(settings, tmp_path) -> Settings:
    """A warehouse holding one ingested export (with a quarantined row) and its pipeline step."""
    from governed_marketing.runs import record_step

    contacts = [contact(n) for n in range(1, 11)]
    contacts[0] = contact(1, **DISTINCT)
    contacts[1] = contact(2, email="ann.at.example", first_name="Quentinella")
    events = [consent_event(n) for n in range(1, 11)] + [consent_event(11, contact_id="orphan-contact-zz")]
    export = write_export(tmp_path / "export", contacts=contacts, consent_events=events)
    conn = connect(settings.warehouse_path)
    try:
        result = ingest_export(export, conn=conn, policy=load_policy(REPO / "governance.yml"), landing_root=tmp_path)
        record_step(conn, "ingest-run-1", "ingest", "crm", result.counts())
    finally:
        conn.close()
    return settings


def _reports(settings: Settings) -> str:
    return " ".join(p.read_text(encoding="utf-8") for p in (settings.home_dir / "reports").rglob("*") if p.is_file()
                    and p.suffix in (".html", ".json"))  # fmt: skip


def test_a_report_before_any_run_has_every_section_and_says_so(settings):
    path = build_report(settings)
    html = path.read_text(encoding="utf-8")
    for section_id, title in SECTIONS:
        assert f'id="{section_id}"' in html
        assert f"<h2>{title}</h2>" in html
    assert "no run recorded yet" in html
    data = json.loads((path.parent / "report.json").read_text())
    assert data["run_summary"]["status"] == "no run recorded yet"
    assert (path.parent / "data_docs" / "index.html").is_file()


def test_the_report_opens_offline(settings):
    html = build_report(settings).read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "url(" not in html and "@import" not in html
    assert "<svg" in html or "No audience was built yet" in html


def test_the_report_shows_the_raw_gate_and_quarantine_but_no_personal_data(loaded):
    path = build_report(loaded)
    data = json.loads((path.parent / "report.json").read_text())
    gates = {(g["gate"], g["subject"]): g for g in data["gates"]}
    assert gates[("raw_crm", "contacts.csv")]["success"]
    assert gates[("raw_crm", "contacts.csv")]["data_docs"].startswith("data_docs/validations/raw_crm/")
    assert (path.parent / gates[("raw_crm", "contacts.csv")]["data_docs"]).is_file()
    reasons = {(q["file_name"], q["reason"]): q["rows"] for q in data["quarantine"]["rows"]}
    assert reasons == {("contacts.csv", "email invalid"): 1, ("consent_events.csv", "contact_id not in contacts"): 1}
    text = _reports(loaded)
    for value in (*DISTINCT.values(), "ann.at.example", "Quentinella", "person3@example.com", "orphan-contact-zz"):
        assert value not in text, value


def test_records_of_processing_come_from_the_policy_and_the_dbt_classification(settings):
    data = json.loads((build_report(settings).parent / "report.json").read_text())
    ropa = data["records_of_processing"]
    assert set(ropa) == {
        "a_controller",
        "b_purposes",
        "c_categories",
        "d_recipients",
        "e_transfers",
        "f_time_limits",
        "g_security_measures",
    }
    assert ropa["a_controller"]["name"] == "Example Shop GmbH"
    assert ropa["b_purposes"][0]["lawful_basis"] == "Art. 6(1)(a) consent"
    contacts = next(c for c in ropa["c_categories"]["personal_data"] if c["held_in"] == "crm.crm_contacts")
    assert {"email", "phone", "first_name", "notes"} <= set(contacts["direct_identifiers"])
    assert "birth_date" in contacts["quasi_identifiers"]
    assert ropa["e_transfers"] == [{"recipient": "openai", "region": "EU", "outside_eea": False, "mechanism": "SCC"}]
    assert ropa["f_time_limits"]["retention"]["outbox"] == "30d"


def test_before_the_first_ingest_the_privacy_requests_section_says_so(settings):
    html = build_report(settings).read_text(encoding="utf-8")
    assert "not reported yet" in html
    assert "once the first export is loaded" in html


def test_a_failing_privacy_provider_leaves_the_rest_of_the_report_intact(loaded):
    def broken(conn, *, policy, settings):
        raise KeyError("no such table")

    html = build_report(loaded, privacy=broken).read_text(encoding="utf-8")
    assert "could not be built (KeyError)" in html
    assert 'id="records-of-processing"' in html


def test_a_privacy_section_provider_fills_the_section(loaded):
    calls = []

    def provider(conn, *, policy, settings):
        calls.append(conn.execute("select count(*) from raw.crm_contacts").fetchall()[0][0])
        return {
            "status": "2 open requests, none overdue",
            "summary": {"open": 2, "overdue": 0},
            "tables": [
                {"title": "Requests by type", "columns": ["type", "open"], "rows": [["erasure", 1], ["access", 1]]}
            ],
            "notes": ["Due dates in calendar months."],
        }

    path = build_report(loaded, privacy=provider)
    html = path.read_text(encoding="utf-8")
    assert calls == [9]
    assert "2 open requests, none overdue" in html and "Requests by type" in html
    assert json.loads((path.parent / "report.json").read_text())["privacy_requests"]["summary"] == {
        "open": 2,
        "overdue": 0,
    }


def test_a_failed_run_is_shown_with_its_reason(settings):
    reason = "generate_campaign_content failed at generate - spring_newsletter: vendor_payload gate failed"
    html = build_report(settings, failure=reason).read_text(encoding="utf-8")
    assert "vendor_payload gate failed" in html


def test_rows_erased_from_the_quarantine_since_the_load_are_reconciled_with_a_reason(loaded):
    """The run summary's count (at load) and the quarantine table (rows held now) must agree or say why."""
    conn = connect(loaded.warehouse_path)
    try:  # what an erasure does to the person's quarantined row
        conn.execute("delete from raw.quarantine where file_name = 'contacts.csv'")
    finally:
        conn.close()
    path = build_report(loaded)
    quarantine = json.loads((path.parent / "report.json").read_text())["quarantine"]
    assert (quarantine["rows_at_load"], quarantine["rows_held"], quarantine["rows_removed_since"]) == (2, 1, 1)
    assert sum(q["rows"] for q in quarantine["rows"]) == quarantine["rows_held"]
    html = path.read_text(encoding="utf-8")
    assert "2 row(s) quarantined at load, 1 held now: 1 erased since by request" in html


def test_the_privacy_section_speaks_words_not_python_or_json(loaded):
    from governed_marketing.privacy.report import _on_time, privacy_section

    html = build_report(loaded, privacy=privacy_section).read_text(encoding="utf-8")
    section = html[html.index('id="privacy-requests"') :]
    assert "audit_head_seq" not in section and "{&#34;" not in section and '{"' not in section
    assert "No purge has run since" in section and "gmp purge --dry-run" in section
    assert "No request is open." in section
    assert "audit log head (sequence number)" in section
    assert not re.search(r">\s*(True|False)\s*<", section)
    assert _on_time({"on_time": True}) == "yes"
    assert _on_time({"on_time": False, "days_late": 3}) == "no (3 days late)"


def test_a_boolean_left_in_a_privacy_table_reads_as_a_word(loaded):
    def provider(conn, *, policy, settings):
        table = {"title": "Closed", "columns": ["request", "on time"], "rows": [["r1", True], ["r2", False]]}
        return {"status": "ok", "tables": [table]}

    html = build_report(loaded, privacy=provider).read_text(encoding="utf-8")
    assert "<td>yes</td>" in html and "<td>no</td>" in html
    assert not re.search(r">\s*(True|False)\s*<", html)


def test_a_dag_run_keeps_its_own_report_and_becomes_the_latest(loaded):
    from governed_marketing.report.build import publish_run_report

    # governance.yml's run_reports: a folder far older than max_age goes when a run of its DAG writes its report.
    stale = loaded.home_dir / "reports" / "runs" / "ingest_crm" / "scheduled__2020-01-01T00:00:00+00:00"
    stale.mkdir(parents=True)
    (stale / "index.html").write_text("<html></html>", encoding="utf-8")
    os.utime(stale / "index.html", (0, 0))
    first = publish_run_report("ingest_crm", "manual__2026-12-07T01:00:00+00:00", settings=loaded)
    assert not stale.exists()
    second = publish_run_report(
        "purge_expired_data", "scheduled__x", failure="purge failed - disk full", settings=loaded
    )
    reports = loaded.home_dir / "reports"
    assert first == reports / "runs" / "ingest_crm" / "manual__2026-12-07T01:00:00+00:00" / "index.html"
    assert first.is_file() and second.is_file() and (first.parent / "data_docs" / "index.html").is_file()
    assert "disk full" not in first.read_text(encoding="utf-8")
    assert (reports / "index.html").read_text(encoding="utf-8") == second.read_text(encoding="utf-8")
    assert json.loads((reports / "report.json").read_text())["run_summary"]["failure"] == "purge failed - disk full"
    assert (reports / "data_docs" / "index.html").is_file()
