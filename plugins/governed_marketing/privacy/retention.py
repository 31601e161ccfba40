"""Storage limitation (Art. 5(1)(e)): each retention rule in governance.yml applied to its store.

- raw_crm: loads older than the period: their `landing/<load_id>/` archive and the raw rows still
  carrying their load_id (a request's row only once it is answered; the ledger keeps the record);
- generated_content: `ops.generated_content` by `generated_at`;
- outbox: `outbox/**/*.jsonl` files by modification time;
- exports: `exports/<request_id>/` directories by their newest file;
- audit_log: `ops.audit_log` by time, never sooner than 6 years (the chain is anchored at the cut);
- inactive_contacts: contacts whose `updated_at`, last activity and last consent grant are all older
  than the period, from raw and from every table the dbt manifest marks as holding people (someone
  who consented within the period is in the audience, not inactive).

A dry run computes the same selection and removes nothing. Every run writes its counts per rule to
`ops.retention_runs` and the audit log: the evidence a reviewer reads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from dateutil.relativedelta import relativedelta

from governed_marketing import warehouse
from governed_marketing.policy import Policy, PolicyError, load_policy
from governed_marketing.privacy import audit
from governed_marketing.privacy.periods import at_least, parse_period
from governed_marketing.privacy.stores import personal_relations
from governed_marketing.settings import Settings, get_settings

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

PURPOSE = "storage_limitation"
#: The audit log is kept at least this long, whatever governance.yml says (accountability, Art. 5(2)).
AUDIT_LOG_FLOOR = relativedelta(years=6)
RULES = ("raw_crm", "generated_content", "outbox", "exports", "audit_log", "inactive_contacts")


@dataclass
class RuleOutcome:
    """One rule's selection: counts per store, whether they were removed (never which person)."""

    rule: str
    store: str
    period: str
    cutoff: datetime
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    note: str = ""

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class PurgeResult:
    run_at: datetime
    dry_run: bool
    rules: list[RuleOutcome]

    def counts(self) -> dict[str, Any]:
        return {
            "run_at": self.run_at.isoformat(),
            "dry_run": self.dry_run,
            "rules": {r.rule: {"cutoff": r.cutoff.isoformat(), **r.counts} for r in self.rules},
        }


def _mtime(path: Path) -> datetime:
    newest = max((p.stat().st_mtime for p in [path, *path.rglob("*")] if p.exists()), default=path.stat().st_mtime)
    return datetime.fromtimestamp(newest, UTC).replace(tzinfo=None)


def _delete(conn: Warehouse, sql_from_where: str, params: list, *, dry_run: bool) -> int:
    """Delete and count. A dry run deletes too, inside the transaction it then rolls back, so each rule
    sees what the rules before it would have left: the dry run's counts are the real run's counts."""
    n = conn.execute(f"select count(*) from {sql_from_where}", params).fetchall()[0][0]
    if n:
        conn.execute(f"delete from {sql_from_where}", params).fetchall()
    return int(n)


def purge_raw_crm(conn: Warehouse, home: Path, outcome: RuleOutcome) -> None:
    """Loads older than the cutoff: the landing archive and the raw rows still carrying their load_id."""
    if not warehouse.table_exists(conn, "ops", "crm_loads"):
        return
    old = [
        r[0] for r in conn.execute("select load_id from ops.crm_loads where loaded_at < ?", [outcome.cutoff]).fetchall()
    ]
    counts = outcome.counts
    for table in ("crm_contacts", "crm_consent_events", "crm_activity", "quarantine"):
        if warehouse.table_exists(conn, "raw", table):
            counts[f"raw.{table}"] = _delete(
                conn, f"raw.{table} where load_id = any(cast(? as varchar[]))", [old], dry_run=outcome.dry_run
            )
    if warehouse.table_exists(conn, "raw", "crm_dsr_requests") and warehouse.table_exists(conn, "ops", "dsr_requests"):
        # A request's row is needed while it is open or in effect (a restriction); answered ones keep only the ledger.
        counts["raw.crm_dsr_requests"] = _delete(
            conn,
            "raw.crm_dsr_requests where load_id = any(cast(? as varchar[])) and request_id in "
            "(select request_id from ops.dsr_requests where status in ('done', 'lifted'))",
            [old],
            dry_run=outcome.dry_run,
        )
    landing = home / "landing"
    dirs = [landing / load_id for load_id in old if (landing / load_id).is_dir()]
    counts["landing directories"] = len(dirs)
    if not outcome.dry_run:
        for directory in dirs:
            shutil.rmtree(directory)


