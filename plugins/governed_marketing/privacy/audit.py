"""The append-only audit log: who (a DAG run or the CLI) did what, for which purpose, with what counts.

Each row carries the SHA-256 of the previous row and of its own canonical content, so changing,
removing or inserting a row breaks the chain at that row; `verify()` names the first broken link.
Rows hold ids and counts only: `record()` refuses anything that looks like an email address, so a
breach investigation (Art. 33) can read the log without reading personal data. Retention may cut
the oldest rows; the cut is anchored (`ops.audit_anchor`) so the rest still verifies.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

GENESIS = "0" * 64
ACTOR_CLI = "gmp-cli"

AUDIT_DDL = """
create schema if not exists ops;
create table if not exists ops.audit_log (
    seq bigint primary key,
    recorded_at timestamp not null,
    actor varchar not null,
    action varchar not null,
    purpose varchar not null,
    counts_json varchar not null,
    prev_hash varchar not null,
    hash varchar not null
);
create table if not exists ops.audit_anchor (
    seq bigint primary key,
    hash varchar not null,
    anchored_at timestamp not null
);
"""

_EMAIL_LIKE = re.compile(r"[^\s@\"']+@[^\s@\"']+\.[a-z]{2,}", re.IGNORECASE)


class AuditError(ValueError):
    """An audit entry would carry personal data, or the log cannot be written."""


@dataclass(frozen=True)
class Verification:
    ok: bool
    rows: int
    head_seq: int | None = None
    head_hash: str | None = None
    broken_seq: int | None = None
    reason: str | None = None

    def one_line(self) -> str:
        if self.ok:
            head = f"; head seq {self.head_seq} hash {self.head_hash[:16]}" if self.head_hash else ""
            return f"audit log intact: {self.rows} rows{head}"
        return f"audit log broken at seq {self.broken_seq}: {self.reason}"


def ensure_audit_log(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(AUDIT_DDL)


def _canonical(seq: int, at: datetime, actor: str, action: str, purpose: str, counts_json: str, prev: str) -> bytes:
    body = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "purpose": purpose,
        "counts": json.loads(counts_json),
        "prev_hash": prev,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def row_hash(seq: int, at: datetime, actor: str, action: str, purpose: str, counts_json: str, prev: str) -> str:
    return hashlib.sha256(_canonical(seq, at, actor, action, purpose, counts_json, prev)).hexdigest()


def record(
    conn: duckdb.DuckDBPyConnection,
    *,
    actor: str,
    action: str,
    purpose: str,
    counts: dict[str, Any],
    at: datetime | None = None,
) -> int:
    """Append one entry and return its seq.

    Raises:
        AuditError: a value looks like an email address (the log never holds personal data).
    """
    counts_json = json.dumps(counts, sort_keys=True, default=str, ensure_ascii=False)
    for text in (actor, action, purpose, counts_json):
        if _EMAIL_LIKE.search(text):
            raise AuditError(f"audit entry {action!r} would hold an email address; pass ids and counts only")
    ensure_audit_log(conn)
    moment = (at or datetime.now(UTC)).replace(tzinfo=None)
    conn.execute("begin transaction")
    try:
        last = conn.execute("select seq, hash from ops.audit_log order by seq desc limit 1").fetchall()
        if last:
            seq, prev = last[0][0] + 1, last[0][1]
        else:
            anchor = conn.execute("select seq, hash from ops.audit_anchor order by seq desc limit 1").fetchall()
            seq, prev = (anchor[0][0] + 1, anchor[0][1]) if anchor else (1, GENESIS)
        digest = row_hash(seq, moment, actor, action, purpose, counts_json, prev)
        conn.execute(
            "insert into ops.audit_log values (?, ?, ?, ?, ?, ?, ?, ?)",
            [seq, moment, actor, action, purpose, counts_json, prev, digest],
        ).fetchall()
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    return seq


def record_step(conn: duckdb.DuckDBPyConnection, run_id: str, step: str, subject: str, counts: dict) -> int:
    """The pipeline's steps (ingest, generate) in the audit log, with the suppression door's counts for a load."""
    from governed_marketing.privacy.suppression import door_counts

    purpose = {"ingest": "crm_ingest", "generate": subject}.get(step, step)
    if step == "generate":
        from governed_marketing.policy import load_policy

        campaign = load_policy().campaigns.get(subject)
        purpose = campaign.purpose if campaign else subject
    entry = dict(counts)
    if step == "ingest" and counts.get("load_id"):
        entry["dropped_at_the_door"] = door_counts(conn, counts["load_id"])
    return record(
        conn, actor=run_id, action=step if step != "generate" else f"generate:{subject}", purpose=purpose, counts=entry
    )


def verify(conn: duckdb.DuckDBPyConnection) -> Verification:
    """Recompute the chain from the anchor (or genesis) and name the first row that does not fit."""
    from governed_marketing.warehouse import table_exists

    if not table_exists(conn, "ops", "audit_log"):
        return Verification(ok=True, rows=0)
    anchor = (
        conn.execute("select seq, hash from ops.audit_anchor order by seq desc limit 1").fetchall()
        if table_exists(conn, "ops", "audit_anchor")
        else []
    )
    expected_seq, prev = (anchor[0][0] + 1, anchor[0][1]) if anchor else (1, GENESIS)
    rows = conn.execute(
        "select seq, recorded_at, actor, action, purpose, counts_json, prev_hash, hash from ops.audit_log order by seq"
    ).fetchall()
    for seq, at, actor, action, purpose, counts_json, prev_hash, stored in rows:
        if seq != expected_seq:
            reason = (
                f"seq {expected_seq} is missing (the log jumps to {seq})"
                if seq > expected_seq
                else f"seq {seq} appears again or out of order"
            )
            return Verification(ok=False, rows=len(rows), broken_seq=expected_seq, reason=reason)
        if prev_hash != prev:
            return Verification(
                ok=False,
                rows=len(rows),
                broken_seq=seq,
                reason="prev_hash does not match the previous row (a row before it was changed or removed)",
            )
        try:
            recomputed = row_hash(seq, at, actor, action, purpose, counts_json, prev_hash)
        except ValueError:
            recomputed = None
        if recomputed != stored:
            return Verification(
                ok=False, rows=len(rows), broken_seq=seq, reason="the row's content does not match its hash (edited)"
            )
        prev, expected_seq = stored, seq + 1
    head = rows[-1] if rows else None
    return Verification(
        ok=True, rows=len(rows), head_seq=head[0] if head else None, head_hash=head[7] if head else None
    )


def purge_before(conn: duckdb.DuckDBPyConnection, cutoff: datetime, *, dry_run: bool) -> int:
    """Remove entries older than `cutoff` from the start of the chain, anchoring the last one removed."""
    ensure_audit_log(conn)
    rows = conn.execute(
        "select seq, hash from ops.audit_log where recorded_at < ? order by seq", [cutoff.replace(tzinfo=None)]
    ).fetchall()
    first = conn.execute("select min(seq) from ops.audit_log").fetchall()[0][0]
    # Only a prefix can go: a gap in the middle would read as tampering.
    prefix = []
    for seq, digest in rows:
        if seq != (prefix[-1][0] + 1 if prefix else first):
            break
        prefix.append((seq, digest))
    if dry_run or not prefix:
        return len(prefix)
    last_seq, last_hash = prefix[-1]
    conn.execute("begin transaction")
    try:
        conn.execute(
            "insert into ops.audit_anchor values (?, ?, ?)",
            [last_seq, last_hash, datetime.now(UTC).replace(tzinfo=None)],
        ).fetchall()
        conn.execute("delete from ops.audit_log where seq <= ?", [last_seq]).fetchall()
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    return len(prefix)
