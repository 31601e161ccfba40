"""The audit log is hash-chained under a key: any edit, removal, insertion, truncation or re-hashing is
found, and named by its row."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from governed_marketing.privacy import audit
from governed_marketing.warehouse import connect

KEY = b"audit-test-key-0123456789abcdef-0123456789"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """GMP_HOME for the audit key and heads.jsonl; the warehouse file inside it, as in a real run."""
    from governed_marketing.settings import reset_settings

    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GMP_AUDIT_KEY", KEY.decode())
    reset_settings()
    (tmp_path / "home").mkdir()
    yield tmp_path / "home"
    reset_settings()


@pytest.fixture
def conn(home):
    connection = connect(home / "warehouse.duckdb")
    start = datetime(2020, 1, 1)
    for i in range(1, 8):
        audit.record(
            connection,
            actor=f"manual__run-{i}",
            action="ingest" if i % 2 else "dsr:erasure",
            purpose="crm_ingest",
            counts={"rows": i * 10, "request_id": f"dsr-{i:03d}"},
            at=start + timedelta(days=365 * i // 2),
        )
    yield connection
    connection.close()


def _rehash_from(conn, first: int, key: bytes | None) -> None:
    """What a forger does after an edit: recompute every hash from `first` on (with `key`, or plain SHA-256)."""
    rows = conn.execute("select * from ops.audit_log where seq >= ? order by seq", [first]).fetchall()
    prev = conn.execute("select hash from ops.audit_log where seq = ?", [first - 1]).fetchall()
    prev = prev[0][0] if prev else audit.GENESIS
    for seq, at, actor, action, purpose, counts_json, _, _ in rows:
        digest = audit.row_hash(seq, at, actor, action, purpose, counts_json, prev, key)
        conn.execute("update ops.audit_log set prev_hash = ?, hash = ? where seq = ?", [prev, digest, seq]).fetchall()
        prev = digest


def test_an_untouched_chain_verifies_and_reports_its_head(conn):
    result = audit.verify(conn)
    assert result.ok and result.rows == 7 and result.head_seq == 7
    assert len(result.head_hash) == 64


def test_editing_one_row_is_found_at_that_row(conn):
    conn.execute("update ops.audit_log set counts_json = '{\"rows\": 9999}' where seq = 4").fetchall()
    result = audit.verify(conn)
    assert not result.ok
    assert result.broken_seq == 4
    assert "edited" in result.one_line()


def test_recomputing_an_edited_rows_hash_breaks_the_next_link(conn):
    row = conn.execute("select * from ops.audit_log where seq = 3").fetchall()[0]
    forged = audit.row_hash(3, row[1], "intruder", row[3], row[4], row[5], row[6], KEY)
    conn.execute("update ops.audit_log set actor = 'intruder', hash = ? where seq = 3", [forged]).fetchall()
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 4)


def test_re_hashing_the_chain_after_an_edit_without_the_key_is_found_at_the_edit(conn):
    conn.execute("update ops.audit_log set counts_json = '{\"rows\": 0}' where seq = 3").fetchall()
    _rehash_from(conn, 3, key=None)  # every link consistent again, by plain SHA-256
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 3)


def test_re_hashing_the_whole_chain_as_unkeyed_rows_is_found_by_the_recorded_heads(conn):
    conn.execute("update ops.audit_log set actor = 'intruder' where seq = 2").fetchall()
    _rehash_from(conn, 1, key=None)  # looks like a chain from before keying
    result = audit.verify(conn)
    assert not result.ok and "heads.jsonl" in result.reason and "rewritten" in result.reason


def test_removing_the_last_row_is_found_as_truncation(conn):
    conn.execute("delete from ops.audit_log where seq = 7").fetchall()
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 7)
    assert "truncated" in result.reason and "heads.jsonl" in result.reason


def test_truncation_is_found_by_a_receipts_head_when_heads_jsonl_is_gone_too(conn, home):
    receipts = home / "receipts"
    receipts.mkdir()
    (receipts / "dsr-9.json").write_text(json.dumps({"audit_head": audit.latest_recorded_head(home)}))
    conn.execute("delete from ops.audit_log where seq >= 6").fetchall()
    audit.heads_path(home).unlink()
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 6)
    assert "receipts/dsr-9.json" in result.reason


def test_a_planted_anchor_over_removed_rows_is_found(conn):
    row = conn.execute("select seq, hash from ops.audit_log where seq = 3").fetchall()[0]
    conn.execute("delete from ops.audit_log where seq <= 3").fetchall()
    conn.execute("insert into ops.audit_anchor values (?, ?, ?)", [row[0], row[1], datetime(2021, 1, 1)]).fetchall()
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 3)
    assert "planted" in result.reason


def test_a_chain_from_before_keying_verifies_and_says_which_rows_predate_the_key(home):
    conn = connect(home / "warehouse.duckdb")
    prev = audit.GENESIS
    for seq in (1, 2, 3):  # as the unkeyed code wrote them
        at = datetime(2025, 1, seq)
        digest = audit.row_hash(seq, at, "gmp-cli", "ingest", "crm_ingest", '{"rows": 1}', prev)
        conn.execute(
            "insert into ops.audit_log values (?, ?, ?, ?, ?, ?, ?, ?)",
            [seq, at, "gmp-cli", "ingest", "crm_ingest", '{"rows": 1}', prev, digest],
        ).fetchall()
        prev = digest
    audit.record(conn, actor="gmp-cli", action="ingest", purpose="crm_ingest", counts={"rows": 2})
    result = audit.verify(conn)
    assert result.ok and result.rows == 4 and result.unkeyed_through == 3
    assert "rows up to seq 3 predate keying" in result.one_line()
    # ... and an unkeyed row after a keyed one is a re-hash, not history
    audit.record(conn, actor="gmp-cli", action="ingest", purpose="crm_ingest", counts={"rows": 3})
    _rehash_from(conn, 5, key=None)
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 5) and "re-hashed" in result.reason
    conn.close()


def test_verifying_with_another_key_finds_every_keyed_row_wrong(conn):
    result = audit.verify(conn, key=b"another-key-0123456789abcdef-0123456789")
    assert (result.ok, result.broken_seq) == (False, 1)


def test_removing_a_row_is_found_at_the_gap(conn):
    conn.execute("delete from ops.audit_log where seq = 5").fetchall()
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 5)
    assert "missing" in result.reason


def test_purging_the_oldest_rows_keeps_the_rest_verifiable(conn):
    # entries 1-4 were recorded before 2022 (every half year from mid-2020)
    assert audit.purge_before(conn, datetime(2022, 1, 1), dry_run=True) == 4
    assert conn.execute("select count(*) from ops.audit_log").fetchall()[0][0] == 7
    assert audit.purge_before(conn, datetime(2022, 1, 1), dry_run=False) == 4
    assert audit.verify(conn).ok
    audit.record(conn, actor="gmp-cli", action="purge", purpose="storage_limitation", counts={"rows": 3})
    result = audit.verify(conn)
    assert result.ok and result.rows == 4 and result.head_seq == 8


def test_an_entry_carrying_an_email_address_is_refused(conn):
    with pytest.raises(audit.AuditError, match="email"):
        audit.record(conn, actor="gmp-cli", action="dsr:submit", purpose="x", counts={"who": "ann@example.com"})
    assert audit.verify(conn).rows == 7


def test_verify_without_the_audit_key_says_so_and_makes_no_new_key(conn, monkeypatch, home):
    from governed_marketing.settings import reset_settings

    monkeypatch.delenv("GMP_AUDIT_KEY")
    reset_settings()
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 1) and "no audit key" in result.reason
    assert not (home / "audit" / "audit.key").exists()


def test_a_batch_of_entries_chains_in_list_order_and_an_edit_inside_it_is_found(conn, home):
    entries = [{"action": "dsr:access", "counts": {"request_id": f"dsr-b{i:02d}", "rows": i}} for i in range(5)]
    seqs = audit.record_many(conn, entries, actor="manual__batch", purpose="data_subject_rights")
    assert seqs == [8, 9, 10, 11, 12]
    kept = conn.execute("select seq, counts_json from ops.audit_log where seq >= 8 order by seq").fetchall()
    assert [json.loads(c)["request_id"] for _, c in kept] == [f"dsr-b{i:02d}" for i in range(5)]
    assert audit.verify(conn).ok and audit.latest_recorded_head(home)["seq"] == 12
    with pytest.raises(audit.AuditError):
        audit.record_many(conn, [{"action": "dsr:access", "counts": {"to": "a@b.example"}}], actor="x", purpose="y")
    assert audit.verify(conn).head_seq == 12  # nothing of a refused batch is written
    conn.execute("update ops.audit_log set counts_json = '{\"rows\": 9}' where seq = 10").fetchall()
    assert audit.verify(conn).broken_seq == 10
