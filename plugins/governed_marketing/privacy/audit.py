"""The append-only audit log: who (a DAG run or the CLI) did what, for which purpose, with what counts.

Each row carries the hash of the previous row and of its own canonical content, so changing,
removing or inserting a row breaks the chain at that row; `verify()` names the first broken link.
The hash is an HMAC-SHA256 under the audit key (settings.resolve_audit_key: GMP_AUDIT_KEY, held apart
from the warehouse), so whoever can write the warehouse cannot re-hash an edited chain. The head
(seq and hash) is also kept outside the table: appended to `$GMP_HOME/audit/heads.jsonl` at every
entry (once per batch of `record_many`: the chain binds the batch's rows to its last head) and every
retention cut, and copied into each report and erasure receipt; `verify()` checks the
table against every recorded head, so removing the last rows (truncation) or planting an anchor over
removed rows is found too. Rows written before the chain was keyed (plain SHA-256) still verify as
links and are named as such: a rewrite of them cannot be told from the original.
Rows hold ids and counts only: `record()` refuses anything that looks like an email address, so a
breach investigation (Art. 33) can read the log without reading personal data. Retention may cut
the oldest rows; the cut is anchored (`ops.audit_anchor`, and in heads.jsonl) so the rest still verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse


GENESIS = "0" * 64
ACTOR_CLI = "gmp-cli"

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
    #: The last seq hashed without the key (rows written before the chain was keyed), if any.
    unkeyed_through: int | None = None
    #: Heads recorded outside the table (heads.jsonl, receipts, report.json) the table was checked against.
    heads_checked: int = 0

    def one_line(self) -> str:
        if self.ok:
            head = f"; head seq {self.head_seq} hash {self.head_hash[:16]}" if self.head_hash else ""
            legacy = (
                f"; rows up to seq {self.unkeyed_through} predate keying (plain SHA-256: a rewrite of them "
                "cannot be detected)"
                if self.unkeyed_through
                else ""
            )
            return f"audit log intact: {self.rows} rows{head}; {self.heads_checked} recorded heads match{legacy}"
        return f"audit log broken at seq {self.broken_seq}: {self.reason}"


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


def row_hash(
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    purpose: str,
    counts_json: str,
    prev: str,
    key: bytes | None = None,
) -> str:
    """HMAC-SHA256 of the row under `key`; without a key, the plain SHA-256 of rows that predate keying."""
    body = _canonical(seq, at, actor, action, purpose, counts_json, prev)
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


# ---- the head outside the table ----------------------------------------------------------------------


def _home(home: Path | None) -> Path:
    if home is not None:
        return home
    from governed_marketing.settings import get_settings

    return get_settings().home_dir


def _key(key: bytes | None) -> bytes:
    if key is not None:
        return key
    from governed_marketing.settings import get_settings

    return get_settings().resolve_audit_key()[0]


def heads_path(home: Path | None = None) -> Path:
    return _home(home) / "audit" / "heads.jsonl"


def store_identity(conn: Warehouse, home: Path | None = None) -> str:
    """Which warehouse a head belongs to: the DuckDB file (relative to GMP_HOME when inside it) or the
    Postgres database, so heads of another warehouse sharing the home are never compared."""
    path = conn.database_file()
    if path is None:
        return conn.label()
    try:
        return str(path.relative_to(_home(home).resolve()))
    except ValueError:
        return str(path)


def _append_head(home: Path | None, line: dict[str, Any]) -> None:
    """One line to heads.jsonl (append-only, owner-only), flushed to disk before the caller goes on."""
    path = heads_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def head(conn: Warehouse, home: Path | None = None) -> dict[str, Any] | None:
    """The table's last row as {seq, hash, warehouse}: what reports copy out of the table."""
    from governed_marketing.warehouse import table_exists

    if not table_exists(conn, "ops", "audit_log"):
        return None
    last = conn.execute("select seq, hash from ops.audit_log order by seq desc limit 1").fetchall()
    if not last:
        return None
    return {"seq": int(last[0][0]), "hash": last[0][1], "warehouse": store_identity(conn, home)}


def latest_recorded_head(home: Path | None = None) -> dict[str, Any] | None:
    """The last head appended to heads.jsonl (what a receipt copies, with no warehouse connection)."""
    path = heads_path(home)
    if not path.is_file():
        return None
    latest = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("kind") == "head":
            latest = {k: entry[k] for k in ("seq", "hash", "warehouse") if k in entry}
    return latest


