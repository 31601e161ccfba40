"""The regular assessment (the tenth checklist topic): findings computed from the policy and the data.

Each finding has a code, a severity (blocking | high | medium | low), an owner role, a message that
says what and why, and a due date. Findings come from governance.yml's `review` block, the vendors
and purposes it declares, and the warehouse (consent proofs, privacy requests, retention backlog).
A blocking finding (a vendor without a DPA, transfer safeguard or current review; a DPIA without a
current review) also stops generation for the purposes it affects: `prepare_campaign` calls
`blocking_for_purpose`, which reads the policy only, so it is cheap and cannot be stale.
Each run is appended to the audit log (`action = "assess"`): codes, severities, subjects, counts;
never personal data. Importable without Airflow.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from governed_marketing.policy import Policy, ReviewEntry, content_hash, load_policy

Severity = Literal["blocking", "high", "medium", "low"]
SEVERITIES: tuple[str, ...] = ("blocking", "high", "medium", "low")
#: A review falling due within this many days is a finding (low), so it is planned, not missed.
DUE_SOON_DAYS = 30
AUDIT_ACTION = "assess"
AUDIT_PURPOSE = "regular_assessment"


class GenerationBlocked(RuntimeError):
    """A blocking assessment finding affects the campaign's purpose; nothing was sent until it is resolved."""


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    owner: str
    subject: str
    message: str
    due: date
    #: Purposes this finding blocks (blocking findings only).
    purposes: tuple[str, ...] = ()
    count: int | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["due"] = self.due.isoformat()
        data["purposes"] = list(self.purposes)
        return data


@dataclass
class Assessment:
    assessed_at: datetime
    findings: list[Finding]
    #: Reviews still to come, soonest first: what, owner role, due date.
    next_due: list[dict[str, str]]
    access: dict[str, Any]
    audit_seq: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return {
            "assessed_at": self.assessed_at.isoformat(timespec="seconds"),
            "clean": self.clean,
            "findings": [f.as_json() for f in self.findings],
            "next_due": self.next_due,
            "access": self.access,
            "audit_seq": self.audit_seq,
        }


# ---- policy-only findings ------------------------------------------------------------------------------


def _reviews(policy: Policy) -> list[tuple[str, ReviewEntry, Severity, tuple[str, ...]]]:
    """Every review entry: its key, the entry, the severity when overdue, the purposes it blocks."""
    review = policy.review
    if review is None:
        return []
    entries: list[tuple[str, ReviewEntry, Severity, tuple[str, ...]]] = [
        ("review.policy", review.policy, "high", ()),
        ("review.retention", review.retention, "high", ()),
        ("review.consent_notice", review.consent_notice, "high", ()),
    ]
    for purpose_id, entry in review.dpia.items():
        entries.append((f"review.dpia.{purpose_id}", entry, "blocking", (purpose_id,)))
    for vendor_id, vendor in review.vendors.items():
        users = _purposes_using(policy, vendor_id)
        for part in ("dpa", "transfer_mechanism"):
            entry = getattr(vendor, part)
            if entry is not None:
                entries.append((f"review.vendors.{vendor_id}.{part}", entry, "blocking" if users else "high", users))
    return entries


def _purposes_using(policy: Policy, vendor_id: str) -> tuple[str, ...]:
    return tuple(sorted(p for p, purpose in policy.purposes.items() if vendor_id in purpose.vendors))


def policy_findings(policy: Policy, today: date) -> list[Finding]:
    """Findings computed from governance.yml alone (reviews, vendors, DPIAs, the policy hash)."""
    findings: list[Finding] = []
    if policy.review is None:
        findings.append(
            Finding(
                "review_metadata_missing",
                "high",
                "dpo",
                "review",
                "governance.yml has no `review` block: nothing says when the policy, DPAs, DPIAs, retention "
                "or the consent notice were last reviewed",
                today,
            )
        )
    findings += _review_findings(policy, today)
    findings += _vendor_findings(policy, today)
    if policy.review is not None:
        findings += _dpia_findings(policy, today)
        findings += _policy_changed(policy, today)
    return findings


