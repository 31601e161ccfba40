"""How long erasing many people from a large warehouse takes (`make bench`; not part of `make test`).

The warehouses are the ones the pipeline benchmark leaves built (conftest: duckdb_pipeline,
postgres_pipeline: a generated export ingested, the dbt models built).

- test_erasing_many_people_from_a_large_warehouse: a GMP_HOME like a production one (plus the
  campaign's outbox, offline provider); GMP_BENCH_ERASE (1000) erasure requests submitted and
  `process_pending` (what `gmp dsr process` runs) timed phase by phase. "privacy_erasure_<contacts>".
- test_warehouse_deletes_*: the warehouse deletes alone for 1,000 and 10,000 people (GMP_BENCH_ERASE_SIZES),
  set-based (the whole batch in one statement per table, what the library does) against one person
  at a time. Per person is timed on GMP_BENCH_PER_PERSON people (100) and extrapolated linearly to the
  batch. Both warehouses run the production engine, privacy.erasure.erase_warehouse; on Postgres the
  set-based figure includes its physical step (VACUUM FULL). "erasure_duckdb_<contacts>" and
  "erasure_postgres_<contacts>".

    GMP_BENCH_CONTACTS=1000000 uv run --frozen pytest -m benchmark tests/benchmarks/test_erasure_scale.py -s
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest

from tests.benchmarks.conftest import BENCH_KEY, CONTACTS, pg_admin, pg_drop, pg_params, pg_recreate, record

pytestmark = pytest.mark.benchmark

ERASE = int(os.environ.get("GMP_BENCH_ERASE", "1000"))
SIZES = [int(n) for n in os.environ.get("GMP_BENCH_ERASE_SIZES", "1000,10000").split(",")]
PER_PERSON_SAMPLE = int(os.environ.get("GMP_BENCH_PER_PERSON", "100"))
AS_OF = "2026-11-15T00:00:00"


def _sample_emails(warehouse_path: Path, n: int) -> list[str]:
    """n distinct normalized emails of raw.crm_contacts, shuffled with a fixed seed (same people on both backends)."""
    from governed_marketing import warehouse

    with warehouse.session(warehouse_path, read_only=True) as conn:
        emails = [
            r[0] for r in conn.execute("select distinct email_normalized from raw.crm_contacts order by 1").fetchall()
        ]
    random.Random(1).shuffle(emails)
    return emails[:n]


@pytest.fixture(scope="module")
def base_home(duckdb_pipeline, tmp_path_factory) -> Path:
    """The built GMP_HOME plus the campaign's outbox (GMP_BENCH_BASE_HOME reuses one built before)."""
    if os.environ.get("GMP_BENCH_BASE_HOME"):
        return Path(os.environ["GMP_BENCH_BASE_HOME"])
    from governed_marketing.orchestration.task_bodies import generate
    from governed_marketing.settings import reset_settings

    root = tmp_path_factory.mktemp("erasure-bench")
    home = root / "base"
    shutil.copytree(duckdb_pipeline, home, ignore=shutil.ignore_patterns("dbt_target_*", "dbt_logs_*"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        env.setenv("GMP_LLM_PROVIDER", "offline")
        env.setenv("GMP_PSEUDONYM_KEY", BENCH_KEY)
        reset_settings()
        started = time.perf_counter()
        generate("spring_newsletter", run_id="bench", as_of=AS_OF)
        (root / "build.json").write_text(json.dumps({"outbox_s": round(time.perf_counter() - started, 1)}))
        reset_settings()
    return home


def test_erasing_many_people_from_a_large_warehouse(base_home, tmp_path, monkeypatch):
    from governed_marketing import warehouse
    from governed_marketing.policy import load_policy
    from governed_marketing.privacy import dsr
    from governed_marketing.privacy.process import process_pending
    from governed_marketing.settings import get_settings, reset_settings

    home = tmp_path / "home"
    shutil.copytree(base_home, home)
    monkeypatch.setenv("GMP_HOME", str(home))
    monkeypatch.setenv("GMP_PSEUDONYM_KEY", BENCH_KEY)
    reset_settings()
    settings, policy = get_settings(), load_policy()
    key, _ = settings.resolve_pseudonym_key()
    emails = _sample_emails(settings.warehouse_path, ERASE)
    with warehouse.session(settings.warehouse_path) as conn:
        conn.execute("delete from raw.crm_dsr_requests").fetchall()  # only the erasures below
        for email in emails:
            dsr.submit(conn, "erasure", email, policy=policy, key=key)
    size_before = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    timings: dict[str, float] = {}
    started = time.perf_counter()
    result = process_pending(settings=settings, policy=policy, timings=timings)
    seconds = time.perf_counter() - started
    receipts = [json.loads(p.read_text()) for p in (home / "receipts").glob("*.json")]
    verified = sum(r["verification"]["verified"] for r in receipts)
    build = base_home.parent / "build.json"
    figures = {
        "contacts": CONTACTS,
        "people_erased": len(result.get("erasure", [])),
        "not_verified": len(result.get("failed", [])),
        "seconds_total": round(seconds, 1),
        "seconds_by_phase": {k: round(v, 1) for k, v in timings.items()},
        "rows_removed": sum(r["rows_removed_total"] for r in receipts),
        "gmp_home_bytes": size_before,
        "build": json.loads(build.read_text()) if build.exists() else None,
    }
    print(json.dumps(figures, indent=2))
    record(f"privacy_erasure_{CONTACTS}", figures)
    reset_settings()
    assert verified == len(receipts) == ERASE


def test_warehouse_deletes_on_duckdb(duckdb_pipeline, tmp_path, monkeypatch):
    from governed_marketing import warehouse
    from governed_marketing.dbt import manifest_path
    from governed_marketing.privacy.erasure import ErasureRequest, ErasureResult, erase_warehouse, resolve_identities
    from governed_marketing.settings import get_settings, reset_settings

    monkeypatch.setenv("GMP_PSEUDONYM_KEY", BENCH_KEY)
    everyone = _sample_emails(duckdb_pipeline / "warehouse.duckdb", max(SIZES))
    people: dict[str, dict] = {}
    for size in SIZES:
        emails = everyone[:size]
        row: dict[str, float | int] = {}
        for mode in ("set_based", "per_person"):
            home = tmp_path / f"{mode}-{size}"
            home.mkdir()
            shutil.copy(duckdb_pipeline / "warehouse.duckdb", home / "warehouse.duckdb")
            monkeypatch.setenv("GMP_HOME", str(home))
            reset_settings()
            settings = get_settings()
            key, _ = settings.resolve_pseudonym_key()
            chosen = emails if mode == "set_based" else emails[:PER_PERSON_SAMPLE]
            requests = [ErasureRequest(f"bench-{i}", email) for i, email in enumerate(chosen)]
            with warehouse.session(settings.warehouse_path) as conn:
                identities = resolve_identities(conn, requests, key=key)
                results = {r.request_id: ErasureResult(r.request_id) for r in requests}
                batches = [identities] if mode == "set_based" else [{ref: i} for ref, i in identities.items()]
                started = time.perf_counter()
                for batch in batches:
                    erase_warehouse(conn, batch, results, key=key, manifest_path=manifest_path(settings))
                seconds = time.perf_counter() - started
            shutil.rmtree(home)
            if mode == "set_based":
                row["set_based_s"] = round(seconds, 2)
            else:
                row["per_person_sample"] = len(chosen)
                row["per_person_sample_s"] = round(seconds, 2)
                row["per_person_extrapolated_s"] = round(seconds / len(chosen) * size, 1)
        people[str(size)] = row
    reset_settings()
    record(
        f"erasure_duckdb_{CONTACTS}",
        {"backend": "duckdb", "contacts": CONTACTS, "people": people, "note": "per person: sampled, extrapolated"},
    )


@pytest.mark.postgres
def test_warehouse_deletes_on_postgres(postgres_pipeline, monkeypatch):
    """The production engine on Postgres: privacy.erasure.erase_warehouse, then its physical step
    (warehouse.erase_physically: VACUUM FULL), on a fresh copy of the built warehouse per run."""
    from governed_marketing import warehouse
    from governed_marketing.privacy.erasure import ErasureRequest, ErasureResult, erase_warehouse, resolve_identities
    from governed_marketing.settings import Settings

    home, template = postgres_pipeline
    manifest = home / "dbt_target_postgres" / "manifest.json"
    everyone = _sample_emails(home / "warehouse.duckdb", max(SIZES))
    params = pg_params()
    clone = f"{template}_erase"
    monkeypatch.setenv("GMP_PSEUDONYM_KEY", BENCH_KEY)

    def settings_for(database: str) -> Settings:
        return Settings(
            warehouse="postgres", pg_host=params["GMP_PG_HOST"], pg_port=int(params["GMP_PG_PORT"]),
            pg_user=params["GMP_PG_USER"], pg_password=params["GMP_PG_PASSWORD"] or None, pg_database=database,
        )  # fmt: skip

    def erase(emails: list[str], *, per_person: bool) -> tuple[float, float]:
        """Seconds of the deletes, and of VACUUM FULL after them (set-based only, as erasure runs it)."""
        pg_recreate(clone, template=template)  # a fresh copy of the built warehouse (not timed)
        settings = settings_for(clone)
        key, _ = settings.resolve_pseudonym_key()
        requests = [ErasureRequest(f"bench-{i}", email) for i, email in enumerate(emails)]
        with warehouse.session(settings=settings) as conn:
            identities = resolve_identities(conn, requests, key=key)
            results = {r.request_id: ErasureResult(r.request_id) for r in requests}
            batches = [{ref: i} for ref, i in identities.items()] if per_person else [identities]
            started = time.perf_counter()
            for batch in batches:
                erase_warehouse(conn, batch, results, key=key, manifest_path=manifest)
            deletes = time.perf_counter() - started
        if per_person:
            return deletes, 0.0
        started = time.perf_counter()
        warehouse.erase_physically(settings=settings)
        return deletes, time.perf_counter() - started

    pg_admin().close()
    people: dict[str, dict] = {}
    try:
        for size in SIZES:
            emails = everyone[:size]
            sample = emails[:PER_PERSON_SAMPLE]
            per_person_s, _ = erase(sample, per_person=True)
            deletes_s, vacuum_s = erase(emails, per_person=False)
            people[str(size)] = {
                "set_based_s": round(deletes_s + vacuum_s, 2),
                "set_based_deletes_s": round(deletes_s, 2),
                "per_person_sample": len(sample),
                "per_person_sample_s": round(per_person_s, 2),
                "per_person_extrapolated_s": round(per_person_s / len(sample) * size, 1),
            }
    finally:
        pg_drop(clone)
    record(
        f"erasure_postgres_{CONTACTS}",
        {
            "backend": "postgres",
            "contacts": CONTACTS,
            "people": people,
            "note": "set_based_s: deletes plus VACUUM FULL of every table; per person: deletes only; sampled,"
            " extrapolated",
        },
    )
