"""Each retention rule removes exactly what is older than its period; a dry run removes nothing."""

from __future__ import annotations

import os
import shutil
from datetime import datetime

import pytest
from governed_marketing.privacy import audit
from governed_marketing.privacy.retention import purge

from tests.unit.privacy.conftest import write_export

NOW = datetime(2027, 6, 1, 12, 0, 0)


def _age(path, when: datetime) -> None:
    stamp = when.timestamp()
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (stamp, stamp))


def _state(home) -> dict:
    tables = [
        "raw.crm_contacts",
        "raw.crm_consent_events",
        "raw.crm_activity",
        "ops.generated_content",
        "ops.audit_log",
    ]
    with home.connect(read_only=True) as conn:
        rows = {t: sorted(map(repr, conn.execute(f"select * from {t}").fetchall())) for t in tables}
    files = sorted(
        str(p.relative_to(home.path)) for p in home.path.rglob("*") if p.is_file() and "receipts" not in p.parts
    )
    return {"tables": rows, "files": files}


@pytest.fixture
def aged(home, tmp_path):
    """An old load (2027-04-01: older than 30 days at NOW) next to a recent one, and aged files and rows."""
    with home.connect() as conn:
        conn.execute("update ops.crm_loads set loaded_at = '2027-04-01'").fetchall()
        # Carol's contact is inactive: not updated, no activity for more than 24 months.
        conn.execute("update raw.crm_contacts set updated_at = '2025-01-01' where contact_id = 'c004'").fetchall()
        conn.execute("update raw.crm_activity set occurred_at = '2025-01-02' where contact_id = 'c004'").fetchall()
        conn.execute(
            """
            create table if not exists ops.generated_content (
                campaign_id varchar, unit_id varchar, prompt_version varchar, provider varchar, model varchar,
                language varchar, subject varchar, preheader varchar, body varchar, input_tokens bigint,
                output_tokens bigint, vendor_request_id varchar, generated_at timestamp
            )
            """
        ).fetchall()
        conn.execute(
            "insert into ops.generated_content values "
            "('c', 'old', 'v1', 'offline', 'm', 'de', 's', null, 'b', 0, 0, null, '2027-02-01'), "
            "('c', 'new', 'v1', 'offline', 'm', 'de', 's', null, 'b', 0, 0, null, '2027-05-20')"
        ).fetchall()
        for at in (datetime(2020, 1, 1), datetime(2021, 7, 1), datetime(2027, 5, 1)):
            audit.record(conn, actor="gmp-cli", action="ingest", purpose="crm_ingest", counts={"rows": 1}, at=at)
    recent = write_export(tmp_path / "recent", people=("alice",))
    (recent / "contacts.csv").write_text(
        (recent / "contacts.csv").read_text().replace("2026-01-01T09", "2027-05-01T09")
    )
    recent_load = home.ingest(recent, now=datetime(2027, 5, 25))
    old_outbox = next((home.path / "outbox").rglob("*.jsonl"))
    new_outbox = old_outbox.with_name("newsletter_v2-test.jsonl")
    shutil.copy(old_outbox, new_outbox)
    _age(old_outbox, datetime(2027, 4, 1))
    _age(new_outbox, datetime(2027, 5, 30))
    for name, when in (("dsr-old", datetime(2027, 3, 1)), ("dsr-new", datetime(2027, 5, 28))):
        (home.path / "exports" / name).mkdir(parents=True)
        (home.path / "exports" / name / "subject.json").write_text("{}")
        _age(home.path / "exports" / name, when)
    return recent_load.load_id


def test_a_dry_run_reports_what_would_go_and_removes_nothing(home, aged):
    before = _state(home)
    result = purge(settings=home.settings, policy=home.policy, now=NOW, dry_run=True)
    after = _state(home)
    assert after["files"] == before["files"]
    assert {t: v for t, v in after["tables"].items() if t != "ops.audit_log"} == {
        t: v for t, v in before["tables"].items() if t != "ops.audit_log"
    }
    assert len(after["tables"]["ops.audit_log"]) == len(before["tables"]["ops.audit_log"]) + 1  # the dry run, audited
    rules = {r.rule: r.counts for r in result.rules}
    assert rules["raw_crm"]["landing directories"] == 1
    assert rules["outbox"] == {"outbox files": 1} and rules["exports"] == {"exports directories": 1}


