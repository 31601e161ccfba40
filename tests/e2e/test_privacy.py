"""Privacy requests end to end: `gmp run`, then `gmp dsr submit/process` as a user runs them.

The generated export gets recognizable people appended: Quenelda Zyxwarth (two contact rows sharing
one email written differently, a phone, her email in her own notes), a friend whose note mentions
her email, and Oberon Objectwood who objects. After her erasure, no table and no file under
GMP_HOME (the DuckDB file and Airflow's SQLite database byte by byte) holds her email, phone or
name; the receipt holds nothing personal; the same export sent again does not bring her back.
Two `gmp run` passes in all (about a minute and a half each on two cores); the rest is CLI calls.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import stat
from pathlib import Path

import duckdb
import pytest
from governed_marketing.crm import contract
from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF

from tests.e2e.conftest import Run, contact_identifiers, run_gmp

pytestmark = pytest.mark.e2e

AS_OF = SAMPLE_AS_OF.isoformat()
PERSON_EMAIL = "quenelda.zyxwarth@erasure-test.example"
PERSON = {
    "email": PERSON_EMAIL,
    "email as written": "Quenelda.Zyxwarth@Erasure-Test.example",
    "phone": "+43 664 777 8899",
    "phone digits": "436647778899",
    "first name": "Quenelda",
    "last name": "Zyxwarth",
}
FRIEND_EMAIL = "friedrich.freundlich@erasure-test.example"
OBJECTOR_EMAIL = "oberon.objectwood@erasure-test.example"


def _append(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("a", encoding="utf-8", newline="") as handle:
        csv.DictWriter(handle, fieldnames=columns, lineterminator="\n").writerows(rows)


def seeded_export(sample_export: Path, target: Path) -> Path:
    """The generated export plus the recognizable people, all eligible for the campaign."""
    shutil.copytree(sample_export, target)
    people = [
        ("990001", PERSON["email as written"], "Quenelda", "Zyxwarth", PERSON["phone"], f"Invoices to {PERSON_EMAIL}"),
        ("990002", f"  {PERSON_EMAIL.upper()} ", "Quenelda", "Zyxwarth", "", ""),
        ("990003", FRIEND_EMAIL, "Friedrich", "Freundlich", "", f"Referred by {PERSON['email as written']}"),
        ("990004", OBJECTOR_EMAIL, "Oberon", "Objectwood", "", ""),
    ]
    contacts, events, activity = [], [], []
    for i, (contact_id, email, first, last, phone, notes) in enumerate(people):
        contacts.append(
            {
                "contact_id": contact_id,
                "email": email,
                "first_name": first,
                "last_name": last,
                "phone": phone,
                "birth_date": "1985-04-12",
                "country": "AT",
                "language": "de",
                "city": "Wien",
                "lifecycle_stage": "customer",
                "interests": "hiking;books",
                "notes": notes,
                "created_at": "2025-03-01T10:00:00Z",
                "updated_at": f"2026-10-0{i + 1}T10:00:00Z",
            }
        )
        for consent in ("email_marketing", "ai_personalization"):
            events.append(
                {
                    "event_id": f"seed-{contact_id}-{consent}",
                    "contact_id": contact_id,
                    "purpose": consent,
                    "action": "grant",
                    "source": "signup_form",
                    "notice_version": "v3",
                    "occurred_at": "2026-09-01T10:00:00Z",
                }
            )
        activity.append(
            {
                "event_id": f"seed-{contact_id}-buy",
                "contact_id": contact_id,
                "event_type": "purchase",
                "product_category": "outdoor",
                "amount": "120.00",
                "occurred_at": "2026-09-15T10:00:00Z",
            }
        )
    _append(target / contract.CONTACTS.name, contract.CONTACTS.columns, contacts)
    _append(target / contract.CONSENT_EVENTS.name, contract.CONSENT_EVENTS.columns, events)
    _append(target / contract.ACTIVITY.name, contract.ACTIVITY.columns, activity)
    return target


def file_hits(home: Path, values: dict[str, str]) -> list[str]:
    """Every file under GMP_HOME, byte by byte, case-insensitively: which (file, identifier) pairs match."""
    needles = {kind: value.lower().encode() for kind, value in values.items()}
    hits = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes().lower()
        except FileNotFoundError:  # SQLite's -shm/-wal files come and go as connections close
            continue
        hits += [f"{path.relative_to(home)}: {kind}" for kind, needle in needles.items() if needle in data]
    return hits


def table_hits(home: Path, values: dict[str, str]) -> list[str]:
    """Every text column of every table: the warehouse (after CHECKPOINT) and Airflow's metadata DB."""
    hits = []
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        columns = conn.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type in ('VARCHAR', 'JSON') and table_catalog = current_database()"
        ).fetchall()
        for schema, table, column in columns:
            for kind, value in values.items():
                n = conn.execute(
                    f'select count(*) from "{schema}"."{table}" where contains(lower("{column}"::varchar), ?)',
                    [value.lower()],
                ).fetchall()[0][0]
                if n:
                    hits.append(f"{schema}.{table}.{column}: {kind}")
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        for (table,) in db.execute("select name from sqlite_master where type = 'table'").fetchall():
            for column in [r[1] for r in db.execute(f'pragma table_info("{table}")')]:
                for kind, value in values.items():
                    n = db.execute(
                        f'select count(*) from "{table}" where instr(lower(cast("{column}" as text)), ?) > 0',
                        [value.lower()],
                    ).fetchone()[0]
                    if n:
                        hits.append(f"airflow.{table}.{column}: {kind}")
    return hits


