"""Gates that fail closed and the compliance report, on whole runs.

Three realistic situations: a clean run through the openai provider; a CRM whose interests field
carries an email address (the vendor-payload gate stops it before any vendor call); and a policy
tightened after drafting (the generated-content gate stops the outbox). Each leaves a report that
says what happened and holds none of the export's personal data.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pytest
import yaml
from governed_marketing.report.build import SECTIONS
from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF, SAMPLE_EMAIL_DOMAIN, SAMPLE_PHONE

from tests.conftest import PROJECT_ROOT
from tests.e2e.conftest import TEST_KEY, contact_identifiers, run_gmp
from tests.e2e.report_runs import SharedRun, successful_run
from tests.support.openai_server import LocalOpenAIServer

pytestmark = pytest.mark.e2e

CAMPAIGN = "spring_newsletter"
GATES = {
    ("raw_crm", "contacts.csv"),
    ("raw_crm", "consent_events.csv"),
    ("raw_crm", "activity.csv"),
    ("raw_crm", "dsr_requests.csv"),
    ("campaign_audience", CAMPAIGN),
    ("vendor_payload", CAMPAIGN),
    ("generated_content", CAMPAIGN),
}


def report_json(home: Path) -> dict:
    return json.loads((home / "reports" / "report.json").read_text(encoding="utf-8"))


def gates(home: Path) -> dict[tuple[str, str], dict]:
    return {(g["gate"], g["subject"]): g for g in report_json(home)["gates"]}


@pytest.fixture(scope="module")
def ok(tmp_path_factory, sample_export) -> SharedRun:
    return successful_run(tmp_path_factory, sample_export)


@pytest.fixture(scope="module")
def leaked_email(sample_export) -> str:
    """The email of the export's first contact: what a broken CRM mapping copies into `interests`."""
    with (sample_export / "contacts.csv").open(encoding="utf-8", newline="") as handle:
        return next(csv.DictReader(handle))["email"].strip().lower()


@pytest.fixture(scope="module")
def payload_failure(tmp_path_factory, sample_export, leaked_email):
    """Every German contact's interests start with a contact's email address: a field-mapping error."""
    export = tmp_path_factory.mktemp("crm-mapping-error") / "export"
    shutil.copytree(sample_export, export)
    path = export / "contacts.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))  # malformed rows stay as they are
    country, interests = header.index("country"), header.index("interests")
    for row in rows:
        if len(row) == len(header) and row[country].strip().upper() == "DE":
            row[interests] = f"{leaked_email};garden"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    home = tmp_path_factory.mktemp("gmp-payload-failure")
    with LocalOpenAIServer() as vendor:
        env = {"GMP_LLM_PROVIDER": "openai", "OPENAI_BASE_URL": vendor.base_url, "OPENAI_API_KEY": "sk-test"}
        run = run_gmp(home, "run", "--crm", str(export), "--as-of", SAMPLE_AS_OF.isoformat(), extra_env=env)
        return {"run": run, "vendor_requests": vendor.chat_requests(), "export": export}