def test_the_real_purge_removes_exactly_what_each_rule_says(home, aged):
    dry = {r.rule: r.counts for r in purge(settings=home.settings, policy=home.policy, now=NOW, dry_run=True).rules}
    real = {r.rule: r.counts for r in purge(settings=home.settings, policy=home.policy, now=NOW).rules}
    assert real == dry  # the dry run predicted exactly this
    # raw_crm (30d): the first load's rows and landing archive are gone; the recent load stays.
    landing = sorted(p.name for p in (home.path / "landing").iterdir())
    assert landing == [aged]
    with home.connect(read_only=True) as conn:
        contacts = conn.execute("select contact_id, load_id from raw.crm_contacts").fetchall()
        assert contacts == [("c001", aged)]  # Alice was re-sent in the recent load, so she stays
        assert conn.execute("select unit_id from ops.generated_content").fetchall() == [("new",)]
        assert audit.verify(conn).ok
        audit_times = [r[0] for r in conn.execute("select recorded_at from ops.audit_log order by seq").fetchall()]
        runs = conn.execute("select count(*), count(distinct rule) from ops.retention_runs").fetchall()[0]
    # Events keep the load that first brought them (a re-sent, unchanged event is not reloaded): all 8 of the
    # old load go, Alice's too; the consent history lives on in the incremental dbt model.
    assert real["raw_crm"]["raw.crm_contacts"] == 3 and real["raw_crm"]["raw.crm_consent_events"] == 8
    assert real["generated_content"] == {"ops.generated_content": 1}
    # audit_log: the policy says 6y; the 2020 entry (7.4 years old) goes, the 2021 one (5.9 years) stays.
    assert real["audit_log"] == {"ops.audit_log": 1}
    assert min(audit_times) == datetime(2021, 7, 1)
    assert [p.name for p in (home.path / "outbox").rglob("*.jsonl")] == ["newsletter_v2-test.jsonl"]
    assert [p.name for p in (home.path / "exports").iterdir()] == ["dsr-new"]
    assert runs == (12, 6)  # a dry run and a real run, six rules each, as evidence


def test_inactive_contacts_are_removed_from_every_table_that_holds_them(home):
    with home.connect() as conn:
        conn.execute("update raw.crm_contacts set updated_at = '2024-01-01' where contact_id = 'c004'").fetchall()
        conn.execute("update raw.crm_activity set occurred_at = '2024-01-02' where contact_id = 'c004'").fetchall()
        conn.execute(
            "update raw.crm_consent_events set occurred_at = '2024-01-03' where contact_id = 'c004'"
        ).fetchall()
        conn.execute("update raw.crm_contacts set updated_at = '2024-01-01' where contact_id = 'c001'").fetchall()
        conn.execute("create schema if not exists marts").fetchall()
        conn.execute(
            "create table marts.loyalty_scores as select contact_id, 1 as score from raw.crm_contacts"
        ).fetchall()
    result = purge(settings=home.settings, policy=home.policy, now=datetime(2026, 6, 1))
    inactive = next(r for r in result.rules if r.rule == "inactive_contacts")
    assert inactive.counts["contacts"] == 1  # c001 had activity in 2026-03: still active
    with home.connect(read_only=True) as conn:
        assert {r[0] for r in conn.execute("select contact_id from raw.crm_contacts").fetchall()} == {
            "c001",
            "c002",
            "c003",
        }
        assert conn.execute("select count(*) from marts.loyalty_scores where contact_id = 'c004'").fetchall()[0][0] == 0
        assert (
            conn.execute("select count(*) from raw.crm_consent_events where contact_id = 'c004'").fetchall()[0][0] == 0
        )


def test_a_recent_consent_grant_keeps_a_contact_whose_other_traces_are_old(home):
    """Old updates and activity, but a grant within the period: in the audience, not inactive."""
    with home.connect() as conn:
        for contact_id in ("c001", "c004"):  # both: updated and active only in 2024
            conn.execute("update raw.crm_contacts set updated_at = '2024-01-01' where contact_id = ?", [contact_id])
            conn.execute("update raw.crm_activity set occurred_at = '2024-01-02' where contact_id = ?", [contact_id])
        # Carol (c004) consented long ago; Alice (c001) granted again last month (inside the 24-month period).
        conn.execute("update raw.crm_consent_events set occurred_at = '2024-01-03' where contact_id = 'c004'")
        conn.execute("update raw.crm_consent_events set occurred_at = '2026-05-01' where contact_id = 'c001'")
    result = purge(settings=home.settings, policy=home.policy, now=datetime(2026, 6, 1), dry_run=True)
    inactive = next(r for r in result.rules if r.rule == "inactive_contacts")
    assert inactive.counts["contacts"] == 1
    purge(settings=home.settings, policy=home.policy, now=datetime(2026, 6, 1))
    with home.connect(read_only=True) as conn:
        left = {r[0] for r in conn.execute("select contact_id from raw.crm_contacts").fetchall()}
    assert "c001" in left and "c004" not in left