def purge_generated_content(conn: Warehouse, outcome: RuleOutcome) -> None:
    """Drafts past retention. Their ledger rows stay (cost evidence) but say `purged`, so a later run
    of the campaign drafts them again instead of publishing without them."""
    if warehouse.table_exists(conn, "ops", "generated_content"):
        if warehouse.table_exists(conn, "ops", "generation_ledger"):
            conn.execute(
                """
                update ops.generation_ledger l set status = 'purged'
                from ops.generated_content g
                where g.generated_at < ? and l.status = 'succeeded' and l.campaign_id = g.campaign_id
                  and l.unit_id = g.unit_id and l.prompt_version = g.prompt_version and l.model = g.model
                """,
                [outcome.cutoff],
            ).fetchall()
        outcome.counts["ops.generated_content"] = _delete(
            conn, "ops.generated_content where generated_at < ?", [outcome.cutoff], dry_run=outcome.dry_run
        )


def purge_files(root: Path, pattern: str, outcome: RuleOutcome, *, directories: bool = False) -> None:
    """Files (or directories, by their newest file) under `root` last modified before the cutoff."""
    if not root.is_dir():
        outcome.counts[outcome.store] = 0
        return
    candidates = [p for p in root.iterdir() if p.is_dir()] if directories else list(root.rglob(pattern))
    old = [p for p in candidates if _mtime(p) < outcome.cutoff]
    outcome.counts[outcome.store] = len(old)
    if not outcome.dry_run:
        for path in old:
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def purge_inactive_contacts(conn: Warehouse, outcome: RuleOutcome, *, manifest_path: Path | None, key: bytes) -> None:
    """Contacts with no update, activity or consent grant since the cutoff, from every table holding them.

    A grant within the period is a fresh, deliberate choice to hear from us: that person is in the
    current audience with valid consent, so they are not inactive (however old their other traces).
    """
    if not warehouse.table_exists(conn, "raw", "crm_contacts"):
        return
    recent = ""
    if warehouse.table_exists(conn, "raw", "crm_activity"):
        recent += "and c.contact_id not in (select contact_id from raw.crm_activity where occurred_at >= $cutoff) "
    if warehouse.table_exists(conn, "raw", "crm_consent_events"):
        recent += (
            "and c.contact_id not in (select contact_id from raw.crm_consent_events "
            "where occurred_at >= $cutoff and lower(trim(action)) = 'grant')"
        )
    inactive = conn.execute(
        f"select c.contact_id, c.email_normalized from raw.crm_contacts c where c.updated_at < $cutoff {recent}",
        {"cutoff": outcome.cutoff},
    ).fetchall()
    ids = sorted({r[0] for r in inactive})
    # An email (and its pseudonym) goes only when no active contact still uses it.
    active_emails = {
        r[0]
        for r in conn.execute(
            "select distinct email_normalized from raw.crm_contacts where contact_id <> all(cast(? as varchar[]))",
            [ids],
        ).fetchall()
    }
    emails = sorted({r[1] for r in inactive} - active_emails)
    from governed_marketing.pseudonym import pseudonym

    frames = {
        "purge_contacts": pd.DataFrame({"contact_id": ids}, dtype="string"),
        "purge_emails": pd.DataFrame({"email": emails}, dtype="string"),
        "purge_pseudonyms": pd.DataFrame({"pseudonym": [pseudonym(key, e) for e in emails]}, dtype="string"),
    }
    for name, frame in frames.items():
        conn.temp_table(name, frame)
    relations, _, _ = personal_relations(conn, manifest_path)
    for relation in relations:
        column = f'"{relation.subject_column}"'
        if relation.kind == "contact_id":
            where = f"trim({column}::varchar) in (select contact_id from purge_contacts)"
        elif relation.has_contact_id:
            where = "trim(contact_id::varchar) in (select contact_id from purge_contacts)"
        elif relation.kind == "email":
            where = f"lower(trim({column}::varchar)) in (select email from purge_emails)"
        else:
            where = f"{column} in (select pseudonym from purge_pseudonyms)"
        outcome.counts[relation.qualified] = _delete(conn, f"{relation.sql} where {where}", [], dry_run=outcome.dry_run)
    outcome.counts["contacts"] = len(ids)


