"""Draw bench/RESULTS.md from bench/results.json.

Called after every `record`; by hand: `python -m tests.benchmarks.results_table [results.json]`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HEADER = """# Benchmark results

Generated from `bench/results.json` by `tests/benchmarks/results_table.py` (every `make bench` redraws
it; do not edit by hand). Commands: `make bench` (100,000 contacts) and
`GMP_BENCH_CONTACTS=1000000 make bench` (1,000,000). Exports come from
`gmp crm generate --contacts N --seed 1`, generated once per size and cached (GMP_BENCH_CACHE).

**What the figures mean.** Every step runs in a fresh Python process (`tests/benchmarks/steps.py`).
*Wall* is the time of the step's work inside that process (interpreter start and module imports
excluded; the whole process's wall time is in results.json as `process_wall_median_s`). *Peak RSS* is
the maximum resident set size of that process (and any child it waited for), from `os.wait4`: on
Postgres it is the client process only; the server's own memory (shared buffers, work_mem of the
backends) is not in it. At 100k: median of 3 runs; at 1M: one run unless the header says otherwise.

- **ingest**: export files -> DuckDB raw tables with `ingest_export` (contract checks, quarantine,
  suppression door, the raw CRM gate, upserts, landing archive), from an empty warehouse. Postgres:
  the same DuckDB ingest **plus** `warehouse.postgres.prepare` (key function, governance tables, COPY
  of the four raw tables, ANALYZE); the COPY share is in results.json as `postgres_copy_s`.
- **dbt build**: `dbt build` of the whole project (models, data tests, unit tests, the PII
  classification hook) on the backend's target (dbt-duckdb / dbt-postgres), in-process dbtRunner.
- **gates**: the raw CRM gate (Great Expectations over each file's loaded rows, timed inside the
  ingest run: `raw_crm_gate_s`) + the campaign-audience gate (audience read, independent eligibility
  re-check on the raw tables, GX suite, evidence row) + the vendor-payload gate over the cohort
  units, called as `prepare_campaign` / `draft_sync` call them. Peak RSS is the process running the
  audience and payload gates (it also builds the units the payload gate needs); the raw gate's memory
  is inside the ingest's peak.
- **cohort planning**: `dbt run --select generation_cohorts` (the k-anonymous cells), and
  `prepare_campaign` (audience gate + one unit per cell + ledger intent + cost estimate + budget
  check) for `spring_newsletter` with the offline provider.
- On **Postgres**, `prepare_campaign` and the gates take a DuckDB connection today: the process first
  reads the tables they read (the four marts, raw contacts, consent events, DSR requests) from
  Postgres with `COPY ... TO STDOUT` into an in-memory DuckDB and runs the same code there; that read
  is included in the Postgres figures (and shown alone as `read_from_postgres_s` in results.json).
- **baseline** (the same transforms without the governance steps), one SQL script on the same
  warehouse, same as-of: `bench_baseline.audience` = contacts with a non-empty normalized email whose
  latest `email_marketing` consent event (by occurred_at, as of the run) is `grant`, with language,
  country, lifecycle stage, interests and the category of the latest purchase; and
  `bench_baseline.cohorts` = a plain `group by` of those attributes with a count. Left out: the
  consent age limit, the second required consent (ai_personalization), the withdraw-wins tie-break
  and event de-duplication, erasure/objection/restriction suppression, the minimum-age rule, the
  one-message-per-email rule, the HMAC pseudonym, k-anonymity generalization, data tests, unit
  tests, the PII-classification hook, the funnel mart and every gate. It runs as plain SQL through
  one connection, so dbt's own start-up (parse, compile, ~seconds) is part of the governed figure.
