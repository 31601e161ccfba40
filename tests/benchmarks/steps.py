"""One measured pipeline step, run in a fresh interpreter by the benchmarks (tests/benchmarks/test_pipeline_bench.py).

    python -m tests.benchmarks.steps STEP --backend duckdb|postgres --home DIR --export DIR [--pg-database DB]

The parent reads this process's peak RSS from os.wait4 (see conftest.run_step); this process prints
one JSON line of its own figures (seconds of the measured work, sub-timings, row counts) last on
stdout. Nothing here asserts a time. Steps:

- ingest: export -> DuckDB raw tables (ingest_export: validation, quarantine, the raw CRM gate);
  on postgres also warehouse.postgres.prepare (key function, governance tables, COPY of raw.*).
- dbt_build: `dbt build` on the backend's target (in this process, dbtRunner).
- gates: the campaign-audience gate and the vendor-payload gate as prepare_campaign / draft_sync call them.
- planning: prepare_campaign (audience gate + unit planning + ledger intent + budget check).
- cohorts_model: `dbt run --select generation_cohorts` (the cohort cells, k-anonymous).
- baseline: the ungoverned audience query (BASELINE_SQL) on the same warehouse.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT = PROJECT_ROOT / "dbt_project"
AS_OF = "2026-11-15T00:00:00"
CAMPAIGN = "spring_newsletter"

#: The ungoverned baseline: "who has an email and whose latest email_marketing consent event is a
#: grant", with the same allow-listed attributes and a plain cohort count. No consent age, no second
#: consent (ai_personalization), no withdrawal tie-break, no DSR suppression (erasure, objection,
#: restriction), no age rule, no duplicate-email rule, no pseudonym, no k-anonymity, no PII hook, no
#: tests, no gates. Portable SQL: the same text runs on DuckDB and Postgres.
BASELINE_SQL = [
    "drop schema if exists bench_baseline cascade",
    "create schema bench_baseline",
    """
    create table bench_baseline.audience as
    with latest_email_consent as (
        select contact_id, action,
               row_number() over (partition by contact_id order by occurred_at desc) as recency_rank
        from raw.crm_consent_events
        where purpose = 'email_marketing' and occurred_at <= timestamp '{as_of}'
    ),
    last_purchase as (
        select contact_id, product_category,
               row_number() over (partition by contact_id order by occurred_at desc) as recency_rank
        from raw.crm_activity
        where event_type = 'purchase' and product_category is not null and occurred_at <= timestamp '{as_of}'
    )
    select c.contact_id, c.email_normalized as email, c.language, c.country, c.lifecycle_stage, c.interests,
           p.product_category as last_purchase_category
    from raw.crm_contacts c
    join latest_email_consent l on l.contact_id = c.contact_id and l.recency_rank = 1 and l.action = 'grant'
    left join last_purchase p on p.contact_id = c.contact_id and p.recency_rank = 1
    where c.email_normalized is not null and c.email_normalized <> ''
    """,
    """
    create table bench_baseline.cohorts as
    select language, country, lifecycle_stage, split_part(coalesce(interests, ''), ';', 1) as interest,
           last_purchase_category, count(*) as members
    from bench_baseline.audience
    group by 1, 2, 3, 4, 5
    """,
]

#: What the gates and prepare_campaign read; on postgres they are read from there (see _pg_mirror).
GATE_TABLES = (
    "marts.campaign_audience",
    "marts.campaign_recipients",
    "marts.generation_cohorts",
    "marts.audience_funnel",
    "raw.crm_contacts",
    "raw.crm_consent_events",
    "raw.crm_dsr_requests",
)


class Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def wrap(self, module, attribute: str, name: str) -> None:
        """Time every call of module.attribute under `name` (calls looked up on the module at run time)."""
        original = getattr(module, attribute)

        def timed(*args, **kwargs):
            with self(name):
                return original(*args, **kwargs)

        setattr(module, attribute, timed)


def _as_of() -> datetime:
    return datetime.fromisoformat(AS_OF)


def _dbt(target: str, home: Path, *args: str) -> dict:
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(
        [
            *args,
            "--project-dir", str(DBT_PROJECT),
            "--profiles-dir", str(DBT_PROJECT),
            "--target", target,
            "--target-path", str(home / f"dbt_target_{target}"),
            "--log-path", str(home / f"dbt_logs_{target}"),
            "--vars", json.dumps({"as_of": AS_OF}),
            "--quiet",
        ]
    )  # fmt: skip
    if not result.success:
        failures = []
        if result.exception is not None:
            failures.append(repr(result.exception))
        elif result.result is not None:
            failures = [f"{r.node.unique_id}: {r.status} {r.message or ''}" for r in result.result.results
                        if str(r.status) not in {"pass", "success", "no-op"}]  # fmt: skip
        raise RuntimeError(f"dbt {' '.join(args)} on {target} failed: {'; '.join(failures)[:2000]}")
    return {"nodes": len(result.result.results) if result.result is not None else 0}


def step_ingest(args, timer: Timer) -> dict:
    from governed_marketing.crm import ingest as ingest_module
    from governed_marketing.policy import load_policy
    from governed_marketing.warehouse import connect

    timer.wrap(ingest_module, "raw_gate_frame", "raw_crm_gate_s")
    timer.wrap(ingest_module, "raw_crm_gate", "raw_crm_gate_s")
    policy = load_policy()
    path = args.home / "warehouse.duckdb"
    for stale in (path, path.with_name("warehouse.duckdb.wal")):
        stale.unlink(missing_ok=True)
    with timer("duckdb_ingest_s"):
        conn = connect(path)
        try:
            result = ingest_module.ingest_export(
                args.export, conn=conn, policy=policy, landing_root=args.home / "landing"
            )
        finally:
            conn.close()
    figures = {"contacts_read": result.contacts_read, "rows_quarantined": result.rows_quarantined}
    if args.backend == "postgres":
        from governed_marketing.settings import get_settings
        from governed_marketing.warehouse import postgres as warehouse_postgres

        with timer("postgres_copy_s"):
            prepared = warehouse_postgres.prepare(get_settings(), policy, duckdb_path=path)
        figures["postgres_raw_rows"] = sum(prepared.raw_rows.values())
    return figures


def step_dbt_build(args, timer: Timer) -> dict:
    with timer("dbt_build_s"):
        return _dbt(args.backend, args.home, "build")


def step_cohorts_model(args, timer: Timer) -> dict:
    with timer("cohorts_model_s"):
        return _dbt(args.backend, args.home, "run", "--select", "generation_cohorts")


def _pg_mirror(timer: Timer):
    """An in-memory DuckDB holding GATE_TABLES as read from Postgres (COPY ... TO STDOUT, typed by Arrow).

    prepare_campaign and the gates take a DuckDB connection today; on postgres they run on what they
    would read from the warehouse, and the read is timed (read_from_postgres_s).
    """
    import io

    import duckdb
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    from governed_marketing.warehouse import postgres as warehouse_postgres

    types = {
        "timestamp without time zone": pa.timestamp("us"),
        "timestamp with time zone": pa.timestamp("us", tz="UTC"),
        "date": pa.date32(),
        "bigint": pa.int64(),
        "integer": pa.int64(),
        "smallint": pa.int64(),
        "boolean": pa.bool_(),
        "double precision": pa.float64(),
        "real": pa.float64(),
        "numeric": pa.float64(),
    }
    from governed_marketing.warehouse import DuckDBWarehouse, schema

    mirror = DuckDBWarehouse(duckdb.connect(":memory:"))
    mirror.execute("set TimeZone = 'UTC'")
    schema.ensure(mirror)
    with timer("read_from_postgres_s"), warehouse_postgres.session() as pg, pg.cursor() as cur:
        for qualified in GATE_TABLES:
            schema, table = qualified.split(".")
            cur.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = %s and table_name = %s order by ordinal_position",
                [schema, table],
            )
            columns = cur.fetchall()
            if not columns:
                raise LookupError(f"{qualified} does not exist in the Postgres warehouse")
            buffer = io.BytesIO()
            cur.copy_expert(f'copy "{schema}"."{table}" to stdout with (format csv, header true)', buffer)
            buffer.seek(0)
            column_types = {name: types.get(kind, pa.string()) for name, kind in columns}
            frame = pa_csv.read_csv(
                buffer,
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),  # notes hold line breaks
                convert_options=pa_csv.ConvertOptions(
                    column_types=column_types, strings_can_be_null=True, quoted_strings_can_be_null=False
                ),
            )
            mirror.execute(f"create schema if not exists {schema}")
            mirror.register("incoming", frame)
            mirror.execute(f"create table {qualified} as select * from incoming")
            mirror.unregister("incoming")
    return mirror


def _campaign_conn(args, timer: Timer):
    from governed_marketing.warehouse import connect

    if args.backend == "postgres":
        return _pg_mirror(timer)
    return connect(args.home / "warehouse.duckdb")


def step_gates(args, timer: Timer) -> dict:
    """The audience gate exactly as prepare_campaign calls it, then the vendor-payload gate over the units."""
    from governed_marketing.generation import campaign
    from governed_marketing.policy import load_policy
    from governed_marketing.validation import audience as audience_gate
    from governed_marketing.validation import record_gate

    policy, as_of, run_id = load_policy(), _as_of(), f"bench-gates-{os.getpid()}"
    conn = _campaign_conn(args, timer)
    try:
        with timer("audience_gate_s"):
            audience = conn.execute(
                "select * from marts.campaign_audience where campaign_id = ? order by recipient_pseudonym", [CAMPAIGN]
            ).df()
            checked = audience_gate.audience_gate_frame(
                conn, audience, policy=policy, campaign_id=CAMPAIGN, as_of=as_of
            )
            result = audience_gate.audience_gate(checked, policy=policy, campaign_id=CAMPAIGN)
            record_gate(conn, run_id, result)
        with timer("unit_planning_untimed_s"):  # needed to build the payload; measured by the planning step
            work = campaign.load_work(conn, policy, CAMPAIGN, provider="offline", model="offline", as_of=as_of)
            to_request, _ = campaign.units_to_request(conn, work)
        with timer("payload_gate_s"):
            campaign.check_payload(conn, run_id, policy, work, to_request)
    finally:
        conn.close()
    return {"audience_rows": len(audience), "audience_gate_passed": result.success, "units": len(to_request)}


def step_planning(args, timer: Timer) -> dict:
    from governed_marketing.generation import campaign
    from governed_marketing.policy import load_policy
    from governed_marketing.validation import audience as audience_gate

    timer.wrap(audience_gate, "audience_gate_frame", "audience_gate_inside_s")
    timer.wrap(audience_gate, "audience_gate", "audience_gate_inside_s")
    policy = load_policy()
    conn = _campaign_conn(args, timer)
    try:
        with timer("prepare_campaign_s"):
            outcome = campaign.prepare_campaign(
                CAMPAIGN, conn=conn, policy=policy, provider="offline", model="offline", transport="offline",
                as_of=_as_of(), run_id=f"bench-plan-{os.getpid()}",
            )  # fmt: skip
    finally:
        conn.close()
    return {"audience": outcome.audience, "cohorts": outcome.cohorts, "units": outcome.units}


_BASELINE_COUNTS = (
    "select (select count(*) from bench_baseline.audience), (select count(*) from bench_baseline.cohorts)"
)


def step_baseline(args, timer: Timer) -> dict:
    statements = [s.format(as_of=AS_OF.replace("T", " ")) for s in BASELINE_SQL]
    if args.backend == "postgres":
        from governed_marketing.warehouse import postgres as warehouse_postgres

        with timer("baseline_s"), warehouse_postgres.session() as pg, pg.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
            cur.execute(_BASELINE_COUNTS)
            audience, cohorts = cur.fetchone()
    else:
        from governed_marketing.warehouse import connect

        with timer("baseline_s"):
            conn = connect(args.home / "warehouse.duckdb")
            try:
                for statement in statements:
                    conn.execute(statement).fetchall()
                audience, cohorts = conn.execute(_BASELINE_COUNTS).fetchone()
            finally:
                conn.close()
    return {"audience": int(audience), "cohort_cells": int(cohorts)}


STEPS = {
    "ingest": step_ingest,
    "dbt_build": step_dbt_build,
    "gates": step_gates,
    "planning": step_planning,
    "cohorts_model": step_cohorts_model,
    "baseline": step_baseline,
}


def vm_hwm_kib() -> int | None:
    """This process's peak RSS since its exec (VmHWM). Not ru_maxrss: that also holds the RSS the
    forked child inherited from its parent before exec (a large pytest parent would show up)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=sorted(STEPS))
    parser.add_argument("--backend", choices=("duckdb", "postgres"), default="duckdb")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--export", type=Path)
    args = parser.parse_args(argv)
    timer = Timer()
    started = time.perf_counter()
    figures = STEPS[args.step](args, timer)
    figures["wall_s"] = time.perf_counter() - started
    figures.update(timer.seconds)
    figures["vm_hwm_kib"] = vm_hwm_kib()
    sys.stdout.write("\n" + json.dumps(figures, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
