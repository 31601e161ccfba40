"""Erased and objecting people stay out: keyed HMACs, dropped at the ingest door and counted."""

from __future__ import annotations

import hashlib
import hmac
import shutil
from datetime import datetime

from governed_marketing.privacy import suppression

from tests.unit.privacy.conftest import PEOPLE, email_of


def test_the_subject_reference_is_a_keyed_hmac_of_the_normalized_email():
    key = b"k" * 32
    ref = suppression.subject_ref(key, "  Ann.Lee@Example.COM ")
    assert ref == suppression.subject_ref(key, "ann.lee@example.com")
    assert ref == hmac.new(key, b"gmp-subject\x00ann.lee@example.com", hashlib.sha256).hexdigest()
    assert ref != hashlib.sha256(b"ann.lee@example.com").hexdigest()  # a plain hash is reversible by lookup
    assert ref != suppression.subject_ref(b"x" * 32, "ann.lee@example.com")  # useless without the key
    assert ref != suppression.contact_ref(key, "ann.lee@example.com")  # domains are separated


def test_a_suppressed_person_is_dropped_at_the_door_counted_and_not_archived(home, tmp_path):
    with home.connect() as conn:
        suppression.suppress(
            conn, key=home.key, email=email_of("bob"), contact_ids=["c002", "c003"], reason="erasure", request_id="r1"
        )
        conn.execute("delete from raw.crm_contacts where contact_id in ('c002', 'c003')").fetchall()
        conn.execute("delete from raw.crm_consent_events where contact_id in ('c002', 'c003')").fetchall()
        conn.execute("delete from raw.crm_activity where contact_id in ('c002', 'c003')").fetchall()
    resent = tmp_path / "resent"
    shutil.copytree(home.export, resent)
    with (resent / "contacts.csv").open("a", encoding="utf-8") as handle:
        handle.write("\n")  # the same rows, sent again (a new file, so it is really loaded)
    result = home.ingest(resent, now=datetime(2026, 11, 20))
    assert not result.already_loaded
    with home.connect(read_only=True) as conn:
        contacts = {r[0] for r in conn.execute("select contact_id from raw.crm_contacts").fetchall()}
        events = {r[0] for r in conn.execute("select contact_id from raw.crm_consent_events").fetchall()}
        quarantined = conn.execute("select count(*) from raw.quarantine").fetchall()[0][0]
        dropped = suppression.door_counts(conn, result.load_id)
    assert contacts == {"c001", "c004"} and events == {"c001", "c004"}
    assert quarantined == 0  # not quarantined either: the rows never entered
    assert dropped == {"activity.csv": 2, "consent_events.csv": 4, "contacts.csv": 2}
    archived = "".join(p.read_text(encoding="utf-8") for p in (home.path / "landing" / result.load_id).iterdir())
    assert "bob.quill" not in archived.lower() and PEOPLE["bob"]["last_name"] not in archived
    assert "c002" not in archived and PEOPLE["alice"]["last_name"] in archived


def test_the_door_is_open_while_nobody_is_suppressed(home, tmp_path):
    resent = tmp_path / "resent"
    shutil.copytree(home.export, resent)
    with (resent / "contacts.csv").open("a", encoding="utf-8") as handle:
        handle.write("\n")
    result = home.ingest(resent, now=datetime(2026, 11, 20))
    with home.connect(read_only=True) as conn:
        assert suppression.door_counts(conn, result.load_id) == {}
        assert conn.execute("select count(*) from raw.crm_contacts").fetchall()[0][0] == 4


def test_an_erased_persons_email_in_someone_elses_notes_is_redacted_at_the_door(home, tmp_path):
    with home.connect() as conn:
        suppression.suppress(
            conn, key=home.key, email=email_of("alice"), contact_ids=["c001"], reason="erasure", request_id="r1"
        )
    resent = tmp_path / "resent"
    shutil.copytree(home.export, resent)
    contacts = (resent / "contacts.csv").read_text(encoding="utf-8")
    (resent / "contacts.csv").write_text(contacts.replace("2026-01-01T09:00:00Z", "2026-06-01T09:00:00Z"))
    result = home.ingest(resent, now=datetime(2026, 11, 20))
    with home.connect(read_only=True) as conn:
        note = conn.execute("select notes from raw.crm_contacts where contact_id = 'c004'").fetchall()[0][0]
    assert "[erased]" in note and email_of("alice") not in note.lower()  # Carol's newer row came in, redacted
    archived = (home.path / "landing" / result.load_id / "contacts.csv").read_text(encoding="utf-8").lower()
    assert email_of("alice") not in archived and "carol.nyx" in archived