def _review_findings(policy: Policy, today: date) -> list[Finding]:
    """Reviews overdue or due within DUE_SOON_DAYS."""
    findings: list[Finding] = []
    for key, entry, severity, purposes in _reviews(policy):
        due = entry.due()
        if due < today:
            findings.append(
                Finding(
                    "review_overdue",
                    severity,
                    entry.by,
                    key,
                    f"{key} was last reviewed {entry.last_reviewed} (every {entry.every}): overdue since {due}",
                    due,
                    purposes if severity == "blocking" else (),
                )
            )
        elif due <= today + timedelta(days=DUE_SOON_DAYS):
            findings.append(
                Finding(
                    "review_due_soon",
                    "low",
                    entry.by,
                    key,
                    f"{key} is due for review on {due} (within {DUE_SOON_DAYS} days)",
                    due,
                )
            )
    return findings


def _vendor_findings(policy: Policy, today: date) -> list[Finding]:
    """Vendors in use without a DPA, a transfer mechanism, or a recorded review of either."""
    findings: list[Finding] = []
    review = policy.review
    used = sorted({v for purpose in policy.purposes.values() for v in purpose.vendors})
    for vendor_id in used:
        vendor = policy.vendors[vendor_id]
        purposes = _purposes_using(policy, vendor_id)
        if vendor.dpa_signed is None:
            findings.append(
                Finding(
                    "vendor_dpa_missing",
                    "blocking",
                    "privacy-office",
                    f"vendors.{vendor_id}",
                    f"vendors.{vendor_id}.dpa_signed is missing: no processor agreement (Art. 28) is on record",
                    today,
                    purposes,
                )
            )
        if vendor.transfer_mechanism in (None, "none"):
            findings.append(
                Finding(
                    "vendor_transfer_mechanism_missing",
                    "blocking",
                    "privacy-office",
                    f"vendors.{vendor_id}",
                    f"vendors.{vendor_id}.transfer_mechanism is missing: "
                    "no transfer safeguard (Art. 44-46) is on record",
                    today,
                    purposes,
                )
            )
        if review is not None:
            recorded = review.vendors.get(vendor_id)
            for part in ("dpa", "transfer_mechanism"):
                if recorded is None or getattr(recorded, part) is None:
                    findings.append(
                        Finding(
                            "vendor_review_missing",
                            "blocking",
                            "privacy-office",
                            f"review.vendors.{vendor_id}.{part}",
                            f"review.vendors.{vendor_id}.{part} is missing: the vendor's {part} was never reviewed",
                            today,
                            purposes,
                        )
                    )
    return findings


def _dpia_findings(policy: Policy, today: date) -> list[Finding]:
    """Purposes that require a DPIA whose review is not recorded."""
    assert policy.review is not None
    findings: list[Finding] = []
    for purpose_id, purpose in sorted(policy.purposes.items()):
        if purpose.dpia.required and purpose_id not in policy.review.dpia:
            findings.append(
                Finding(
                    "dpia_review_missing",
                    "blocking",
                    "dpo",
                    f"review.dpia.{purpose_id}",
                    f"purposes.{purpose_id} requires a DPIA ({purpose.dpia.reference}) but review.dpia."
                    f"{purpose_id} records no review of it (Art. 35(11))",
                    today,
                    (purpose_id,),
                )
            )
    return findings


def _policy_changed(policy: Policy, today: date) -> list[Finding]:
    assert policy.review is not None
    if policy.source_path is None or not Path(policy.source_path).is_file():
        return []
    current = content_hash(Path(policy.source_path).read_text(encoding="utf-8"))
    reviewed = policy.review.policy.sha256
    if reviewed == current:
        return []
    return [
        Finding(
            "policy_changed_since_review",
            "high",
            policy.review.policy.by,
            "review.policy.sha256",
            f"governance.yml changed since its review on {policy.review.policy.last_reviewed} "
            f"(reviewed {(reviewed or 'none')[:12]}, now {current[:12]}): review it and record the new hash",
            today,
        )
    ]


def blocking_for_purpose(policy: Policy, purpose_id: str, today: date) -> list[Finding]:
    """The blocking findings that stop generation for this purpose (policy only: cheap, never stale)."""
    return [f for f in policy_findings(policy, today) if f.severity == "blocking" and purpose_id in f.purposes]


def check_generation_allowed(policy: Policy, campaign_id: str, today: date) -> None:
    """Raise GenerationBlocked when a blocking finding affects the campaign's purpose."""
    purpose_id = policy.campaigns[campaign_id].purpose
    blocking = blocking_for_purpose(policy, purpose_id, today)
    if blocking:
        reasons = "; ".join(f"{f.code} ({f.subject}): {f.message}" for f in blocking)
        raise GenerationBlocked(
            f"campaigns.{campaign_id}: generation blocked for purpose {purpose_id} by the regular assessment: "
            f"{reasons}; nothing was sent"
        )