@pytest.fixture(scope="module")
def content_failure(tmp_path_factory, ok):
    """After the clean run, the policy is tightened (a new link domain, shorter bodies) and the content
    step runs again as its DAG task does: the stored drafts no longer pass, so the outbox stays empty.
    Then `gmp report` rebuilds the report from that evidence."""
    home = tmp_path_factory.mktemp("gmp-policy-tightened")
    shutil.copy2(ok.run.home / "warehouse.duckdb", home / "warehouse.duckdb")
    policy_dir = tmp_path_factory.mktemp("policy-tightened")
    shutil.copytree(PROJECT_ROOT / "prompts", policy_dir / "prompts")
    policy = yaml.safe_load((PROJECT_ROOT / "governance.yml").read_text())
    policy["content"]["allowed_urls"] = ["https://shop.example.org"]  # the notice's link is no longer listed
    policy["content"]["max_body_chars"] = 60
    (policy_dir / "governance.yml").write_text(yaml.safe_dump(policy, sort_keys=False))
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "GMP_", "OPENAI_", "PYTEST"))
    }
    env.update(
        {
            "GMP_HOME": str(home),
            "GMP_POLICY": str(policy_dir / "governance.yml"),
            "GMP_PSEUDONYM_KEY": TEST_KEY,
            "GMP_LLM_PROVIDER": "openai",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # nothing listens: a vendor call would fail loudly
        }
    )
    step = (
        "from governed_marketing.orchestration.task_bodies import generate; "
        f"generate({CAMPAIGN!r}, run_id='policy-tightened', as_of={SAMPLE_AS_OF.isoformat()!r})"
    )
    generated = subprocess.run([sys.executable, "-c", step], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    report = run_gmp(home, "report", extra_env={"GMP_POLICY": str(policy_dir / "governance.yml")})
    return {"home": home, "generated": generated, "report": report}


# ---- a clean run ---------------------------------------------------------------------------------


def test_a_clean_run_passes_every_gate_and_links_each_to_its_data_docs_page(ok):
    found = gates(ok.run.home)
    assert set(found) == GATES
    for key, gate in found.items():
        assert gate["success"], key
        assert (ok.reports / unquote(gate["data_docs"])).is_file(), key
    assert (ok.reports / "data_docs" / "index.html").is_file()


def test_the_report_has_every_section(ok):
    html = (ok.reports / "index.html").read_text(encoding="utf-8")
    for section_id, title in SECTIONS:
        assert f'<section id="{section_id}">' in html
        assert f"<h2>{title}</h2>" in html
    assert "<svg" in html and "excluded: consent expired" in html
    assert f"Compliance report: {ok.reports / 'index.html'}" in ok.run.result.stdout.replace("\n", "")


def test_the_report_says_what_went_to_the_vendor_and_what_did_not(ok):
    (vendor,) = report_json(ok.run.home)["vendors"]
    assert vendor["vendor_calls"] == len(ok.vendor_requests) > 0
    # every validated request was sent, except units whose request was identical to one already sent
    assert vendor["requests_validated"] == vendor["vendor_calls"] + vendor["shared_requests"]
    assert vendor["fields_sent"] == ["country", "interest", "language", "last_purchase_category", "lifecycle_stage"]
    assert {"email", "first_name", "last_name", "phone", "notes", "birth_date", "city"} <= set(vendor["not_sent"])
    (openai,) = vendor["vendors"]
    assert openai == {
        "vendor": "openai",
        "role": "processor",
        "region": "EU",
        "transfer_mechanism": "SCC",
        "dpa_signed": "2026-01-15",
        "stores_data": False,
        "used_this_run": True,
    }


def test_content_guardrails_and_quarantine_are_reported_as_counts(ok):
    data = report_json(ok.run.home)
    (guardrails,) = data["content_guardrails"]
    assert guardrails["gate"]["success"]
    assert guardrails["gate"]["rows"] == data["run_summary"]["campaigns"][0]["messages"] > 0
    assert {q["file_name"] for q in data["quarantine"]["rows"]} >= {"contacts.csv"}
    assert all(set(q) == {"file_name", "reason", "rows"} for q in data["quarantine"]["rows"])


def test_every_dag_of_the_run_leaves_its_own_report_and_the_cli_builds_none_after(ok):
    from governed_marketing.orchestration.pipeline_run import PIPELINE

    runs = ok.reports / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(PIPELINE)
    for dag_id in PIPELINE:
        (run_dir,) = (runs / dag_id).iterdir()  # one run each, one report each
        assert json.loads((run_dir / "report.json").read_text())["run_summary"]["status"] == "succeeded"
    (last,) = (runs / "generate_campaign_content").iterdir()
    # the latest is the last DAG's report, byte for byte: `gmp run` did not build it a second time
    assert (ok.reports / "index.html").read_bytes() == (last / "index.html").read_bytes()


# ---- fail closed ---------------------------------------------------------------------------------


def test_an_email_in_a_cohort_attribute_stops_the_run_before_any_vendor_call(payload_failure):
    run = payload_failure["run"]
    assert run.result.returncode != 0
    reason = run.result.stderr
    assert "vendor_payload gate failed for spring_newsletter" in reason, reason
    assert "expect_column_values_to_not_match_regex_list(interest)" in reason
    assert payload_failure["vendor_requests"] == []
    assert run.outbox_rows() == []


def test_the_report_of_a_stopped_run_shows_which_gate_stopped_it_and_why(payload_failure):
    home = payload_failure["run"].home
    data = report_json(home)
    assert data["run_summary"]["status"] == "failed"
    assert "vendor_payload gate failed" in data["run_summary"]["failure"]
    payload = gates(home)[("vendor_payload", CAMPAIGN)]
    assert not payload["success"]
    # the leaked address fails the identifier check, is outside the vocabulary and held by fewer than k
    assert {e["column"] for e in payload["failed"]} == {"interest", "interest_outside_vocabulary", "interest_holders"}
    assert ("generated_content", CAMPAIGN) not in gates(home)
    (vendor,) = data["vendors"]
    assert vendor["status"].startswith("nothing sent")
    assert vendor["vendor_calls"] == 0
    # the failed DAG run's own report, written by its last task, names the failed task and the reason
    (run_dir,) = (home / "reports" / "runs" / "generate_campaign_content").iterdir()
    own = json.loads((run_dir / "report.json").read_text())["run_summary"]["failure"]
    assert own.startswith("generate_campaign_content failed at draft") and "vendor_payload gate failed" in own


def test_a_tightened_policy_stops_stored_drafts_from_reaching_the_outbox(content_failure):
    generated = content_failure["generated"]
    assert generated.returncode != 0
    assert "generated_content gate failed for spring_newsletter" in generated.stderr
    assert not list((content_failure["home"] / "outbox").rglob("*.jsonl"))
    found = gates(content_failure["home"])[("generated_content", CAMPAIGN)]
    failed_rules = {e["rule"] for e in found["failed"]}
    assert failed_rules == {
        "no URL outside content.allowed_urls in the body",
        "every draft body is at most 60 characters",
    }
    # The drafts themselves break the new length rule: the ledger marks them rejected and drops them,
    # so the next run drafts them again instead of publishing the old text.
    assert "draft(s) rejected; they will be drafted again on the next run" in generated.stderr
    with duckdb.connect(str(content_failure["home"] / "warehouse.duckdb"), read_only=True) as conn:
        statuses = dict(conn.execute("select status, count(*) from ops.generation_ledger group by 1").fetchall())
        drafts = conn.execute("select count(*) from ops.generated_content").fetchone()[0]
    assert set(statuses) == {"rejected"} and drafts == 0


def test_gmp_report_rebuilds_the_report_and_prints_its_path(content_failure):
    report = content_failure["report"]
    assert report.ok, report.result.stderr
    path = Path(report.result.stdout.strip())
    assert path == content_failure["home"] / "reports" / "index.html"
    html = path.read_text(encoding="utf-8")
    assert "failed: nothing was written to the outbox" in html


# ---- no personal data in the evidence --------------------------------------------------------------


def test_no_seeded_personal_data_anywhere_under_reports(
    ok, payload_failure, content_failure, sample_export, leaked_email
):
    identifiers = contact_identifiers(sample_export)
    homes = [ok.run.home, payload_failure["run"].home, content_failure["home"]]
    files = [
        p for home in homes for p in (home / "reports").rglob("*") if p.is_file() and p.suffix in (".html", ".json")
    ]
    assert len(files) > 20, "the reports hold too few files for the scan to prove anything"
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    assert SAMPLE_EMAIL_DOMAIN not in text
    assert leaked_email not in text
    assert not SAMPLE_PHONE.search(text)
    for kind in ("email", "phone", "notes"):
        assert not any(value in text for value in identifiers[kind]), kind
    words = set(re.findall(r"\w+", text))

    def appears(name: str) -> bool:
        if re.fullmatch(r"\w+", name):
            return name in words
        return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None

    names = [n for n in identifiers["name"] if appears(n)]
    assert names == [], f"{len(names)} contact names appear under reports/"