def purge(
    *,
    settings: Settings | None = None,
    policy: Policy | None = None,
    now: datetime | None = None,
    dry_run: bool = False,
    actor: str = audit.ACTOR_CLI,
    compact: bool = True,
) -> PurgeResult:
    """Apply every retention rule; with dry_run, report what would go and remove nothing."""
    from governed_marketing.dbt import manifest_path as dbt_manifest

    settings = settings or get_settings()
    policy = policy or load_policy(settings.policy_path)
    now = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    unknown = sorted(set(policy.retention) - set(RULES))
    if unknown:
        raise PolicyError(
            f"governance.yml: retention.{unknown[0]}: no store is known for this rule ({', '.join(RULES)})"
        )
    home = settings.home_dir
    outcomes: list[RuleOutcome] = []

    def rule(name: str, store: str) -> RuleOutcome | None:
        if name not in policy.retention:
            return None
        period = parse_period(policy.retention[name], key=f"retention.{name}")
        note = ""
        if name == "audit_log" and at_least(period, AUDIT_LOG_FLOOR) is not period:
            period, note = AUDIT_LOG_FLOOR, "kept 6 years: the policy's shorter period is not applied to the audit log"
        outcome = RuleOutcome(name, store, policy.retention[name], now - period, dry_run, note=note)
        outcomes.append(outcome)
        return outcome

    manifest = dbt_manifest(settings)
    with warehouse.session(settings=settings) as conn:
        conn.execute("begin transaction")
        try:
            if outcome := rule("raw_crm", "landing + raw tables"):
                purge_raw_crm(conn, home, outcome)
            if outcome := rule("generated_content", "ops.generated_content"):
                purge_generated_content(conn, outcome)
            if outcome := rule("inactive_contacts", "contacts in every table"):
                key, _ = settings.resolve_pseudonym_key()
                purge_inactive_contacts(conn, outcome, manifest_path=manifest if manifest.is_file() else None, key=key)
            conn.execute("rollback" if dry_run else "commit")
        except Exception:
            conn.execute("rollback")
            raise
        if outcome := rule("audit_log", "ops.audit_log"):
            outcome.counts["ops.audit_log"] = audit.purge_before(conn, outcome.cutoff, dry_run=dry_run)
    if outcome := rule("outbox", "outbox files"):
        purge_files(home / "outbox", "*.jsonl", outcome)
    if outcome := rule("exports", "exports directories"):
        purge_files(home / "exports", "*", outcome, directories=True)
    result = PurgeResult(now, dry_run, outcomes)
    removed = sum(o.total for o in outcomes)
    if compact and not dry_run and removed:
        warehouse.erase_physically(settings=settings)  # deleted rows gone from the files too
    with warehouse.session(settings=settings) as conn:
        for o in outcomes:
            conn.execute(
                "insert into ops.retention_runs values (?, ?, ?, ?, ?, ?, ?, ?)",
                [now, actor, o.rule, o.store, o.period, o.cutoff, dry_run, json.dumps(o.counts, sort_keys=True)],
            ).fetchall()
        audit.record(
            conn, actor=actor, action="purge:dry_run" if dry_run else "purge", purpose=PURPOSE, counts=result.counts()
        )
    return result


def describe(outcome: RuleOutcome) -> dict[str, Any]:
    return asdict(outcome)
