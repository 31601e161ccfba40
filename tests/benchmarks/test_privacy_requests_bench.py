"""How long one pass over many data subject requests takes (`make bench`; not part of `make test`).

A warehouse of GMP_BENCH_PRIVACY_CONTACTS contacts (default: GMP_BENCH_CONTACTS) is laid down in SQL
(no export, no ingest: at 1M that alone would take longer than the pass measured): raw contacts, two
consent events and one purchase each, 2% of the rows quarantined (their JSON record as ingest
writes it), the campaign audience keyed by the keyed pseudonym, the real dbt manifest. Then
GMP_BENCH_PRIVACY_REQUESTS (20,000) requests are received in the proportions `gmp crm generate`
draws (erasure 4, objection 4, restriction 5, access 3, rectification 1, portability 1) and one
`process_pending` (what `gmp dsr process` and the DAG run) answers them all, in a child process so
its wall, CPU and peak RSS are its own. "privacy_requests_<contacts>".

With GMP_BENCH_PRIVACY_BASE=<plugins dir of another checkout> the same pass also runs on that code
(a worktree of the base commit) over a copy of the same home, at GMP_BENCH_PRIVACY_BASE_REQUESTS
requests (default: the same), both figures in the same run: "privacy_requests_<contacts>_vs_base".

    GMP_BENCH_PRIVACY_CONTACTS=1000000 uv run --frozen pytest -m benchmark \
        tests/benchmarks/test_privacy_requests_bench.py -s
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.conftest import BENCH_KEY, CONTACTS, record
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.benchmark

PEOPLE = int(os.environ.get("GMP_BENCH_PRIVACY_CONTACTS", CONTACTS))
REQUESTS = int(os.environ.get("GMP_BENCH_PRIVACY_REQUESTS", "20000"))
BASE = os.environ.get("GMP_BENCH_PRIVACY_BASE")
BASE_REQUESTS = int(os.environ.get("GMP_BENCH_PRIVACY_BASE_REQUESTS", REQUESTS))
#: The proportions of `gmp crm generate` (sample_data.crm_export._DSR_KINDS; a lifted restriction is one).
MIX = {"erasure": 4, "objection": 4, "restriction": 5, "access": 3, "rectification": 1, "portability": 1}

#: The pass, measured in a child process: its own wall, CPU (user + system) and peak RSS.
_PASS = """
import json, resource, sys, time
from governed_marketing.privacy.process import process_pending
from governed_marketing.settings import get_settings
started, cpu = time.perf_counter(), time.process_time()
timings = {}
result = process_pending(settings=get_settings(), timings=timings)
figures = {
    "wall_s": round(time.perf_counter() - started, 1),
    "cpu_s": round(time.process_time() - cpu, 1),
    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    "answered": result["answered"],
    "failed": len(result.get("failed", [])),
    "needs_review": len(result.get("needs_review", [])),
    "left_open": len(result.get("left_open", [])),
    "erasure_phases_s": {k: round(v, 1) for k, v in timings.items()},
    "code": __import__("governed_marketing").__file__,
}
print("BENCH " + json.dumps(figures))
"""


def _build(home: Path, contacts: int, requests: int) -> None:
    """The warehouse, in SQL; the requests spread over the contacts with a fixed stride."""
    from governed_marketing import warehouse
    from governed_marketing.dbt import ensure_manifest
    from governed_marketing.settings import get_settings, reset_settings

    reset_settings()
    settings = get_settings()
    key, _ = settings.resolve_pseudonym_key()
    ensure_manifest(settings)
    kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]
    with warehouse.session(settings=settings) as conn:
        conn.install_pseudonym_key(key)
        conn.execute(
            f"""
            insert into raw.crm_contacts
            select printf('c%08d', i), printf('Person.%d@Bench.example', i), printf('person.%d@bench.example', i),
                   'First' || i, 'Last' || i, printf('+49 30 %08d', i), date '1980-01-01' + cast(i % 9000 as int),
                   'DE', 'de', 'Berlin', 'customer', 'books', case when i % 50 = 7 then 'call me' else '' end,
                   timestamp '2025-01-01', timestamp '2026-01-01', 'bench'
            from range({contacts}) t(i)
            """
        ).fetchall()
        conn.execute(
            f"""
            insert into raw.crm_consent_events
            select printf('e%08d-%s', i, p), printf('c%08d', i), p, 'grant', 'web', 'v1',
                   timestamp '2025-06-01', 'bench'
            from range({contacts}) t(i), (values ('email_marketing'), ('ai_personalization')) ps(p)
            """
        ).fetchall()
        conn.execute(
            f"""
            insert into raw.crm_activity
            select printf('a%08d', i), printf('c%08d', i), 'purchase', 'books', 12.50, timestamp '2026-02-01', 'bench'
            from range({contacts}) t(i)
            """
        ).fetchall()
        conn.execute(  # 2%: rows ingest refused (an unknown country), kept with their record
            f"""
            insert into raw.quarantine
            select 'bench', 'contacts.csv', i + 2, 'country: not ISO 3166-1 alpha-2',
                   json_object('contact_id', printf('q%08d', i), 'email', printf('Person.%d@Bench.example', i),
                               'first_name', 'First' || i, 'country', 'Germany'),
                   timestamp '2026-01-01'
            from range({contacts}) t(i) where i % 50 = 3
            """
        ).fetchall()
        conn.execute(
            """
            create schema if not exists marts;
            create table marts.campaign_audience as
            select 'spring_newsletter' as campaign_id, gmp_pseudonym(email_normalized) as recipient_pseudonym,
                   'cohort-' || (hash(contact_id) % 40) as cohort_id
            from raw.crm_contacts
            """
        ).fetchall()
        stride = max(1, contacts // requests) if requests <= contacts else 1
        conn.execute(
            f"""
            insert into raw.crm_dsr_requests
            select printf('dsr-%06d', n), printf('person.%d@bench.example', (n * {stride} + 11) % {contacts}),
                   kinds[1 + n % {len(kinds)}],
                   case when kinds[1 + n % {len(kinds)}] = 'rectification' then '{{"last_name": "Corrected"}}'
                        else '{{}}' end,
                   timestamp '2026-11-01' + to_seconds(n), 'crm_export', 'bench'
            from range({requests}) t(n), (select {kinds!r}::varchar[] as kinds)
            """
        ).fetchall()
        conn.checkpoint()
    reset_settings()


def _pass(home: Path, plugins: str | None) -> dict:
    env = {
        **os.environ,
        "GMP_HOME": str(home),
        "GMP_PSEUDONYM_KEY": BENCH_KEY,
        "GMP_LLM_PROVIDER": "offline",
    }
    if plugins:
        env["PYTHONPATH"] = os.pathsep.join([plugins, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(
        [sys.executable, "-c", _PASS], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    line = next(line for line in done.stdout.splitlines() if line.startswith("BENCH "))
    return json.loads(line.removeprefix("BENCH "))


def _home(root: Path, requests: int, monkeypatch) -> Path:
    home = root / f"home-{PEOPLE}-{requests}"
    if not (home / ".complete").exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        monkeypatch.setenv("GMP_HOME", str(home))
        monkeypatch.setenv("GMP_PSEUDONYM_KEY", BENCH_KEY)
        _build(home, PEOPLE, requests)
        (home / ".complete").write_text("")
    return home


def test_one_pass_answers_many_requests(tmp_path, monkeypatch):
    runs = {}
    home = _home(tmp_path, REQUESTS, monkeypatch)
    runs["this"] = _pass(home, None)
    runs["this"]["requests"] = REQUESTS
    runs["this"]["requests_per_s"] = round(REQUESTS / max(runs["this"]["wall_s"], 0.1), 1)
    if BASE:
        base_home = _home(tmp_path / "base", BASE_REQUESTS, monkeypatch)
        if BASE_REQUESTS != REQUESTS:  # the same size on this code, for a ratio at equal work
            same_home = _home(tmp_path / "same", BASE_REQUESTS, monkeypatch)
            runs["this_at_base_size"] = _pass(same_home, None)
        runs["base"] = _pass(base_home, BASE)
        runs["base"]["requests"] = BASE_REQUESTS
        runs["base"]["requests_per_s"] = round(BASE_REQUESTS / max(runs["base"]["wall_s"], 0.1), 1)
    figures = {"contacts": PEOPLE, "load_avg_1m": round(os.getloadavg()[0], 2), **runs}
    if BASE:
        same = runs.get("this_at_base_size", runs["this"])
        figures["base_over_this_wall"] = round(runs["base"]["wall_s"] / max(same["wall_s"], 0.1), 1)
        figures["base_over_this_cpu"] = round(runs["base"]["cpu_s"] / max(same["cpu_s"], 0.1), 1)
    print(json.dumps(figures, indent=2))
    record(f"privacy_requests_{PEOPLE}" + ("_vs_base" if BASE else ""), figures)
    assert runs["this"]["failed"] == 0
    assert runs["this"]["answered"] + runs["this"]["needs_review"] == REQUESTS
