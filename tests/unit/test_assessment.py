"""The regular assessment: each finding appears when its condition is set in a copy of the policy or
the data; the demo is clean; a blocking finding stops generation for its purpose only; the report
shows the section and the audit log chains each run."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime
from pathlib import Path

import pytest
import yaml
from governed_marketing import assessment
from governed_marketing.assessment import GenerationBlocked, assess, policy_findings, report_access
from governed_marketing.orchestration.failures import is_deterministic
from governed_marketing.policy import PolicyError, content_hash, load_policy
from governed_marketing.settings import get_settings, reset_settings
from governed_marketing.warehouse import connect as warehouse_connect

from tests.conftest import PROJECT_ROOT
from tests.support.built_warehouse import build_home

TODAY = date(2026, 12, 7)
NOW = datetime(2026, 12, 7, 9, 0, 0)
AS_OF_TEXT = "2026-11-15T12:00:00"
CAMPAIGN = "spring_newsletter"


def _raw() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "governance.yml").read_text(encoding="utf-8"))


def _write_policy(directory: Path, raw: dict) -> Path:
    """A copy of the policy beside the project's prompts (prompt paths stay relative: its hash is unchanged)."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "prompts").exists():
        (directory / "prompts").symlink_to(PROJECT_ROOT / "prompts")
    path = directory / "governance.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _codes(findings) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in findings:
        out.setdefault(f.code, []).append(f)
    return out


# ---- policy-only findings -------------------------------------------------------------------------------


def test_the_demo_policy_is_reviewed_and_its_hash_matches():
    policy = load_policy(PROJECT_ROOT / "governance.yml")
    assert policy_findings(policy, TODAY) == []
    assert policy.review.policy.sha256 == content_hash((PROJECT_ROOT / "governance.yml").read_text())


def test_an_unchanged_copy_is_clean_and_a_changed_one_is_a_finding(tmp_path):
    raw = _raw()
    assert policy_findings(load_policy(_write_policy(tmp_path / "same", raw)), TODAY) == []
    raw["cohorts"]["k"] = 3
    found = _codes(policy_findings(load_policy(_write_policy(tmp_path / "changed", raw)), TODAY))
    assert list(found) == ["policy_changed_since_review"]
    assert found["policy_changed_since_review"][0].severity == "high"


def test_a_review_overdue_or_due_within_30_days_is_a_finding(tmp_path):
    raw = _raw()
    raw["review"]["retention"]["last_reviewed"] = date(2025, 12, 1)  # due 2026-12-01: overdue
    raw["review"]["consent_notice"]["last_reviewed"] = date(2025, 12, 20)  # due 2026-12-20: within 30 days
    found = _codes(policy_findings(load_policy(_write_policy(tmp_path, raw)), TODAY))
    (overdue,) = found["review_overdue"]
    assert (overdue.subject, overdue.severity, overdue.owner, overdue.due) == (
        "review.retention",
        "high",
        "privacy-office",
        date(2026, 12, 1),
    )
    (soon,) = found["review_due_soon"]
    assert (soon.subject, soon.severity, soon.due) == ("review.consent_notice", "low", date(2026, 12, 20))


def test_a_vendor_without_a_dpa_or_transfer_mechanism_is_blocking_for_its_purposes(tmp_path):
    raw = _raw()
    del raw["vendors"]["openai"]["dpa_signed"]
    raw["vendors"]["openai"]["transfer_mechanism"] = "none"
    found = _codes(policy_findings(load_policy(_write_policy(tmp_path, raw)), TODAY))
    for code in ("vendor_dpa_missing", "vendor_transfer_mechanism_missing"):
        (finding,) = found[code]
        assert finding.severity == "blocking" and finding.purposes == ("ai_personalized_email",)


def test_a_vendor_dpa_past_review_or_never_reviewed_is_blocking(tmp_path):
    raw = _raw()
    raw["review"]["vendors"]["openai"]["dpa"]["last_reviewed"] = date(2025, 1, 1)
    del raw["review"]["vendors"]["openai"]["transfer_mechanism"]
    found = _codes(policy_findings(load_policy(_write_policy(tmp_path, raw)), TODAY))
    (overdue,) = found["review_overdue"]
    assert overdue.subject == "review.vendors.openai.dpa" and overdue.severity == "blocking"
    (missing,) = found["vendor_review_missing"]
    assert missing.subject == "review.vendors.openai.transfer_mechanism" and missing.severity == "blocking"