def next_due(policy: Policy) -> list[dict[str, str]]:
    """Every recorded review, soonest due first."""
    rows = [
        {
            "what": key,
            "owner": entry.by,
            "last_reviewed": entry.last_reviewed.isoformat(),
            "due": entry.due().isoformat(),
        }
        for key, entry, _, _ in _reviews(policy)
    ]
    return sorted(rows, key=lambda r: (r["due"], r["what"]))


# ---- data findings ---------------------------------------------------------------------------------------


def consent_notice_findings(conn: Any, policy: Policy, today: date) -> list[Finding]:
    """Per campaign: people in its audience whose deciding consent proof names an older, unaccepted notice."""
    from governed_marketing.warehouse import table_exists

    if policy.review is None or not table_exists(conn, "intermediate", "int_campaign_eligibility"):
        return []
    notice = policy.review.consent_notice
    accepted = [notice.current_version, *notice.accepted_versions]
    rows = conn.execute(
        """
        select e.campaign_id, count(distinct e.contact_id)
        from intermediate.int_campaign_eligibility e
        join governance.campaigns c on c.campaign_id = e.campaign_id
        join governance.purpose_consents r on r.purpose_id = c.purpose_id
        join intermediate.int_consents_latest l
            on l.contact_id = e.contact_id and l.consent_purpose = r.consent_purpose
        where e.is_eligible and l.latest_action = 'grant'
            and not coalesce(l.deciding_notice_version = any(cast(? as varchar[])), false)
        group by e.campaign_id
        order by e.campaign_id
        """,
        [accepted],
    ).fetchall()
    return [
        Finding(
            "consent_notice_outdated",
            "medium",
            notice.by,
            f"campaigns.{campaign_id}",
            f"{count} people in the audience of {campaign_id} consented under a notice older than "
            f"{notice.current_version} and not accepted at review ({', '.join(accepted)}): "
            "ask again or review the change",
            today + timedelta(days=DUE_SOON_DAYS),
            count=int(count),
        )
        for campaign_id, count in rows
        if count
    ]


def dsr_findings(conn: Any, today: date) -> list[Finding]:
    """Open data-subject requests past their (possibly extended) deadline."""
    from governed_marketing.privacy.dsr import overdue

    late = overdue(conn, today=today)
    if not late:
        return []
    oldest = min(r.effective_due for r in late)
    return [
        Finding(
            "dsr_overdue",
            "high",
            "privacy-office",
            "ops.dsr_requests",
            f"{len(late)} data subject request(s) past their deadline (Art. 12(3)), the oldest due {oldest}: "
            + ", ".join(r.request_id for r in late[:20]),
            oldest,
            count=len(late),
        )
    ]


def retention_findings(backlog: dict[str, int], today: date) -> list[Finding]:
    """Rows or files past their retention period and not purged yet, per rule (from a purge dry run)."""
    return [
        Finding(
            "retention_backlog",
            "medium",
            "privacy-office",
            f"retention.{rule}",
            f"{count} row(s)/file(s) past the retention period of retention.{rule} are not purged yet "
            "(run purge_expired_data or `gmp purge`)",
            today,
            count=count,
        )
        for rule, count in sorted(backlog.items())
        if count
    ]


def retention_backlog(settings: Any, policy: Policy, now: datetime, actor: str) -> dict[str, int]:
    """What a purge would remove now, per rule: the retention dry run, reused (it records itself as one)."""
    from governed_marketing.privacy.retention import purge

    result = purge(settings=settings, policy=policy, now=now, dry_run=True, actor=actor)
    return {o.rule: o.total for o in result.rules}


# ---- who can read the report -------------------------------------------------------------------------------


def report_access(auth_manager: str | None, users: str | None) -> dict[str, Any]:
    """Who can read the report (it is served to authenticated Airflow users) from the auth manager's users.

    `users` is the simple auth manager's `user:role,user:role` list; with any other auth manager the
    users live outside Airflow's configuration and the answer is "unknown (auth manager X)".
    """
    manager = (auth_manager or "").strip()
    simple = not manager or manager.endswith("SimpleAuthManager")
    if not simple or not users:
        return {
            "auth_manager": manager or "not configured",
            "users": [],
            "summary": f"unknown (auth manager {manager or 'not configured'})",
        }
    entries = []
    for item in users.split(","):
        name, _, role = item.strip().partition(":")
        if name:
            entries.append({"user": name, "role": role or "viewer"})
    roles = sorted({e["role"] for e in entries})
    return {
        "auth_manager": manager or "SimpleAuthManager",
        "users": entries,
        "summary": f"{len(entries)} Airflow user(s), role(s) {', '.join(roles)}: "
        "every authenticated user can read the report",
    }


