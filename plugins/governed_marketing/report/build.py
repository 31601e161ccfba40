"""Collect the evidence of the latest run and write the report, its JSON twin and the Data Docs.

Everything here is read from what the run recorded (ops.pipeline_steps, ops.gate_results, the
marts' counts, raw.quarantine's reasons), from governance.yml and from the dbt manifest. No query
selects a column that holds personal data.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from governed_marketing import warehouse
from governed_marketing.policy import Policy, load_policy
from governed_marketing.privacy import audit
from governed_marketing.privacy.report import PrivacySection, privacy_section
from governed_marketing.report.art30 import records_of_processing
from governed_marketing.report.charts import funnel_chart
from governed_marketing.report.labels import describe
from governed_marketing.settings import Settings, get_settings
from governed_marketing.summary import EXCLUSION_COLUMNS
from governed_marketing.validation.classification import manifest_classes
from governed_marketing.validation.evidence import latest_gate_results
from governed_marketing.validation.gates import GateResult
from governed_marketing.warehouse import table_exists

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

REPORT_VERSION = 1
SECTIONS = (
    ("run-summary", "Run summary"),
    ("audience-funnel", "Audience funnel"),
    ("validation-gates", "Validation gates"),
    ("vendors", "What went to which vendor"),
    ("content-guardrails", "Content guardrails"),
    ("quarantine", "Quarantine"),
    ("records-of-processing", "Records of processing (Art. 30)"),
    ("delivery", "Delivery"),
    ("privacy-requests", "Privacy requests"),
    ("regular-assessment", "Regular assessment"),
)
#: Columns of a payload frame that the gate computes (k holders, items outside the vocabulary); never sent.
_NOT_SENT_SUFFIXES = ("_holders", "_outside_vocabulary")
BEFORE_FIRST_INGEST: PrivacySection = {
    "status": "not reported yet",
    "notes": ["No warehouse yet: the privacy requests are reported once the first export is loaded."],
}


def build_report(
    settings: Settings | None = None,
    *,
    failure: str | None = None,
    privacy: Callable[..., PrivacySection] | None = None,
    out_dir: Path | None = None,
) -> Path:
    """Rebuild `$GMP_HOME/reports/` (index.html, report.json, data_docs/) and return index.html's path.

    Args:
        failure: the one-line reason a `gmp run` failed, shown in the run summary.
        privacy: the privacy-requests section provider (tests pass their own); by default
            `privacy.report.privacy_section`.
        out_dir: where to write it instead of `$GMP_HOME/reports/` (a run's own copy).
    """
    from governed_marketing.dbt import ensure_manifest
    from governed_marketing.validation.docs import build_data_docs

    settings = settings or get_settings()
    policy = load_policy(settings.policy_path)
    reports = Path(out_dir) if out_dir is not None else settings.path("reports")
    reports.mkdir(parents=True, exist_ok=True)
    classes = manifest_classes(ensure_manifest(settings))
    provider = privacy or privacy_section
    evidence: dict[str, Any] = {}
    gates: list[tuple[str, GateResult]] = []
    privacy_requests: PrivacySection = BEFORE_FIRST_INGEST
    audit_head = None
    assessment = assessment_section(None, policy)
    delivery: dict[str, Any] = {"campaigns": [], "unsubscribes": {}, "click_to_suppression_seconds": None}
    if warehouse.exists(settings):
        with warehouse.session(read_only=True, settings=settings) as conn:
            evidence, gates = _collect(conn, policy)
            audit_head = audit.head(conn, settings.home_dir)  # a copy outside the table, checked by verify
            assessment = assessment_section(conn, policy)
            privacy_requests = _privacy_section(provider, conn, policy, settings)
            from governed_marketing.delivery.report import delivery_section

            delivery = delivery_section(conn)
    pages = build_data_docs(gates, reports / "data_docs")
    data = _assemble(policy, classes, evidence, gates, pages, failure=failure, privacy=privacy_requests)
    data["audit_head"] = audit_head
    data["security_of_processing"] = security_of_processing(settings)
    data["regular_assessment"] = assessment
    data["delivery"] = delivery
    _write(reports / "report.json", json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    _write(reports / "index.html", render_html(data))
    return reports / "index.html"


def assessment_section(conn: Warehouse | None, policy: Policy) -> dict[str, Any]:
    """The "Regular assessment" section (assessment.py): latest findings, what is due next, the history."""
    from governed_marketing.assessment import report_section

    return report_section(conn, policy)


def run_report_dir(settings: Settings, dag_id: str, run_id: str) -> Path:
    """`$GMP_HOME/reports/runs/<dag_id>/<run_id>/`: the report as one DAG run left it."""
    from governed_marketing.report.paths import run_dir_name

    return settings.home_dir / "reports" / "runs" / dag_id / run_dir_name(run_id)


def publish_run_report(
    dag_id: str, run_id: str, *, failure: str | None = None, settings: Settings | None = None
) -> Path:
    """Build the report of one DAG run into its own directory, then make it the latest one.

    Returns the run's index.html. The latest copy (`$GMP_HOME/reports/index.html`, report.json,
    data_docs/) is replaced file by file, so a reader never sees a half-written page.
    """
    settings = settings or get_settings()
    run_dir = run_report_dir(settings, dag_id, run_id)
    index = build_report(settings, failure=failure, out_dir=run_dir)
    latest = settings.path("reports")
    docs = run_dir / "data_docs"
    if docs.is_dir():
        staged = latest / "data_docs.partial"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(docs, staged)
        previous = latest / "data_docs.previous"
        shutil.rmtree(previous, ignore_errors=True)
        if (latest / "data_docs").exists():
            os.replace(latest / "data_docs", previous)
        os.replace(staged, latest / "data_docs")
        shutil.rmtree(previous, ignore_errors=True)
    for name in ("report.json", "index.html"):
        _write(latest / name, (run_dir / name).read_text(encoding="utf-8"))
    _apply_run_report_retention(settings, run_dir)
    return index


def _apply_run_report_retention(settings: Settings, run_dir: Path) -> None:
    """governance.yml `run_reports`: the DAG's older run folders go once this run's report is written."""
    from governed_marketing.policy import PolicyError, load_policy
    from governed_marketing.report.paths import prune_run_reports

    try:
        rule = load_policy(settings.policy_path).run_reports
    except PolicyError:  # the report already says the policy is bad; keep every folder until it is fixed
        log.warning("run_reports retention skipped: governance.yml does not load")
        return
    if rule is not None:
        deleted = prune_run_reports(run_dir.parent, rule, keep=run_dir)
        if deleted:
            log.info("run_reports retention: deleted %d report folder(s) of %s", len(deleted), run_dir.parent.name)


def _privacy_section(
    provider: Callable[..., PrivacySection], conn, policy: Policy, settings: Settings
) -> PrivacySection:
    """The privacy-requests section; if its provider fails, the section says so and the rest still renders."""
    try:
        return provider(conn, policy=policy, settings=settings)
    except Exception as exc:
        log.warning("the privacy-requests section could not be built: %s", type(exc).__name__, exc_info=True)
        return {"status": f"could not be built ({type(exc).__name__}); see the run's log", "notes": []}


def render_html(data: dict) -> str:
    """The report page from report.json's data (Jinja2 template shipped in the package)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("governed_marketing.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["yes_no"] = _yes_no
    return env.get_template("index.html.j2").render(report=data, sections=SECTIONS)


