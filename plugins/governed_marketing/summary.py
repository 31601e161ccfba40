"""The end-of-run summary: counts from the evidence the run left in the warehouse, never rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from governed_marketing import warehouse
from governed_marketing.settings import Settings

EXCLUSION_COLUMNS = (
    "excluded_erasure_requested",
    "excluded_objection",
    "excluded_restriction",
    "excluded_consent_missing_or_withdrawn",
    "excluded_consent_expired",
    "excluded_under_minimum_age",
    "excluded_age_unknown",
    "excluded_duplicate_email",
)


@dataclass
class RunSummary:
    contacts_read: int = 0
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    columns_dropped: dict[str, list[str]] = field(default_factory=dict)  # names of columns outside the contract
    values_cleared: dict[str, int] = field(default_factory=dict)
    export_already_loaded: bool = False
    #: The models and content were kept from the last complete pass (nothing they are made from changed).
    kept: bool = False
    campaigns: dict[str, dict] = field(default_factory=dict)


def collect_summary(settings: Settings, run_ids: list[str], *, kept_run_ids: Sequence[str] = ()) -> RunSummary:
    """This pass's counts; the content of a kept pass (`kept_run_ids`) shows with nothing paid by this one."""
    summary = RunSummary(kept=bool(kept_run_ids))
    with warehouse.session(settings=settings) as conn:
        rows = conn.execute(
            "select step, subject, counts_json from ops.pipeline_steps where run_id = any(cast(? as varchar[]))",
            [[*run_ids, *kept_run_ids]],
        ).fetchall()
        funnel = conn.execute("select * from marts.audience_funnel order by campaign_id").df()
    for step, subject, counts_json in rows:
        counts = json.loads(counts_json)
        if step == "ingest":
            summary.contacts_read = counts["contacts_read"]
            summary.quarantined = counts["rows_quarantined"]
            summary.export_already_loaded = counts["already_loaded"]
            summary.columns_dropped = counts.get("columns_dropped", {})
            for item in counts["files"]:
                for reason, n in item["quarantine_reasons"].items():
                    key = f"{item['file_name']}: {reason}"
                    summary.quarantine_reasons[key] = summary.quarantine_reasons.get(key, 0) + n
                for reason, n in item.get("values_cleared", {}).items():
                    key = f"{item['file_name']}: {reason}"
                    summary.values_cleared[key] = summary.values_cleared.get(key, 0) + n
        elif step.startswith("generate"):
            merge_generation_step(summary.campaigns.setdefault(subject, {}), step, counts)
    for entry in summary.campaigns.values() if summary.kept else ():
        entry.update({"vendor_calls": 0, "shared_requests": 0, "reused_drafts": entry.get("units", 0)})
        entry.update(dict.fromkeys(RUN_SPEND, 0))
    for record in funnel.to_dict("records"):
        entry = summary.campaigns.setdefault(record["campaign_id"], {})
        entry["contacts"] = int(record["contacts"])
        entry["eligible"] = int(record["audience"])
        entry["excluded"] = {c.removeprefix("excluded_"): int(record[c]) for c in EXCLUSION_COLUMNS}
    with warehouse.session(settings=settings) as conn:
        _add_in_doubt(conn, summary)
    return summary


def _add_in_doubt(conn, summary: RunSummary) -> None:
    """Units sent without a recorded answer (SIGTERM, crash), and units that shared one paid request."""
    from governed_marketing.generation import ledger

    for campaign_id, entry in summary.campaigns.items():
        try:
            figures = ledger.in_doubt_totals(conn, campaign_id, entry.get("prompt_version"), entry.get("model"))
        except Exception:  # noqa: BLE001 - no ledger yet (generation never ran): nothing to say
            return
        entry.update(figures)


#: What the run itself paid for (the ledger's totals cover every run of the prompt version).
RUN_SPEND = ("run_input_tokens", "run_output_tokens", "run_cost_usd")


