"""How long erasing many people from a large warehouse takes (`make bench`; not part of `make test`).

Builds a GMP_HOME like a production one: a generated CRM export ingested (landing archive and raw
tables), the dbt models built, the campaign's outbox written (offline provider). Then submits
GMP_BENCH_ERASE erasure requests and times `process_pending` (what `gmp dsr process` runs) phase by
phase, and compares the warehouse deletes set-based (one statement per table for the whole batch,
what the library does) with one person at a time.

    GMP_BENCH_CONTACTS=1000000 GMP_BENCH_ERASE=1000 uv run pytest -m benchmark tests/benchmarks/test_erasure_scale.py -s

Figures go to bench/results.json under "privacy_erasure".
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark

CONTACTS = int(os.environ.get("GMP_BENCH_CONTACTS", "100000"))
ERASE = int(os.environ.get("GMP_BENCH_ERASE", "1000"))
PER_PERSON_SAMPLE = int(os.environ.get("GMP_BENCH_PER_PERSON", "100"))
AS_OF = "2026-11-15T00:00:00"


def _dbt_run(home: Path, run_dir: Path) -> None:
    from dbt.cli.main import dbtRunner

    project = PROJECT_ROOT / "dbt_project"
    result = dbtRunner().invoke(
        [
            "run",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target-path",
            str(run_dir / "target"),
            "--log-path",
            str(run_dir / "logs"),
            "--vars",
            json.dumps({"as_of": AS_OF}),
        ]
    )
    assert result.success, result.exception


@pytest.fixture(scope="module")
def base_home(tmp_path_factory) -> Path:
    """The GMP_HOME to copy for each measurement (GMP_BENCH_BASE_HOME reuses one built before)."""
    if os.environ.get("GMP_BENCH_BASE_HOME"):
        return Path(os.environ["GMP_BENCH_BASE_HOME"])
    from governed_marketing import warehouse
    from governed_marketing.crm.generate import write_sample_export
    from governed_marketing.crm.ingest import ingest_export
    from governed_marketing.pipeline import generate
    from governed_marketing.policy import load_policy
    from governed_marketing.settings import get_settings, reset_settings

    root = tmp_path_factory.mktemp("erasure-bench")
    home = root / "base"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        env.setenv("GMP_LLM_PROVIDER", "offline")
        reset_settings()
        settings = get_settings()
        started = time.perf_counter()
        write_sample_export(root / "crm", contacts=CONTACTS, seed=1)
        generated = time.perf_counter()
        with warehouse.session(settings.warehouse_path) as conn:
            ingest_export(root / "crm", conn=conn, policy=load_policy(), landing_root=settings.path("landing"))
            conn.execute("delete from raw.crm_dsr_requests").fetchall()  # time only the erasures submitted below
        ingested = time.perf_counter()
        _dbt_run(home, root)
        generate("spring_newsletter", run_id="bench", as_of=AS_OF)
        built = time.perf_counter()
        reset_settings()
    (root / "build.json").write_text(
        json.dumps(
            {
                "generate_s": round(generated - started, 1),
                "ingest_s": round(ingested - generated, 1),
                "models_and_outbox_s": round(built - ingested, 1),
            }
        )
    )
    return home


def _copy(base: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(base, target)
    return target


def _sample_emails(settings, n: int) -> list[str]:
    from governed_marketing import warehouse

    with warehouse.session(settings.warehouse_path, read_only=True) as conn:
        emails = [
            r[0] for r in conn.execute("select distinct email_normalized from raw.crm_contacts order by 1").fetchall()
        ]
    random.Random(1).shuffle(emails)
    return emails[:n]


def test_erasing_many_people_from_a_large_warehouse(base_home, tmp_path, monkeypatch):
    from governed_marketing import warehouse
    from governed_marketing.policy import load_policy
    from governed_marketing.privacy import dsr
    from governed_marketing.privacy.process import process_pending
    from governed_marketing.settings import get_settings, reset_settings

    home = _copy(base_home, tmp_path / "home")
    monkeypatch.setenv("GMP_HOME", str(home))
    reset_settings()
    settings, policy = get_settings(), load_policy()
    key, _ = settings.resolve_pseudonym_key()
    emails = _sample_emails(settings, ERASE)
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
    figures = {
        "contacts": CONTACTS,
        "people_erased": len(result.get("erasure", [])),
        "not_verified": len(result.get("failed", [])),
        "seconds_total": round(seconds, 1),
        "seconds_by_phase": {k: round(v, 1) for k, v in timings.items()},
        "rows_removed": sum(r["rows_removed_total"] for r in receipts),
        "gmp_home_bytes": size_before,
        "build": json.loads(build.read_text()) if (build := base_home.parent / "build.json").exists() else None,
    }
    figures |= _set_based_versus_per_person(base_home, tmp_path, emails, monkeypatch)
    print(json.dumps(figures, indent=2))
    results = PROJECT_ROOT / "bench" / "results.json"
    results.parent.mkdir(exist_ok=True)
    recorded = json.loads(results.read_text()) if results.exists() else {}
    recorded["privacy_erasure"] = figures
    results.write_text(json.dumps(recorded, indent=2) + "\n")
    reset_settings()
    assert verified == len(receipts) == ERASE


def _set_based_versus_per_person(base_home: Path, tmp_path: Path, emails: list[str], monkeypatch) -> dict:
    """The warehouse deletes alone: the whole batch in one statement per table, then person by person."""
    from governed_marketing import warehouse
    from governed_marketing.dbt import manifest_path
    from governed_marketing.privacy.erasure import ErasureRequest, ErasureResult, erase_warehouse, resolve_identities
    from governed_marketing.settings import get_settings, reset_settings

    figures = {}
    for mode in ("set_based", "per_person"):
        home = tmp_path / mode
        home.mkdir()
        shutil.copy(base_home / "warehouse.duckdb", home / "warehouse.duckdb")
        monkeypatch.setenv("GMP_HOME", str(home))
        reset_settings()
        settings = get_settings()
        key, _ = settings.resolve_pseudonym_key()
        people = emails if mode == "set_based" else emails[:PER_PERSON_SAMPLE]
        requests = [ErasureRequest(f"bench-{i}", email) for i, email in enumerate(people)]
        with warehouse.session(settings.warehouse_path) as conn:
            identities = resolve_identities(conn, requests, key=key)
            results = {r.request_id: ErasureResult(r.request_id) for r in requests}
            started = time.perf_counter()
            batches = [identities] if mode == "set_based" else [{ref: i} for ref, i in identities.items()]
            for batch in batches:
                erase_warehouse(conn, batch, results, key=key, manifest_path=manifest_path(settings))
            seconds = time.perf_counter() - started
        per_person = seconds / len(people)
        figures[f"warehouse_delete_{mode}"] = {
            "people": len(people),
            "seconds": round(seconds, 2),
            "seconds_for_all": round(per_person * len(emails), 1),
        }
    return figures