def test_a_dpia_never_reviewed_or_past_review_is_blocking(tmp_path):
    raw = _raw()
    del raw["review"]["dpia"]["ai_personalized_email"]
    found = _codes(policy_findings(load_policy(_write_policy(tmp_path / "a", raw)), TODAY))
    assert found["dpia_review_missing"][0].purposes == ("ai_personalized_email",)
    raw = _raw()
    raw["review"]["dpia"]["ai_personalized_email"]["every"] = "6mo"
    raw["review"]["dpia"]["ai_personalized_email"]["last_reviewed"] = date(2026, 5, 1)
    found = _codes(policy_findings(load_policy(_write_policy(tmp_path / "b", raw)), TODAY))
    assert found["review_overdue"][0].subject == "review.dpia.ai_personalized_email"
    assert found["review_overdue"][0].severity == "blocking"


def test_a_policy_without_review_metadata_is_a_finding(tmp_path):
    raw = _raw()
    del raw["review"]
    found = _codes(policy_findings(load_policy(_write_policy(tmp_path, raw)), TODAY))
    assert list(found) == ["review_metadata_missing"]


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda r: r["review"]["policy"].update(by="The DPO"), "review.policy.by"),
        (lambda r: r["review"]["retention"].update(every="yearly"), "review.retention.every"),
        (lambda r: r["review"]["policy"].update(sha256="abc"), "review.policy.sha256"),
        (lambda r: r["review"]["dpia"].update(no_such_purpose=r["review"]["retention"]), "review.dpia.no_such_purpose"),
        (lambda r: r["review"]["vendors"].update(acme={}), "review.vendors.acme"),
        (lambda r: r["review"]["consent_notice"].pop("current_version"), "review.consent_notice.current_version"),
    ],
)
def test_policy_check_names_the_bad_review_key(tmp_path, edit, key):
    raw = _raw()
    edit(raw)
    with pytest.raises(PolicyError, match=key.replace(".", r"\.")):
        load_policy(_write_policy(tmp_path, raw))


def test_report_readers_come_from_the_auth_manager():
    simple = report_access(
        "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager", "admin:admin,ana:viewer"
    )
    assert simple["users"] == [{"user": "admin", "role": "admin"}, {"user": "ana", "role": "viewer"}]
    other = report_access("airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager", "admin:admin")
    assert other["summary"].startswith("unknown (auth manager airflow.providers.fab")


# ---- generation is blocked for the affected purpose only ------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_home(tmp_path_factory.mktemp("assess"), contacts=300, seed=7, as_of=AS_OF_TEXT)


@pytest.fixture
def home(built, tmp_path, monkeypatch):
    copy = tmp_path / "home"
    shutil.copytree(built, copy)
    monkeypatch.setenv("GMP_HOME", str(copy))
    reset_settings()
    yield get_settings()
    reset_settings()


def _two_purposes(tmp_path: Path) -> Path:
    """The demo policy plus a second purpose whose vendor has no DPA (blocking for that purpose only)."""
    raw = _raw()
    raw["purposes"]["loyalty_email"] = {
        **raw["purposes"]["ai_personalized_email"],
        "description": "Loyalty offers drafted by a second vendor",
        "vendors": ["acme_ai"],
    }
    raw["vendors"]["acme_ai"] = {"role": "processor", "region": "US", "transfer_mechanism": "SCC"}
    raw["review"]["vendors"]["acme_ai"] = dict(raw["review"]["vendors"]["openai"])
    raw["review"]["dpia"]["loyalty_email"] = raw["review"]["dpia"]["ai_personalized_email"]
    raw["campaigns"]["loyalty_offer"] = {**raw["campaigns"][CAMPAIGN], "purpose": "loyalty_email"}
    return _write_policy(tmp_path, raw)


def test_a_blocking_finding_stops_generation_for_its_purpose_only(home, tmp_path):
    from governed_marketing.generation.campaign import prepare_campaign
    from governed_marketing.runs import parse_as_of

    policy = load_policy(_two_purposes(tmp_path))
    blocking = [f for f in policy_findings(policy, TODAY) if f.severity == "blocking"]
    assert [(f.code, f.purposes) for f in blocking] == [("vendor_dpa_missing", ("loyalty_email",))]
    common = dict(provider="offline", model="offline", transport="sync", as_of=parse_as_of(AS_OF_TEXT), run_id="r1")
    with warehouse_connect(home.warehouse_path) as conn:
        with pytest.raises(GenerationBlocked, match=r"loyalty_email.*vendors\.acme_ai\.dpa_signed is missing") as err:
            prepare_campaign("loyalty_offer", conn=conn, policy=policy, **common)
        assert is_deterministic(err.value)  # fails the Airflow task at once: a person must act
        planned = conn.execute("select count(*) from ops.generation_ledger where campaign_id = 'loyalty_offer'")
        assert planned.fetchone()[0] == 0
        outcome = prepare_campaign(CAMPAIGN, conn=conn, policy=policy, **common)  # the other purpose goes on
    assert outcome.units > 0


# ---- data findings, the audit chain and the report ------------------------------------------------------