def merge_generation_step(entry: dict, step: str, counts: dict) -> None:
    """Fold the generation steps of one run (prepare, draft, collect, publish) into one campaign entry.

    Requests are what this run sent; reuse and the estimate come from prepare; tokens and cost are the
    ledger's totals for the campaign's prompt version and model (what it has cost so far).
    """
    if "failed" in counts and isinstance(counts["failed"], str):
        entry["failed_step"] = f"{step}: {counts['failed']}"
        return
    if step == "generate.prepare":
        entry["reused_drafts"] = counts.get("reused_drafts", 0)
        entry["estimated_cost_usd"] = counts.get("estimated_cost_usd", 0.0)
    elif step in ("generate.draft", "generate.collect"):
        calls = counts.get("vendor_calls", 0) if step == "generate.draft" else counts.get("resubmitted", 0)
        entry["vendor_calls"] = entry.get("vendor_calls", 0) + calls
        entry["shared_requests"] = entry.get("shared_requests", 0) + counts.get("shared_requests", 0)
        for key in RUN_SPEND:
            entry[key] = entry.get(key, 0) + counts.get(key, 0)
    else:  # publish (or the one-call `generate`): the campaign's totals; per-stage figures win
        staged = ("vendor_calls", "shared_requests", "reused_drafts", "estimated_cost_usd", *RUN_SPEND)
        entry.update({k: v for k, v in counts.items() if k not in staged or k not in entry})


def render_summary(summary: RunSummary, *, provider_line: str, console) -> None:
    """Print the summary as rich tables."""
    from rich.table import Table

    table = Table(title="Governed marketing run", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    loaded = " (export already loaded: nothing changed)" if summary.export_already_loaded else ""
    if summary.kept:
        loaded = " (export already loaded: models and content kept)"
    table.add_row("contacts read" + loaded, f"{summary.contacts_read:,}")
    table.add_row("rows quarantined (all files)", f"{summary.quarantined:,}")
    for reason, n in sorted(summary.quarantine_reasons.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {reason}", f"{n:,}")
    for file_name, columns in summary.columns_dropped.items():
        table.add_row(f"columns outside the contract, dropped: {file_name}", ", ".join(columns))
    for reason, n in sorted(summary.values_cleared.items(), key=lambda kv: -kv[1]):
        table.add_row(f"values cleared (row kept): {reason}", f"{n:,}")
    for campaign_id, c in sorted(summary.campaigns.items()):
        table.add_section()
        table.add_row(f"[bold]{campaign_id}[/]: valid contacts", f"{c.get('contacts', 0):,}")
        for reason, n in c.get("excluded", {}).items():
            table.add_row(f"  excluded: {reason.replace('_', ' ')}", f"{n:,}")
        table.add_row("  eligible", f"{c.get('eligible', 0):,}")
        table.add_row(
            "  dropped by the last-moment consent check",
            f"{c.get('dropped_before_vendor', 0):,}",
        )
        table.add_row("  cohorts", f"{c.get('cohorts', 0):,}")
        mode = f"{c.get('mode', 'cohort')}, {c.get('transport', 'offline')}"
        table.add_row(f"  draft units ({mode})", f"{c.get('units', 0):,}")
        table.add_row("  vendor calls (drafts reused)", f"{c.get('vendor_calls', 0):,} ({c.get('reused_drafts', 0):,})")
        if c.get("failed_units"):
            table.add_row("  units failed (requested again next run)", f"{c['failed_units']:,}")
        if c.get("shared_request_units"):
            table.add_row("  units sharing an identical request (paid once)", f"{c['shared_request_units']:,}")
        if c.get("units_ever_in_doubt"):
            table.add_row(
                "  units in doubt: sent, answer not recorded (still / ever)",
                f"{c.get('in_doubt_units', 0):,} / {c['units_ever_in_doubt']:,}",
            )
            table.add_row(
                "  USD possibly paid twice (unless the vendor honours Idempotency-Key)",
                f"{c.get('in_doubt_cost_usd', 0.0):.4f}",
            )
        table.add_row(
            "  tokens in / out: this run (all runs)",
            f"{c.get('run_input_tokens', 0):,} / {c.get('run_output_tokens', 0):,} "
            f"({c.get('input_tokens', 0):,} / {c.get('output_tokens', 0):,})",
        )
        budget = c.get("budget_usd")
        table.add_row(
            "  USD: estimate / this run / all runs" + (" / budget" if budget is not None else ""),
            f"{c.get('estimated_cost_usd', 0.0):.4f} / {c.get('run_cost_usd', 0.0):.4f} / {c.get('cost_usd', 0.0):.4f}"
            + (f" / {budget:.2f}" if budget is not None else ""),
        )
        table.add_row("  messages in the outbox", f"{c.get('messages', 0):,}")
    console.print(table)
    console.print(f"Content provider: {provider_line}")