def raw_contacts(home: Path, email: str) -> int:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(
            "select count(*) from raw.crm_contacts where email_normalized = ? or contact_id in ('990001', '990002')",
            [email],
        ).fetchall()[0][0]


def outbox_emails(run: Run) -> set[str]:
    return {row["email"] for row in run.outbox_rows()}


@pytest.fixture(scope="module")
def privacy(tmp_path_factory, sample_export):
    """One GMP_HOME: a run, an access request, an erasure and an objection, then the export sent again."""
    base = tmp_path_factory.mktemp("gmp-privacy")
    home = base / "home"
    export = seeded_export(sample_export, base / "export")
    state: dict = {"home": home, "export": export}

    first = run_gmp(home, "run", "--crm", str(export), "--as-of", AS_OF)
    assert first.ok, first.result.stdout + first.result.stderr
    state["first"] = first
    state["before_erasure"] = {"files": file_hits(home, PERSON), "recipients": outbox_emails(first)}

    access = run_gmp(home, "dsr", "submit", "--type", "access", "--email", PERSON["email as written"])
    assert access.ok, access.result.stderr
    state["access_id"] = access.result.stdout.strip()
    # Back-dated passes throughout: the requests are received now, weeks after AS_OF, and a right never
    # waits for the clock (the as-of fixes eligibility only).
    processed = run_gmp(home, "dsr", "process", "--as-of", AS_OF)
    assert processed.ok, processed.result.stdout + processed.result.stderr
    export_dir = home / "exports" / state["access_id"]
    state["access_export"] = {p.name: p.read_text(encoding="utf-8") for p in export_dir.iterdir()}

    erasure = run_gmp(home, "dsr", "submit", "--type", "erasure", "--email", f"  {PERSON_EMAIL.upper()}")
    objection = run_gmp(home, "dsr", "submit", "--type", "objection", "--email", OBJECTOR_EMAIL)
    assert erasure.ok and objection.ok, erasure.result.stderr + objection.result.stderr
    state["erasure_id"] = erasure.result.stdout.strip()
    state["objection_id"] = objection.result.stdout.strip()
    state["process"] = run_gmp(home, "dsr", "process", "--as-of", AS_OF)
    assert state["process"].ok, state["process"].result.stdout + state["process"].result.stderr
    state["after_erasure"] = {"files": file_hits(home, PERSON), "tables": table_hits(home, PERSON)}
    state["list"] = run_gmp(home, "dsr", "list")

    resent = base / "export-again"
    shutil.copytree(export, resent)
    with (resent / contract.CONTACTS.name).open("a", encoding="utf-8") as handle:
        handle.write("\n")  # byte-different, so the ingest really loads it instead of skipping a known export
    # The same back-dated as-of: the requests above were received after it, and still count.
    second = run_gmp(home, "run", "--crm", str(resent), "--as-of", AS_OF)
    assert second.ok, second.result.stdout + second.result.stderr
    state["second"] = second
    state["after_rerun"] = {"files": file_hits(home, PERSON), "tables": table_hits(home, PERSON)}
    state["audit"] = run_gmp(home, "audit", "verify")
    return state


def test_the_seeded_people_were_recipients_before_their_requests(privacy):
    recipients = privacy["before_erasure"]["recipients"]
    assert {PERSON_EMAIL, FRIEND_EMAIL, OBJECTOR_EMAIL} <= recipients
    hits = privacy["before_erasure"]["files"]
    assert any(h.startswith("landing/") for h in hits) and any(h.startswith("outbox/") for h in hits)  # the scan bites