def test_the_demo_assessment_is_clean_and_recorded_in_the_audit_chain(home):
    from governed_marketing.privacy import audit
    from governed_marketing.privacy.retention import purge
    from governed_marketing.report import build_report

    purge(settings=home, now=NOW)  # the daily purge the demo runs (inactive sample contacts go)
    result = assess(settings=home, now=NOW, access=report_access(None, "admin:admin"))
    assert result.findings == [], [f.as_json() for f in result.findings]
    second = assess(settings=home, now=NOW, actor="scheduled__2026-12-01", access={"summary": "n/a"})
    assert second.audit_seq == result.audit_seq + 2  # the retention dry run records its own entry between
    with warehouse_connect(home.warehouse_path) as conn:
        assert audit.verify(conn, home=home.home_dir).ok
        assert [h["actor"] for h in assessment.history(conn)] == ["scheduled__2026-12-01", "gmp-cli"]
    html = build_report(home).read_text(encoding="utf-8")
    section = html[html.index('id="regular-assessment"') :]
    assert "<h2>Regular assessment</h2>" in section and "clean, no findings" in section
    assert "review.vendors.openai.dpa" in section  # what is due next
    data = json.loads((home.home_dir / "reports" / "report.json").read_text())
    assert len(data["regular_assessment"]["history"]) == 2


def test_data_findings_appear_when_their_condition_is_set(home, tmp_path):
    from governed_marketing.privacy import dsr
    from governed_marketing.report import build_report

    raw = _raw()
    raw["review"]["consent_notice"]["accepted_versions"] = []  # consents under v2.1 no longer accepted
    policy = load_policy(_write_policy(tmp_path, raw))
    with warehouse_connect(home.warehouse_path) as conn:
        request_id = dsr.submit(
            conn, "access", "overdue.person@assess-test.example", policy=policy, key=home.resolve_pseudonym_key()[0],
            now=datetime(2026, 9, 1, 10, 0, 0),
        )  # fmt: skip
        stale = conn.execute(
            """
            select count(distinct e.contact_id) from intermediate.int_campaign_eligibility e
            join intermediate.int_consents_latest l on l.contact_id = e.contact_id
            where e.is_eligible and e.campaign_id = ? and l.latest_action = 'grant'
                and l.consent_purpose in ('email_marketing', 'ai_personalization')
                and l.deciding_notice_version <> 'v3.0'
            """,
            [CAMPAIGN],
        ).fetchone()[0]
    assert stale > 0  # the sample export holds consents given under the v2.1 notice
    later = datetime(2027, 3, 1, 9, 0, 0)  # raw CRM rows loaded now are past retention.raw_crm (30d) then
    result = assess(settings=home, policy=policy, now=later, access={"summary": "n/a"})
    found = _codes(result.findings)
    (notice,) = found["consent_notice_outdated"]
    assert (notice.subject, notice.count, notice.severity) == (f"campaigns.{CAMPAIGN}", stale, "medium")
    (late,) = found["dsr_overdue"]
    assert late.count == 1 and request_id in late.message and late.owner == "privacy-office"
    assert "retention.raw_crm" in {f.subject for f in found["retention_backlog"]}
    assert all(f.count > 0 for f in found["retention_backlog"])
    html = build_report(home).read_text(encoding="utf-8")
    section = html[html.index('id="regular-assessment"') :]
    assert "consent_notice_outdated" in section and "dsr_overdue" in section and "retention_backlog" in section
    assert "overdue.person" not in html and "overdue.person" not in json.dumps(result.as_json())


def test_gmp_assess_prints_the_findings_as_a_table_and_as_json(tmp_path, monkeypatch):
    from governed_marketing.cli import app
    from typer.testing import CliRunner

    raw = _raw()
    del raw["vendors"]["openai"]["dpa_signed"]
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GMP_POLICY", str(_write_policy(tmp_path / "policy", raw)))
    reset_settings()
    try:
        runner = CliRunner()
        table = runner.invoke(app, ["assess", "--as-of", "2026-12-07"])
        assert table.exit_code == 0, table.output
        assert "vendor_dpa_missing" in table.output and "blocking" in table.output
        as_json = runner.invoke(app, ["assess", "--json", "--as-of", "2026-12-07"])
        codes = [f["code"] for f in json.loads(as_json.output)["findings"]]
        assert codes == ["vendor_dpa_missing", "policy_changed_since_review"]  # blocking first
        bad = runner.invoke(app, ["assess", "--as-of", "not-a-date"])
        assert bad.exit_code == 1 and "--as-of" in bad.output
        check = runner.invoke(app, ["policy", "check"])
        words = " ".join(check.output.split())
        digest = content_hash((tmp_path / "policy" / "governance.yml").read_text())
        assert f"{digest} (record it as review.policy.sha256 once reviewed)" in words
    finally:
        reset_settings()
