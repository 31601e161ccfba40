"""`gmp run` end to end: real Airflow dag.test() runs, a real dbt build, real GX, a DuckDB file."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml
from governed_marketing.policy import load_policy
from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF
from governed_marketing.warehouse import connect as warehouse_connect

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import contact_identifiers, run_gmp
from tests.support.openai_server import LocalOpenAIServer
from tests.support.reference_eligibility import expected_recipients

pytestmark = pytest.mark.e2e

EXTERNAL = PROJECT_ROOT / "tests" / "fixtures" / "external_crm"
EXTERNAL_AS_OF = "2026-11-15T12:00:00Z"


@pytest.fixture(scope="module")
def vendor():
    with LocalOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def openai_runs(tmp_path_factory, sample_export, vendor):
    """Two passes over the same generated export with the openai provider (the local server)."""
    home = tmp_path_factory.mktemp("gmp-openai")
    env = {"GMP_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": vendor.base_url, "OPENAI_API_KEY": "sk-test"}
    first = run_gmp(home, "run", "--crm", str(sample_export), "--as-of", SAMPLE_AS_OF.isoformat(), extra_env=env)
    assert first.ok, first.result.stdout + first.result.stderr
    requests_after_first = len(vendor.chat_requests())
    outbox_first = {p: p.read_bytes() for p in (home / "outbox").rglob("*.jsonl")}
    outbox_written_first = {p: p.stat().st_mtime_ns for p in outbox_first}
    tables_first = _table_snapshot(home)
    second = run_gmp(home, "run", "--crm", str(sample_export), "--as-of", SAMPLE_AS_OF.isoformat(), extra_env=env)
    assert second.ok, second.result.stdout + second.result.stderr
    return {
        "home": home,
        "first": first,
        "second": second,
        "requests_after_first": requests_after_first,
        "outbox_first": outbox_first,
        "outbox_written_first": outbox_written_first,
        "tables_first": tables_first,
    }


def _table_snapshot(home: Path) -> dict[str, list]:
    tables = [
        "raw.crm_contacts",
        "raw.crm_consent_events",
        "raw.crm_activity",
        "raw.crm_dsr_requests",
        "raw.quarantine",
        "ops.crm_loads",
        "ops.generated_content",
        "marts.campaign_audience",
        "marts.generation_cohorts",
    ]
    with warehouse_connect(home / "warehouse.duckdb") as conn:
        return {t: sorted(map(repr, conn.execute(f"select * from {t}").fetchall())) for t in tables}


def test_outbox_recipients_are_exactly_those_the_eligibility_rules_allow(openai_runs, sample_export):
    expected = expected_recipients(sample_export, load_policy(), "spring_newsletter", SAMPLE_AS_OF)
    assert expected, "the sample export should have eligible contacts"
    assert openai_runs["first"].recipients() == expected


def test_summary_reports_counts_and_the_provider(openai_runs):
    out = openai_runs["first"].result.stdout
    for measure in (
        "contacts read",
        "rows quarantined",
        "eligible",
        "excluded: consent expired",
        "cohorts",
        "vendor calls",
        "tokens in / out",
        "USD: estimate / this run / all runs / budget",
        "draft units (cohort, sync)",
        "messages in the outbox",
    ):
        assert measure in out, measure
    assert "openai model gpt-4.1-mini" in out


def test_every_outbox_message_has_the_contract_fields_a_name_and_the_objection_notice(openai_runs):
    rows = openai_runs["first"].outbox_rows()
    assert rows
    fields = {
        "campaign_id",
        "contact_id",
        "email",
        "language",
        "subject",
        "body",
        "prompt_version",
        "model",
        "cohort_id",
        "generated_at",
    }
    for row in rows:
        assert set(row) == fields
        assert "{{" not in row["body"] and "first_name" not in row["body"]
        assert "https://example.com/preferences" in row["body"]
        assert row["model"] == "gpt-4.1-mini"


def test_a_second_run_changes_nothing_and_pays_for_nothing(openai_runs, vendor):
    home = openai_runs["home"]
    assert len(vendor.chat_requests()) == openai_runs["requests_after_first"], "the rerun called the vendor"
    assert {p: p.read_bytes() for p in (home / "outbox").rglob("*.jsonl")} == openai_runs["outbox_first"]
    written = {p: p.stat().st_mtime_ns for p in (home / "outbox").rglob("*.jsonl")}
    assert written == openai_runs["outbox_written_first"], "the rerun rewrote an unchanged outbox file"
    assert _table_snapshot(home) == openai_runs["tables_first"]
    assert "already loaded" in openai_runs["second"].result.stdout
    # As the scheduler would: nothing the models and content are made from changed, so they are kept.
    assert "kept  build_marketing_models" in openai_runs["second"].result.stdout
    assert "kept  generate_campaign_content" in openai_runs["second"].result.stdout


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory, sample_export, vendor, openai_runs):
    """The same export in batch mode (Batch API, deferred draft task), in a fresh GMP_HOME."""
    home = tmp_path_factory.mktemp("gmp-batch")
    env = {
        "GMP_LLM_PROVIDER": "openai",
        "GMP_LLM_MODE": "batch",
        "GMP_LLM_BATCH_POLL_SECONDS": "0.2",
        "OPENAI_BASE_URL": vendor.base_url,
        "OPENAI_API_KEY": "sk-test",
    }
    chat_before = len(vendor.chat_requests())
    run = run_gmp(home, "run", "--crm", str(sample_export), "--as-of", SAMPLE_AS_OF.isoformat(), extra_env=env)
    assert run.ok, run.result.stdout + run.result.stderr
    return {"run": run, "home": home, "chat_requests": len(vendor.chat_requests()) - chat_before}


def test_batch_mode_writes_the_same_outbox_as_sync_and_leaves_no_file_at_the_vendor(batch_run, openai_runs, vendor):
    def rows(run):
        return [{k: v for k, v in row.items() if k != "generated_at"} for row in run.outbox_rows()]

    assert batch_run["chat_requests"] == 0, "batch mode made synchronous calls"
    assert rows(batch_run["run"]) == rows(openai_runs["first"])
    api = vendor.batch_api
    assert api.created_batch_ids and not api.files, "vendor-side input and output files are deleted once read"
    with warehouse_connect(batch_run["home"] / "warehouse.duckdb") as conn:
        statuses = dict(conn.execute("select status, count(*) from ops.generation_ledger group by 1").fetchall())
        lines = conn.execute("select count(*) from ops.generation_ledger where transport = 'batch'").fetchone()[0]
    assert set(statuses) == {"succeeded"} and api.paid_lines == lines


def test_nothing_personal_is_in_the_batch_files_either(batch_run, vendor, sample_export):
    _assert_no_identifier([json.dumps(line) for line in vendor.batch_api.uploaded_lines()], sample_export)


def _assert_no_identifier(bodies: list[str], crm_dir: Path) -> None:
    """No contact's email, phone, name (word-bounded) or notes in anything that left for the vendor."""
    assert bodies
    for kind, values in contact_identifiers(crm_dir).items():
        for value in values:
            pattern = re.compile(rf"\b{re.escape(value)}\b") if kind == "name" else None
            for body in bodies:
                hit = pattern.search(body) if pattern else value in body
                assert not hit, f"a contact's {kind} was sent to the vendor"
    assert not any("example-crm.test" in body for body in bodies)