def test_the_access_export_holds_the_persons_data_and_nobody_elses(privacy, sample_export):
    export = privacy["access_export"]
    assert {"subject.json", "contacts.csv", "consent_history.csv", "activity.csv", "messages.csv"} <= set(export)
    document = json.loads(export["subject.json"])
    assert {c["contact_id"] for c in document["contacts"]} == {"990001", "990002"}
    assert len(document["consent_history"]) == 4 and document["messages"][0]["email"] == PERSON_EMAIL
    text = "\n".join(export.values()).lower()
    others = contact_identifiers(sample_export)["email"] | {FRIEND_EMAIL, OBJECTOR_EMAIL}
    assert not [email for email in others if email in text]
    assert PERSON["phone"].lower() in text and "zyxwarth" in text


def test_after_erasure_no_file_and_no_table_holds_the_persons_email_phone_or_name(privacy):
    assert privacy["after_erasure"]["files"] == []
    assert privacy["after_erasure"]["tables"] == []


def test_the_receipt_records_what_was_done_and_holds_no_personal_data(privacy):
    home = privacy["home"]
    text = (home / "receipts" / f"{privacy['erasure_id']}.json").read_text(encoding="utf-8")
    for value in PERSON.values():
        assert value.lower() not in text.lower()
    assert "@" not in text
    receipt = json.loads(text)
    assert receipt["verification"]["verified"] is True
    assert receipt["verification"]["files_scanned"] > 0 and receipt["verification"]["tables_scanned"] > 10
    stores = {s["store"] for s in receipt["stores"]}
    assert {"raw.crm_contacts", "raw.crm_consent_events", "raw.crm_activity"} <= stores
    assert any(s.startswith("outbox/") for s in stores) and any(s.startswith("landing/") for s in stores)
    assert any(s.startswith("intermediate.") for s in stores) and any(s.startswith("marts.") for s in stores)
    assert f"exports/{privacy['access_id']}" in stores  # her own access export went with her
    assert receipt["contact_records_found"] == 2
    recipients = {r["recipient"]: r for r in receipt["recipients_to_notify"]}
    assert (
        "openai" in recipients and recipients["email service provider (receives the outbox)"]["received_personal_data"]
    )


def test_dsr_list_shows_requests_by_id_and_status_without_emails(privacy):
    out = privacy["list"].result.stdout
    assert privacy["list"].ok
    assert privacy["erasure_id"] in out and privacy["objection_id"] in out
    assert "@" not in out


def test_the_same_export_sent_again_does_not_bring_the_erased_person_back(privacy):
    home = privacy["home"]
    assert raw_contacts(home, PERSON_EMAIL) == 0
    recipients = outbox_emails(privacy["second"])
    assert PERSON_EMAIL not in recipients
    assert OBJECTOR_EMAIL not in recipients  # objection: suppressed for good
    assert FRIEND_EMAIL in recipients  # whoever merely mentioned her still receives
    assert privacy["after_rerun"]["files"] == []
    assert privacy["after_rerun"]["tables"] == []
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        dropped = dict(
            conn.execute("select file_name, sum(rows_dropped) from ops.suppression_door group by 1").fetchall()
        )
    assert dropped["contacts.csv"] >= 3  # her two rows and the objector's, counted at the door


def test_the_audit_log_chain_verifies_after_everything(privacy):
    assert privacy["audit"].ok, privacy["audit"].result.stderr
    assert "audit log intact" in privacy["audit"].result.stdout


def test_back_dated_dsr_process_answered_the_requests_received_after_its_as_of(privacy):
    out = privacy["process"].result.stdout
    assert "Answered 2 request(s)" in out, out
    assert privacy["erasure_id"] in out and privacy["objection_id"] in out


def _mode_if_there(path: Path) -> int | None:
    """lstat's mode, or None for a file gone since the listing (SQLite drops airflow.db-wal on its last close)."""
    try:
        return path.lstat().st_mode
    except FileNotFoundError:
        return None


def test_nothing_under_gmp_home_is_readable_by_other_users(privacy):
    home = privacy["home"]
    modes = {path: _mode_if_there(path) for path in [home, *home.rglob("*")]}
    readable = [
        f"{path.relative_to(home)} {mode & 0o777:04o}"
        for path, mode in modes.items()
        if mode is not None and not stat.S_ISLNK(mode) and mode & 0o077
    ]
    assert readable == []  # warehouse, landing, outbox, exports, receipts, logs, airflow.db: owner-only
    assert "recorded heads match" in privacy["audit"].result.stdout  # verified against heads.jsonl and receipts