def _yes_no(value: Any) -> Any:
    """A boolean a provider left in a cell reads as a word, never as Python's True/False."""
    return ("yes" if value else "no") if isinstance(value, bool) else value


def _write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


# ---- evidence from the warehouse -----------------------------------------------------------------


def _rows(conn: Warehouse, sql: str, params: list | None = None) -> list[dict]:
    cursor = conn.execute(sql, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


def _collect(conn: Warehouse, policy: Policy) -> tuple[dict, list[tuple[str, GateResult]]]:
    """The latest pass: its ingest, its generation steps, its gates, the funnel and the quarantine."""
    evidence: dict[str, Any] = {"ingest": None, "generate": {}, "funnel": [], "quarantine": []}
    gates: list[tuple[str, GateResult]] = []
    if not table_exists(conn, "ops", "pipeline_steps"):
        return evidence, gates
    ingests = _rows(
        conn,
        "select run_id, counts_json, recorded_at from ops.pipeline_steps where step = 'ingest' "
        "order by recorded_at desc limit 2",
    )
    if not ingests:
        return evidence, gates
    ingest = ingests[0]
    counts = json.loads(ingest["counts_json"])
    evidence["ingest"] = {"run_id": ingest["run_id"], "recorded_at": ingest["recorded_at"], **counts}
    # Each campaign's latest generation run, its steps (prepare, draft, collect, publish) folded into one.
    from governed_marketing.summary import merge_generation_step

    for row in _rows(
        conn,
        """
        select s.run_id, s.step, s.subject, s.counts_json from ops.pipeline_steps s
        join (
            select subject, run_id from (
                select subject, run_id,
                    row_number() over (partition by subject order by recorded_at desc) as rank_
                from ops.pipeline_steps
                where step like 'generate%' and recorded_at >= ?
            ) ranked where rank_ = 1
        ) latest on latest.subject = s.subject and latest.run_id = s.run_id
        where s.step like 'generate%'
        order by s.recorded_at
        """,
        [ingest["recorded_at"]],
    ):
        entry = evidence["generate"].setdefault(row["subject"], {"run_id": row["run_id"]})
        counts = json.loads(row["counts_json"])
        merge_generation_step(entry, row["step"], counts)
        if isinstance(counts.get("failed"), str):
            entry["failed"] = counts["failed"]

    # Gates of this pass: the raw gate ran under the load's id (when the export was first loaded,
    # or just before a failed ingest); the campaign gates under the generation DAG run.
    load_id = counts.get("load_id")
    if load_id:
        gates += [g for g in latest_gate_results(conn, [load_id]) if g[1].gate == "raw_crm"]
    elif table_exists(conn, "ops", "gate_results"):
        since = ingests[1]["recorded_at"] if len(ingests) > 1 else datetime(1970, 1, 1)
        window = _rows(
            conn,
            "select distinct run_id from ops.gate_results where gate = 'raw_crm' "
            "and validated_at > ? and validated_at <= ?",
            [since, ingest["recorded_at"]],
        )
        gates += [g for g in latest_gate_results(conn, [r["run_id"] for r in window]) if g[1].gate == "raw_crm"]
    run_ids = sorted({g["run_id"] for g in evidence["generate"].values()})
    if run_ids:
        gates += [g for g in latest_gate_results(conn, run_ids) if g[1].gate != "raw_crm"]

    if table_exists(conn, "marts", "audience_funnel"):
        evidence["funnel"] = _rows(conn, "select * from marts.audience_funnel order by campaign_id")
    if table_exists(conn, "raw", "quarantine"):
        where = "where load_id = ?" if load_id else ""
        evidence["quarantine"] = _rows(
            conn,
            f"""
            select file_name, regexp_replace(trim(part), ' \\(.*$', '') as reason, count(*) as rows
            from (
                select file_name, unnest(string_to_array(reason, '; ')) as part from raw.quarantine {where}
            ) as parts
            group by 1, 2
            order by file_name, rows desc, reason
            """,
            [load_id] if load_id else [],
        )
        evidence["quarantine_scope"] = f"load {load_id}" if load_id else "all loads"
        if load_id:  # the rows of this load still held, to reconcile with the count at load time
            evidence["quarantine_held"] = conn.execute(
                "select count(*) from raw.quarantine where load_id = ?", [load_id]
            ).fetchone()[0]
    return evidence, gates


# ---- the report's data -------------------------------------------------------------------------


def _gate_entry(run_id: str, result: GateResult, pages: dict) -> dict:
    items = (result.validation or {}).get("results", [])
    expectations = []
    column_set: list[str] = []
    for item, outcome in zip(items, result.outcomes, strict=False):
        config = item["expectation_config"]
        if config["type"] == "expect_table_columns_to_match_set":
            column_set = sorted(config["kwargs"].get("column_set") or [])
        expectations.append(
            {
                "rule": describe(config["type"], config["kwargs"]),
                "expectation": config["type"],
                "column": outcome.column,
                "success": outcome.success,
                "unexpected_count": outcome.unexpected_count,
                "result_format": outcome.result_format,
            }
        )
    page = pages.get((result.gate, result.subject))
    return {
        "gate": result.gate,
        "subject": result.subject,
        "success": result.success,
        "rows": result.rows,
        "run_id": run_id,
        "validated_at": result.validated_at,
        "summary": result.one_line(),
        "column_set": column_set,
        "failed": [e for e in expectations if not e["success"]],
        "expectations": expectations,
        "data_docs": quote(page) if page else None,
    }


def _sent_fields(gate: dict | None, default: list[str]) -> list[str]:
    """The keys the payload gate allowed (its exact column set), without the unit id and computed columns."""
    columns = (gate or {}).get("column_set") or []
    sent = [c for c in columns if c != "unit_id" and not c.endswith(_NOT_SENT_SUFFIXES)]
    return sent or default


def _vendors(policy: Policy, classes: dict, generate: dict, gates: dict) -> list[dict]:
    from governed_marketing.validation.payload import COHORT_BOOKKEEPING

    cohort_columns = [c for c in classes.get("generation_cohorts", {}) if c not in COHORT_BOOKKEEPING]
    contact_columns = classes.get("crm.crm_contacts", {})
    entries = []
    for campaign_id in policy.campaign_ids():
        campaign = policy.campaigns[campaign_id]
        purpose = policy.purpose_of(campaign_id)
        counts = generate.get(campaign_id, {})
        payload = gates.get(("vendor_payload", campaign_id))
        fields = _sent_fields(payload, cohort_columns)
        provider = counts.get("provider")
        if "failed" in counts and not (payload and payload["success"]):
            status = "nothing sent: the run stopped before the vendor"
        elif payload and not payload["success"]:
            status = "nothing sent: the vendor-payload gate failed"
        elif provider == "offline":
            status = "nothing sent: offline templates drafted the content locally"
        elif provider:
            calls, reused = counts.get("vendor_calls", 0), counts.get("reused_drafts", 0)
            unit = "cohort" if campaign.personalization == "cohort" else "per-recipient"
            via = "the Batch API" if counts.get("transport") == "batch" else "synchronous calls"
            shared = counts.get("shared_requests", 0)
            status = f"{calls:,} {unit} requests sent through {via} ({reused:,} drafts reused"
            status += f", {shared:,} units shared an identical request, paid once)" if shared else ")"
        else:
            status = "no generation recorded for this run"
        entries.append(
            {
                "campaign_id": campaign_id,
                "personalization": campaign.personalization,
                "provider": provider,
                "model": counts.get("model"),
                "status": status,
                "fields_sent": fields,
                "requests_validated": payload["rows"] if payload else 0,
                "vendor_calls": counts.get("vendor_calls", 0),
                "shared_requests": counts.get("shared_requests", 0),
                "reused_drafts": counts.get("reused_drafts", 0),
                "input_tokens": counts.get("input_tokens", 0),
                "output_tokens": counts.get("output_tokens", 0),
                "transport": counts.get("transport"),
                "estimated_cost_usd": counts.get("estimated_cost_usd", 0.0),
                "run_cost_usd": counts.get("run_cost_usd", 0.0),
                "cost_usd": counts.get("cost_usd", 0.0),
                "budget_usd": campaign.budget_usd,
                "failed_units": counts.get("failed_units", 0),
                "recipients_described": counts.get("audience", 0),
                "cohorts": counts.get("cohorts", 0),
                "k": policy.cohorts.k,
                "not_sent": sorted(c for c, k in contact_columns.items() if k != "none" and c not in fields),
                "vendors": [
                    {
                        "vendor": name,
                        "role": policy.vendors[name].role,
                        "region": policy.vendors[name].region,
                        "transfer_mechanism": policy.vendors[name].transfer_mechanism,
                        "dpa_signed": policy.vendors[name].dpa_signed,
                        "stores_data": policy.vendors[name].store,
                        "used_this_run": provider == name,
                    }
                    for name in purpose.vendors
                ],
            }
        )
    return entries


def _run_summary(policy: Policy, evidence: dict, failure: str | None) -> dict:
    ingest = evidence.get("ingest")
    if ingest is None:
        return {"status": "failed" if failure else "no run recorded yet", "failure": failure, "campaigns": []}
    reasons = [f"ingest: {ingest['failed']}"] if "failed" in ingest else []
    reasons += [f"{cid}: {c['failed']}" for cid, c in evidence["generate"].items() if "failed" in c]
    failed = failure or (reasons[0] if reasons else None)
    funnel = {row["campaign_id"]: row for row in evidence.get("funnel", [])}
    as_of = max((row["as_of"] for row in funnel.values() if row.get("as_of")), default=None)
    campaigns = []
    for campaign_id in policy.campaign_ids():
        counts = evidence["generate"].get(campaign_id, {})
        campaigns.append(
            {
                "campaign_id": campaign_id,
                "status": "failed" if "failed" in counts else ("done" if counts else "not run"),
                "audience": counts.get("audience", funnel.get(campaign_id, {}).get("audience", 0)),
                "dropped_by_last_moment_check": counts.get("dropped_before_vendor", 0),
                "cohorts": counts.get("cohorts", 0),
                "vendor_calls": counts.get("vendor_calls", 0),
                "messages": counts.get("messages", 0),
                "provider": counts.get("provider"),
                "model": counts.get("model"),
                "prompt_version": counts.get("prompt_version"),
            }
        )
    return {
        "status": "failed" if failed else "succeeded",
        "failure": failed,
        "as_of": as_of,
        "load_id": ingest.get("load_id"),
        "export_already_loaded": ingest.get("already_loaded"),
        "contacts_read": ingest.get("contacts_read"),
        "rows_quarantined": ingest.get("rows_quarantined"),
        "columns_dropped": ingest.get("columns_dropped") or {},  # column names only, never values
        "recorded_at": ingest.get("recorded_at"),
        "campaigns": campaigns,
    }


def _quarantine(evidence: dict) -> dict:
    """The quarantine by file and reason, reconciled with the count the ingest recorded.

    Rows can leave the quarantine after the load (an erasure removes a person's quarantined rows too),
    so the rows held now may be fewer than the load quarantined: the difference is shown with its reason.
    """
    ingest = evidence.get("ingest") or {}
    at_load = ingest.get("rows_quarantined")
    held = evidence.get("quarantine_held")
    removed = max(int(at_load) - int(held), 0) if at_load is not None and held is not None else 0
    if removed and held:
        why = "erased since by request (Art. 17 erasure also removes a person's quarantined rows)"
    elif removed:
        why = "erased since by request or purged with their load by retention"
    else:
        why = None
    return {
        "scope": evidence.get("quarantine_scope", "none"),
        "rows": evidence.get("quarantine", []),
        "rows_at_load": at_load,
        "rows_held": held,
        "rows_removed_since": removed,
        "removed_reason": why,
    }


def _assemble(
    policy: Policy,
    classes: dict,
    evidence: dict,
    gates: list[tuple[str, GateResult]],
    pages: dict,
    *,
    failure: str | None,
    privacy: PrivacySection,
) -> dict:
    gate_entries = [_gate_entry(run_id, result, pages) for run_id, result in gates]
    by_key = {(g["gate"], g["subject"]): g for g in gate_entries}
    funnel = []
    for row in evidence.get("funnel", []):
        excluded = {c.removeprefix("excluded_"): int(row[c] or 0) for c in EXCLUSION_COLUMNS if c in row}
        chart = asdict(funnel_chart(row["campaign_id"], int(row["contacts"] or 0), excluded, int(row["audience"] or 0)))
        funnel.append(
            {
                "campaign_id": row["campaign_id"],
                "as_of": row.get("as_of"),
                "contacts": int(row["contacts"] or 0),
                "excluded": excluded,
                "audience": int(row["audience"] or 0),
                "chart": chart,
            }
        )
    guardrails = [
        {
            "campaign_id": campaign_id,
            "gate": by_key.get(("generated_content", campaign_id)),
            "payload_gate": by_key.get(("vendor_payload", campaign_id)),
        }
        for campaign_id in policy.campaign_ids()
    ]
    return {
        "report_version": REPORT_VERSION,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "controller": policy.controller.name,
        "run_summary": _run_summary(policy, evidence, failure),
        "audience_funnel": funnel,
        "gates": gate_entries,
        "vendors": _vendors(policy, classes, evidence.get("generate", {}), by_key),
        "content_guardrails": guardrails,
        "quarantine": _quarantine(evidence),
        "records_of_processing": records_of_processing(policy, classes),
        "privacy_requests": privacy,
    }


# ---- security of processing (Art. 32) ----------------------------------------------------------------


def security_of_processing(settings: Settings) -> dict[str, Any]:
    """Which stores are encrypted at rest, who can read GMP_HOME, and what keys the audit chain: said plainly."""
    try:
        exports_encrypted = settings.resolve_export_key() is not None
        exports_note = (
            "Fernet (AES-128-CBC and HMAC-SHA256) under GMP_EXPORT_ENCRYPTION_KEY; files end in .fernet"
            if exports_encrypted
            else "in the clear: set GMP_EXPORT_ENCRYPTION_KEY to encrypt them"
        )
    except RuntimeError as exc:
        exports_encrypted, exports_note = False, str(exc)
    if settings.warehouse == "postgres":
        warehouse_store = {
            "store": f"warehouse (Postgres database {settings.pg_database})",
            "encrypted_at_rest": False,
            "note": "storage encryption is the database server's (volume or disk encryption); not managed here",
        }
    else:
        warehouse_store = {
            "store": "warehouse ($GMP_HOME/warehouse.duckdb)",
            "encrypted_at_rest": False,
            "note": "not encrypted by the product (DuckDB writes encrypted files only with its httpfs extension "
            "loaded); keep GMP_HOME on an encrypted disk",
        }
    home = settings.home_dir
    mode = f"{home.stat().st_mode & 0o777:04o}" if home.exists() else "not created yet"
    return {
        "stores": [
            warehouse_store,
            {
                "store": "access and portability exports ($GMP_HOME/exports)",
                "encrypted_at_rest": exports_encrypted,
                "note": exports_note,
            },
            {
                "store": "landing archives, outbox, receipts, reports, logs, Airflow metadata",
                "encrypted_at_rest": False,
                "note": "owner-only files; keep GMP_HOME on an encrypted disk",
            },
        ],
        "gmp_home_mode": mode,
        "audit_chain": "HMAC-SHA256 under "
        + ("GMP_AUDIT_KEY" if settings.audit_key is not None else "the demo key in $GMP_HOME/audit/audit.key")
        + "; head copied to $GMP_HOME/audit/heads.jsonl, every erasure receipt and report.json",
    }