def _recorded_heads(home: Path, identity: str) -> tuple[list[tuple[int, str, str]], set[tuple[int, str]], bool]:
    """(seq, hash, source) of every head recorded for this warehouse, the anchors heads.jsonl holds,
    and whether heads.jsonl has any entry for it."""
    heads: list[tuple[int, str, str]] = []
    anchors: set[tuple[int, str]] = set()
    any_entry = False
    path = heads_path(home)
    if path.is_file():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict) or entry.get("warehouse") != identity:
                continue
            any_entry = True
            if entry.get("kind") == "anchor":
                anchors.add((int(entry["seq"]), str(entry["hash"])))
            else:
                heads.append((int(entry["seq"]), str(entry["hash"]), f"audit/heads.jsonl line {number}"))
    copies = sorted((home / "receipts").glob("*.json")) if (home / "receipts").is_dir() else []
    copies += [home / "reports" / "report.json"]
    for copy in copies:
        try:
            recorded = json.loads(copy.read_text(encoding="utf-8")).get("audit_head")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(recorded, dict) and recorded.get("warehouse") == identity and recorded.get("seq") is not None:
            heads.append((int(recorded["seq"]), str(recorded["hash"]), str(copy.relative_to(home))))
    return heads, anchors, any_entry


def _next_link(conn: Warehouse) -> tuple[int, str]:
    """The next row's sequence number and the hash it chains to: the last row's, else the anchor's (after a purge)."""
    last = conn.execute("select seq, hash from ops.audit_log order by seq desc limit 1").fetchall()
    if last:
        return last[0][0] + 1, last[0][1]
    anchor = conn.execute("select seq, hash from ops.audit_anchor order by seq desc limit 1").fetchall()
    return (anchor[0][0] + 1, anchor[0][1]) if anchor else (1, GENESIS)


