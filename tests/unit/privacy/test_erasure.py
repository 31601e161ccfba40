"""Erasure reaches every table and file, physically, and proves it; the receipt holds no personal data."""

from __future__ import annotations

import json
import subprocess

from governed_marketing.dbt import manifest_path
from governed_marketing.privacy import dsr
from governed_marketing.privacy.process import process_pending

from tests.unit.privacy.conftest import PEOPLE, email_of, identifiers


def _everything(home) -> tuple[str, bytes]:
    """Every varchar value of every table, and every byte of every file under GMP_HOME."""
    with home.connect(read_only=True) as conn:
        tables = conn.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type = 'VARCHAR' and table_catalog = current_database()"
        ).fetchall()
        values = []
        for schema, table, column in tables:
            if (schema, table) in {(s, t) for s, t, _ in tables}:
                values += [str(r[0]) for r in conn.execute(f'select "{column}" from "{schema}"."{table}"').fetchall()]
    files = b"\n".join(p.read_bytes() for p in sorted(home.path.rglob("*")) if p.is_file())
    return "\n".join(values), files


def test_erasure_leaves_no_trace_of_the_person_anywhere_and_the_receipt_holds_none(home):
    with home.connect() as conn:
        # A model added by an analyst tomorrow: found through the manifest's meta.subject_column.
        conn.execute("create schema if not exists marts").fetchall()
        conn.execute(
            "create table marts.loyalty_scores as select contact_id, 0.5 as score from raw.crm_contacts"
        ).fetchall()
        request_id = dsr.submit(conn, "erasure", email_of("alice"), policy=home.policy, key=home.key)
    tables_before, files_before = _everything(home)
    assert email_of("alice") in tables_before.lower() and email_of("alice").encode() in files_before.lower()

    result = process_pending(settings=home.settings, policy=home.policy)

    assert result["erasure"] == [request_id]
    tables, files = _everything(home)
    for value in identifiers("alice"):
        assert value.lower() not in tables.lower(), f"a table still holds {value!r}"
        assert value.lower().encode() not in files.lower(), f"a file under GMP_HOME still holds {value!r}"
    grep = subprocess.run(["grep", "-a", "-i", "-c", "wexford", str(home.settings.warehouse_path)], capture_output=True)
    assert grep.stdout.strip() == b"0"  # the old rows are not lingering in freed blocks of the file
    # Carol's note mentioned Alice: the mention is redacted, Carol stays.
    for value in identifiers("carol"):
        assert value.lower() in tables.lower()
    assert "[erased]" in tables
    with home.connect(read_only=True) as conn:
        assert conn.execute("select count(*) from marts.loyalty_scores").fetchall()[0][0] == 3
        assert conn.execute("select count(*) from raw.crm_contacts").fetchall()[0][0] == 3
        request = dsr.get(conn, request_id)
    assert request.status == "done" and request.outcome["verified"]

    receipt_text = (home.path / "receipts" / f"{request_id}.json").read_text(encoding="utf-8")
    receipt = json.loads(receipt_text)
    for value in identifiers("alice"):
        assert value.lower() not in receipt_text.lower()
    assert "@" not in receipt_text
    assert receipt["verification"]["verified"] is True
    assert receipt["verification"]["hits"] == {"email": 0, "phone": 0, "name": 0}
    removed = {s["store"]: s["rows"] for s in receipt["stores"] if s["action"] == "rows removed"}
    assert removed["raw.crm_contacts"] == 1 and removed["raw.crm_consent_events"] == 2
    assert removed["marts.loyalty_scores"] == 1
    assert any(store.startswith("landing/") and store.endswith("contacts.csv") for store in removed)
    assert any(store.startswith("outbox/") for store in removed)
    assert {r["recipient"] for r in receipt["recipients_to_notify"]} >= {"openai"}
    assert receipt["vendor_side"][0]["held"] == "none"
    assert any("loyalty_scores" in note for note in receipt["notes"])  # found without a manifest entry: said so


def test_every_contact_row_sharing_the_email_is_erased(home):
    with home.connect() as conn:
        dsr.submit(conn, "erasure", "bob.quill@PRIVACY-TEST.example", policy=home.policy, key=home.key)
    process_pending(settings=home.settings, policy=home.policy)
    with home.connect(read_only=True) as conn:
        left = {r[0] for r in conn.execute("select contact_id from raw.crm_contacts").fetchall()}
    assert left == {"c001", "c004"}
    outbox = "".join(p.read_text() for p in (home.path / "outbox").rglob("*.jsonl"))
    assert "c002" not in outbox and PEOPLE["bob"]["first_name"] not in outbox and "c001" in outbox


def test_the_stores_holding_people_come_from_the_dbt_manifest(home):
    from governed_marketing.privacy.stores import manifest_nodes

    marked = {
        n["name"] for n in manifest_nodes(manifest_path(home.settings)) if (n.get("meta") or {}).get("subject_column")
    }
    assert {"crm_contacts", "int_contacts_profiled", "campaign_audience", "campaign_recipients"} <= marked


def test_the_receipt_holds_the_audit_head_that_verify_checks_the_table_against(home):
    from governed_marketing.privacy import audit

    with home.connect() as conn:
        audit.record(conn, actor="gmp-cli", action="ingest", purpose="crm_ingest", counts={"rows": 4})
        request_id = dsr.submit(conn, "erasure", email_of("alice"), policy=home.policy, key=home.key)
    process_pending(settings=home.settings, policy=home.policy)
    receipt = json.loads((home.path / "receipts" / f"{request_id}.json").read_text(encoding="utf-8"))
    head = receipt["audit_head"]
    assert head["warehouse"] == "warehouse.duckdb" and len(head["hash"]) == 64
    with home.connect() as conn:
        assert (
            conn.execute("select hash from ops.audit_log where seq = ?", [head["seq"]]).fetchall()[0][0] == head["hash"]
        )
        conn.execute("delete from ops.audit_log where seq >= ?", [head["seq"]]).fetchall()
    audit.heads_path(home.path).unlink()  # the receipt alone still tells
    with home.connect(read_only=True) as conn:
        result = audit.verify(conn)
    assert not result.ok and f"receipts/{request_id}.json" in result.reason


def test_a_mention_is_redacted_before_the_one_rewrite_of_the_warehouse_file(home, monkeypatch):
    """Carol's note mentions Alice: the table scan runs before the rewrite, so the redacted note is
    not left in the file's freed blocks and the warehouse is rewritten once, not twice."""
    from governed_marketing import warehouse

    rewrites = []
    real = warehouse.erase_physically
    monkeypatch.setattr(warehouse, "erase_physically", lambda *a, **k: (rewrites.append(a), real(*a, **k))[1])
    with home.connect() as conn:
        request_id = dsr.submit(conn, "erasure", email_of("alice"), policy=home.policy, key=home.key)

    result = process_pending(settings=home.settings, policy=home.policy)

    assert result["erasure"] == [request_id] and len(rewrites) == 1
    receipt = json.loads((home.path / "receipts" / f"{request_id}.json").read_text(encoding="utf-8"))
    assert any(s["action"] == "mentions redacted in other records" for s in receipt["stores"])
    data = home.settings.warehouse_path.read_bytes().lower()
    for value in identifiers("alice"):
        assert value.lower().encode() not in data, f"the warehouse file still holds {value!r}"
