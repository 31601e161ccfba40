"""The audit log is hash-chained: any edit, removal or insertion is found, and named by its row."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from governed_marketing.privacy import audit
from governed_marketing.warehouse import connect


@pytest.fixture
def conn(tmp_path):
    connection = connect(tmp_path / "audit.duckdb")
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
    forged = audit.row_hash(3, row[1], "intruder", row[3], row[4], row[5], row[6])
    conn.execute("update ops.audit_log set actor = 'intruder', hash = ? where seq = 3", [forged]).fetchall()
    result = audit.verify(conn)
    assert (result.ok, result.broken_seq) == (False, 4)


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