def record(
    conn: Warehouse,
    *,
    actor: str,
    action: str,
    purpose: str,
    counts: dict[str, Any],
    at: datetime | None = None,
    key: bytes | None = None,
    home: Path | None = None,
) -> int:
    """Append one entry (HMAC under the audit key), record the new head in heads.jsonl, return its seq.

    Raises:
        AuditError: a value looks like an email address (the log never holds personal data).
    """
    counts_json = json.dumps(counts, sort_keys=True, default=str, ensure_ascii=False)
    for text in (actor, action, purpose, counts_json):
        if _EMAIL_LIKE.search(text):
            raise AuditError(f"audit entry {action!r} would hold an email address; pass ids and counts only")
    key = _key(key)
    moment = (at or datetime.now(UTC)).replace(tzinfo=None)
    conn.execute("begin transaction")
    try:
        seq, prev = _next_link(conn)
        digest = row_hash(seq, moment, actor, action, purpose, counts_json, prev, key)
        conn.execute(
            "insert into ops.audit_log values (?, ?, ?, ?, ?, ?, ?, ?)",
            [seq, moment, actor, action, purpose, counts_json, prev, digest],
        ).fetchall()
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    _append_head(
        home,
        {
            "kind": "head",
            "seq": seq,
            "hash": digest,
            "warehouse": store_identity(conn, home),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return seq


def record_many(
    conn: Warehouse,
    entries: list[dict[str, Any]],
    *,
    actor: str,
    purpose: str,
    at: datetime | None = None,
    key: bytes | None = None,
    home: Path | None = None,
) -> list[int]:
    """Append entries in the order given, chained as `record()` would one by one, in one insert.

    Each entry is {"action": ..., "counts": {...}}. A pass of thousands of requests writes its audit
    rows in one statement; the chain is computed here in list order (deterministic), and the new head
    is recorded in heads.jsonl once: every row before it is bound to it by the chain.

    Raises:
        AuditError: a value looks like an email address (nothing of the batch is written).
    """
    if not entries:
        return []
    import pandas as pd

    bodies = []
    for entry in entries:
        action = entry["action"]
        counts_json = json.dumps(entry["counts"], sort_keys=True, default=str, ensure_ascii=False)
        for text in (actor, action, purpose, counts_json):
            if _EMAIL_LIKE.search(text):
                raise AuditError(f"audit entry {action!r} would hold an email address; pass ids and counts only")
        bodies.append((action, counts_json))
    key = _key(key)
    moment = (at or datetime.now(UTC)).replace(tzinfo=None)
    stamp = moment.isoformat(sep=" ", timespec="microseconds")
    conn.execute("begin transaction")
    try:
        seq, prev = _next_link(conn)
        rows, seqs = [], []
        for action, counts_json in bodies:
            digest = row_hash(seq, moment, actor, action, purpose, counts_json, prev, key)
            rows.append((str(seq), stamp, actor, action, purpose, counts_json, prev, digest))
            seqs.append(seq)
            seq, prev = seq + 1, digest
        frame = pd.DataFrame(
            rows,
            columns=["seq", "recorded_at", "actor", "action", "purpose", "counts_json", "prev_hash", "hash"],
            dtype="string",
        )
        conn.temp_table("audit_batch", frame)
        conn.execute(
            "insert into ops.audit_log select cast(seq as bigint), cast(recorded_at as timestamp), actor, action, "
            "purpose, counts_json, prev_hash, hash from audit_batch order by cast(seq as bigint)"
        ).fetchall()
        conn.execute("drop table if exists audit_batch").fetchall()
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    _append_head(
        home,
        {
            "kind": "head",
            "seq": seqs[-1],
            "hash": prev,
            "warehouse": store_identity(conn, home),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return seqs


def record_step(conn: Warehouse, run_id: str, step: str, subject: str, counts: dict) -> int:
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


def verify(conn: Warehouse, *, key: bytes | None = None, home: Path | None = None) -> Verification:
    """Recompute the chain from the anchor (or genesis) under the audit key and name the first row that
    does not fit; then check it against every head recorded outside the table."""
    from governed_marketing.warehouse import table_exists

    home = _home(home)
    if key is None:
        from governed_marketing.settings import get_settings

        try:  # verifying never makes a key: a new one would only hide which key the chain was written under
            key = get_settings().resolve_audit_key(create=False)[0]
        except FileNotFoundError:
            key = None
    if not table_exists(conn, "ops", "audit_log"):
        rows: list = []
        anchor: list = []
    else:
        anchor = (
            conn.execute("select seq, hash from ops.audit_anchor order by seq desc limit 1").fetchall()
            if table_exists(conn, "ops", "audit_anchor")
            else []
        )
        rows = conn.execute(
            "select seq, recorded_at, actor, action, purpose, counts_json, prev_hash, hash from ops.audit_log "
            "order by seq"
        ).fetchall()
    expected_seq, prev = (anchor[0][0] + 1, anchor[0][1]) if anchor else (1, GENESIS)
    unkeyed_through = None
    keyed_seen = False
    broken = lambda seq, reason: Verification(ok=False, rows=len(rows), broken_seq=seq, reason=reason)  # noqa: E731
    for seq, at, actor, action, purpose, counts_json, prev_hash, stored in rows:
        if seq != expected_seq:
            reason = (
                f"seq {expected_seq} is missing (the log jumps to {seq})"
                if seq > expected_seq
                else f"seq {seq} appears again or out of order"
            )
            return broken(expected_seq, reason)
        if prev_hash != prev:
            return broken(seq, "prev_hash does not match the previous row (a row before it was changed or removed)")
        try:
            keyed = row_hash(seq, at, actor, action, purpose, counts_json, prev_hash, key) if key else None
            plain = row_hash(seq, at, actor, action, purpose, counts_json, prev_hash)
        except ValueError:
            keyed = plain = None
        if keyed is not None and hmac.compare_digest(keyed, stored):
            keyed_seen = True
        elif plain == stored and not keyed_seen:
            unkeyed_through = seq  # written before the chain was keyed
        elif plain == stored:
            return broken(seq, "the row is hashed without the audit key after keyed rows (re-hashed)")
        elif key is None:
            return broken(seq, "the row is keyed but there is no audit key (GMP_AUDIT_KEY unset, audit/audit.key gone)")
        else:
            return broken(seq, "the row's content does not match its hash (edited, or re-hashed without the key)")
        prev, expected_seq = stored, seq + 1
    last_seq = rows[-1][0] if rows else (anchor[0][0] if anchor else 0)
    by_seq = {row[0]: row[7] for row in rows}
    identity = store_identity(conn, home)
    heads, anchors, any_entry = _recorded_heads(home, identity)
    for seq, digest, source in sorted(heads):
        if seq > last_seq:
            return broken(
                last_seq + 1,
                f"{source} recorded head seq {seq}, beyond the table's last row {last_seq}: "
                f"rows {last_seq + 1}..{seq} were removed (truncated)",
            )
        if anchor and seq <= anchor[0][0]:
            if seq == anchor[0][0] and digest != anchor[0][1]:
                return broken(seq, f"the anchor's hash differs from the head {source} recorded")
            continue  # cut by retention, anchored
        if by_seq.get(seq) != digest:
            return broken(seq, f"the row's hash differs from the head {source} recorded (the chain was rewritten)")
    # heads.jsonl knew rows at or before the anchor, yet no retention cut recorded it: planted.
    known_before = any(seq <= anchor[0][0] for seq, _, src in heads if src.startswith("audit/")) if anchor else False
    if anchor and any_entry and known_before and tuple(anchor[0]) not in anchors:
        return broken(
            anchor[0][0],
            "the anchor (ops.audit_anchor) is not in audit/heads.jsonl: rows were removed without a "
            "retention cut (planted anchor)",
        )
    last = rows[-1] if rows else None
    return Verification(
        ok=True,
        rows=len(rows),
        head_seq=last[0] if last else None,
        head_hash=last[7] if last else None,
        unkeyed_through=unkeyed_through,
        heads_checked=len(heads),
    )


def purge_before(conn: Warehouse, cutoff: datetime, *, dry_run: bool, home: Path | None = None) -> int:
    """Remove entries older than `cutoff` from the start of the chain, anchoring the last one removed
    (in ops.audit_anchor and in heads.jsonl, so verify can tell the cut from a planted anchor)."""
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
    _append_head(
        home,
        {
            "kind": "anchor",
            "seq": last_seq,
            "hash": last_hash,
            "warehouse": store_identity(conn, home),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return len(prefix)