def airflow_report_access() -> dict[str, Any]:
    """report_access from Airflow's configuration when Airflow is loaded, else from its environment variables."""
    import sys

    if "airflow.configuration" in sys.modules:
        from airflow.configuration import conf

        return report_access(
            conf.get("core", "auth_manager", fallback=""), conf.get("core", "simple_auth_manager_users", fallback="")
        )
    return report_access(
        os.environ.get("AIRFLOW__CORE__AUTH_MANAGER"), os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS")
    )


# ---- the run -------------------------------------------------------------------------------------------------


def _ordered(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.due, f.code, f.subject))


def audit_counts(result: Assessment) -> dict[str, Any]:
    """What the audit log keeps of a run: codes, severities, subjects, due dates and counts only."""
    by_severity = {s: sum(1 for f in result.findings if f.severity == s) for s in SEVERITIES}
    return {
        "findings": len(result.findings),
        "by_severity": by_severity,
        "report_readers": result.access,
        "items": [
            {
                "code": f.code,
                "severity": f.severity,
                "owner": f.owner,
                "subject": f.subject,
                "due": f.due.isoformat(),
                "count": f.count,
                "message": f.message,
            }
            for f in result.findings
        ],
    }


def assess(
    *,
    settings: Any | None = None,
    policy: Policy | None = None,
    now: datetime | None = None,
    actor: str | None = None,
    access: dict[str, Any] | None = None,
    record: bool = True,
) -> Assessment:
    """Compute every finding, append the run to the audit log, and return it (with the history of runs)."""
    from governed_marketing import warehouse
    from governed_marketing.privacy import audit
    from governed_marketing.settings import get_settings

    settings = settings or get_settings()
    policy = policy or load_policy(settings.policy_path)
    moment = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    today = moment.date()
    findings = policy_findings(policy, today)
    access = access if access is not None else airflow_report_access()
    result = Assessment(moment, [], next_due(policy), access)
    if warehouse.exists(settings):
        findings += retention_findings(retention_backlog(settings, policy, moment, actor or audit.ACTOR_CLI), today)
        with warehouse.session(settings=settings) as conn:
            findings += consent_notice_findings(conn, policy, today)
            findings += dsr_findings(conn, today)
            result.findings = _ordered(findings)
            if record:
                result.audit_seq = audit.record(
                    conn,
                    actor=actor or audit.ACTOR_CLI,
                    action=AUDIT_ACTION,
                    purpose=AUDIT_PURPOSE,
                    counts=audit_counts(result),
                    at=moment,
                )
            result.history = history(conn)
    else:
        result.findings = _ordered(findings)
    return result


def history(conn: Any, limit: int = 24) -> list[dict[str, Any]]:
    """The assessment runs in the audit log, newest first, as the chain recorded them."""
    import json

    from governed_marketing.warehouse import table_exists

    if not table_exists(conn, "ops", "audit_log"):
        return []
    rows = conn.execute(
        "select seq, recorded_at, actor, counts_json, hash from ops.audit_log "
        "where action = ? order by seq desc limit ?",
        [AUDIT_ACTION, limit],
    ).fetchall()
    out = []
    for seq, at, actor, counts_json, digest in rows:
        counts = json.loads(counts_json)
        out.append(
            {
                "seq": seq,
                "at": str(at),
                "actor": actor,
                "findings": counts.get("findings", 0),
                "by_severity": counts.get("by_severity", {}),
                "report_readers": counts.get("report_readers", {}),
                "items": counts.get("items", []),
                "hash": digest[:16],
            }
        )
    return out


def report_section(conn: Any | None, policy: Policy) -> dict[str, Any]:
    """The report's "Regular assessment" section: the latest run's findings, what is due next, the history."""
    runs = history(conn) if conn is not None else []
    latest = runs[0] if runs else None
    return {
        "status": (
            "never assessed: run `gmp assess` or the assess_compliance DAG"
            if latest is None
            else f"last assessed {latest['at']} ({latest['actor']}): "
            + ("clean, no findings" if not latest["findings"] else f"{latest['findings']} finding(s)")
        ),
        "findings": latest["items"] if latest else [],
        "next_due": next_due(policy),
        "report_readers": latest["report_readers"] if latest else {},
        "history": runs,
    }