- **governance overhead** = governed (dbt build + gates) / baseline.
"""


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return str(value)


def _step(steps: dict, name: str) -> tuple[str, str]:
    step = steps.get(name)
    if not step:
        return "n/a", "n/a"
    return _fmt(step["median_s"]), _fmt(step["peak_rss_mb"])


def _pipeline_section(data: dict, contacts: int) -> list[str]:
    backends = {b: data.get(f"pipeline_{b}_{contacts}") for b in ("duckdb", "postgres")}
    present = {b: f for b, f in backends.items() if f}
    if not present:
        return []
    runs = sorted({f["repeats"] for f in present.values()})
    runs_text = "median of 3 runs" if runs == [3] else ", ".join(f"{r} run(s)" for r in runs)
    lines = [f"## Pipeline, {contacts:,} contacts ({runs_text})", ""]
    lines.append("| step | DuckDB wall s | DuckDB peak RSS MB | Postgres wall s | Postgres peak RSS MB |")
    lines.append("| --- | ---: | ---: | ---: | ---: |")

    def row(label: str, cells: dict[str, tuple[str, str]]) -> None:
        duck = cells.get("duckdb", ("n/a", "n/a"))
        pg = cells.get("postgres", ("n/a", "n/a"))
        lines.append(f"| {label} | {duck[0]} | {duck[1]} | {pg[0]} | {pg[1]} |")

    def each(fn) -> dict[str, tuple[str, str]]:
        return {b: fn(f) for b, f in present.items()}

    row("ingest (Postgres: + COPY load)", each(lambda f: _step(f["steps"], "ingest")))
    row("  of which raw CRM gate", each(lambda f: (_fmt(f["steps"]["ingest"].get("raw_crm_gate_s")), "-")))
    row("  of which COPY to Postgres", each(lambda f: (_fmt(f["steps"]["ingest"].get("postgres_copy_s")), "-")))
    row("dbt build", each(lambda f: _step(f["steps"], "dbt_build")))
    row(
        "gates (raw CRM + audience + payload)",
        each(lambda f: (_fmt(f["gates_total_s"]), _fmt(f["steps"].get("gates", {}).get("peak_rss_mb")))),
    )
    row("  of which audience gate", each(lambda f: (_fmt(f["steps"]["gates"].get("audience_gate_s")), "-")))
    row("  of which vendor-payload gate", each(lambda f: (_fmt(f["steps"]["gates"].get("payload_gate_s"), 2), "-")))
    row(
        "  of which read from Postgres",
        each(lambda f: (_fmt(f["steps"]["gates"].get("read_from_postgres_s")), "-")),
    )
    row("cohort planning: dbt run generation_cohorts", each(lambda f: _step(f["steps"], "cohorts_model")))
    row("cohort planning: prepare_campaign", each(lambda f: _step(f["steps"], "planning")))
    row("**governed** = dbt build + gates", each(lambda f: (_fmt(f["governed_s"]), "-")))
    row("**baseline** (ungoverned audience SQL)", each(lambda f: _step(f["steps"], "baseline")))
    row(
        "**governance overhead** (governed / baseline)",
        each(lambda f: (f"{_fmt(f['governance_overhead_ratio'])}x", "-")),
    )
    counts = []
    for backend, figures in present.items():
        plan = figures["steps"].get("planning", {})
        base = figures["steps"].get("baseline", {})
        counts.append(
            f"{backend}: governed audience {_fmt(plan.get('audience'))} in {_fmt(plan.get('cohorts'))} cells; "
            f"baseline audience {_fmt(base.get('audience'))} in {_fmt(base.get('cohort_cells'))} groups"
        )
    lines += ["", "Rows: " + "; ".join(counts) + ".", ""]
    return lines


def _erasure_section(data: dict) -> list[str]:
    keys = sorted(k for k in data if k.startswith("erasure_") and isinstance(data[k], dict) and "people" in data[k])
    if not keys:
        return []
    lines = [
        "## Erasure: warehouse deletes, set-based vs one person at a time",
        "",
        "Set-based: the whole batch in one statement per table, by the production engine"
        " (`privacy.erasure.erase_warehouse`) on both warehouses. Per person: the same function called once per"
        " person, timed on a sample and **extrapolated** linearly to the batch (sample size in the column)."
        " Raw, quarantine, every `meta.subject_column` model table, the generation ledger and the suppression"
        " list. DuckDB: without the file compaction. Postgres: set-based is shown with VACUUM FULL of every"
        " table (physical, what erasure runs after the deletes) and for the deletes alone; per person: deletes"
        " only.",
        "",
        "| warehouse | contacts | people | set-based s | set-based, deletes only s | per person (sample)"
        " | per person, extrapolated s | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in keys:
        figures = data[key]
        for people, row in sorted(figures["people"].items(), key=lambda kv: int(kv[0])):
            set_s = row.get("set_based_s")
            per_s = row.get("per_person_extrapolated_s")
            ratio = f"{per_s / set_s:,.0f}x" if set_s and per_s else "n/a"
            lines.append(
                f"| {figures['backend']} | {figures['contacts']:,} | {int(people):,} | {_fmt(set_s, 2)} | "
                f"{_fmt(row.get('set_based_deletes_s'), 2)} | {row.get('per_person_sample')} in "
                f"{_fmt(row.get('per_person_sample_s'), 2)} s | {_fmt(per_s)} | {ratio} |"
            )
    lines.append("")
    return lines


def _dag_section(data: dict) -> list[str]:
    figures = data.get("dag_parse")
    if not figures:
        return []
    lines = [
        f"## DAG parse time (Airflow DagBag on one file, fresh interpreter, median of {figures['repeats']})",
        "",
        f"`import airflow` alone: {figures['import_airflow_median_s']:.2f} s (not in the parse figure).",
        "",
        "| DAG file | DAGs | parse s | process wall s | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in sorted(figures["files"].items()):
        lines.append(
            f"| {name} | {row['dags']} | {row['parse_median_s']:.2f} | {row['process_wall_median_s']:.1f}"
            f" | {row['peak_rss_mb']} |"
        )
    lines.append("")
    return lines


def render(data: dict) -> str:
    sizes = sorted(
        {int(k.rsplit("_", 1)[1]) for k in data if k.startswith("pipeline_") and k.rsplit("_", 1)[1].isdigit()}
    )
    lines = [HEADER]
    for contacts in sizes:
        lines += _pipeline_section(data, contacts)
    lines += _erasure_section(data)
    lines += _dag_section(data)
    other = sorted(k for k in data if not k.startswith(("pipeline_", "erasure_", "dag_parse")))
    if other:
        lines += ["Other benchmarks in results.json: " + ", ".join(f"`{k}`" for k in other) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_table(results: Path) -> Path:
    data = json.loads(results.read_text())
    out = results.with_name("RESULTS.md")
    out.write_text(render(data))
    return out


if __name__ == "__main__":
    print(
        write_table(
            Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "bench" / "results.json"
        )
    )