def test_nothing_personal_reaches_the_vendor(openai_runs, vendor, sample_export):
    _assert_no_identifier([str(r.body) for r in vendor.chat_requests()], sample_export)


def test_each_vendor_request_carries_only_cohort_attributes_of_at_least_k_recipients(openai_runs, vendor):
    policy = load_policy()
    home = openai_runs["home"]
    with warehouse_connect(home / "warehouse.duckdb") as conn:
        cohorts = conn.execute("select * from marts.generation_cohorts").df()
    allowed_keys = {"country", "lifecycle_stage", "interest", "last_purchase_category"}
    for request in vendor.chat_requests():
        body = request.body
        assert body["store"] is False
        assert body["prompt_cache_key"] == "spring_newsletter"
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        data = re.findall(r"<cohort_data>\s*(\{.*?\})\s*</cohort_data>", user, re.S)[-1]
        attributes = json.loads(data)
        assert set(attributes) <= allowed_keys
    levels = len(policy.cohorts.generalize)
    small = cohorts[(cohorts.member_count < policy.cohorts.k) & (cohorts.generalization_level < levels)]
    assert small.empty


def test_no_personal_data_in_logs_xcom_or_validation_results(openai_runs, sample_export):
    home = openai_runs["home"]
    identifiers = contact_identifiers(sample_export)
    emails = identifiers["email"]
    phones = identifiers["phone"]
    # Airflow's metadata DB holds XCom, DAG run conf and task state.
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        xcom = " ".join(str(row) for row in db.execute("select value from xcom"))
    logs = " ".join(p.read_text(errors="replace") for p in (home / "logs").rglob("*.log"))
    with warehouse_connect(home / "warehouse.duckdb") as conn:
        evidence = " ".join(
            str(row)
            for table in ("ops.gate_results", "ops.pipeline_steps")
            for row in conn.execute(f"select * from {table}").fetchall()
        )
    for text, where in ((xcom, "XCom"), (logs, "logs"), (evidence, "validation results and step records")):
        assert text.strip(), f"{where} is empty: the scan would prove nothing"
        assert "example-crm.test" not in text, where
        assert not any(e in text for e in emails), where
        assert not any(p in text for p in phones), where


def test_run_on_an_export_written_by_someone_else_matches_the_hand_derived_recipients(tmp_path):
    run = run_gmp(tmp_path / "home", "run", "--crm", str(EXTERNAL), "--as-of", EXTERNAL_AS_OF)
    assert run.ok, run.result.stdout + run.result.stderr
    expected = set((EXTERNAL / "expected_recipients.txt").read_text().split())
    assert run.recipients() == expected
    assert "offline templates" in run.result.stdout


def test_a_failed_audience_gate_stops_the_run_before_the_vendor_and_the_outbox(tmp_path, vendor):
    """The analyst's model still exposes `interests`, but the policy no longer allows it."""
    policy_dir = tmp_path / "policy"
    shutil.copytree(PROJECT_ROOT / "prompts", policy_dir / "prompts")
    policy = yaml.safe_load((PROJECT_ROOT / "governance.yml").read_text())
    purpose = policy["purposes"]["ai_personalized_email"]
    purpose["fields"] = [f for f in purpose["fields"] if f != "interests"]
    policy["cohorts"]["generalize"] = [a for a in policy["cohorts"]["generalize"] if a != "interests"]
    (policy_dir / "governance.yml").write_text(yaml.safe_dump(policy, sort_keys=False))
    before = len(vendor.chat_requests())
    env = {
        "GMP_POLICY": str(policy_dir / "governance.yml"),
        "GMP_LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": vendor.base_url,
        "OPENAI_API_KEY": "sk-test",
    }
    run = run_gmp(tmp_path / "home", "run", "--crm", str(EXTERNAL), "--as-of", EXTERNAL_AS_OF, extra_env=env)
    assert run.result.returncode != 0
    reason = run.result.stderr.strip().splitlines()
    assert any("campaign_audience gate failed for spring_newsletter" in line for line in reason), run.result.stderr
    assert len(vendor.chat_requests()) == before
    assert run.outbox_rows() == []
