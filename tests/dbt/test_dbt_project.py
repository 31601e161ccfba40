"""The dbt project on a real warehouse: `dbt build` over the external CRM fixture, then the marts.

One module-scoped build: a fresh GMP_HOME, the fixture export ingested, `dbt build` run in-process
(dbtRunner) with the fixture's as-of time and a fixed test pseudonym key. The tests then read the
warehouse with DuckDB (only after dbt has finished) and hold the marts against DESIGN.md:
expected recipients, a funnel that adds up, k-anonymous cohorts, the purpose's allow-list, and a
keyed pseudonym whose key never reaches dbt's compiled SQL or logs.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from governed_marketing.crm.contract import normalize_email
from governed_marketing.crm.ingest import ingest_export
from governed_marketing.policy import Policy, load_policy
from governed_marketing.pseudonym import pseudonym
from governed_marketing.settings import reset_settings
from governed_marketing.warehouse import connect

from tests.support.dbt_results import failures, nodes_by_type

pytestmark = pytest.mark.dbt

ROOT = Path(__file__).resolve().parents[2]
DBT = ROOT / "dbt_project"
FIXTURE = ROOT / "tests" / "fixtures" / "external_crm"
AS_OF = "2026-11-15T12:00:00"
CAMPAIGN = "spring_newsletter"
TEST_KEY = "gmp-dbt-test-key-3f9c2a71d8e4b605"

# generation_cohorts column -> how to read the same attribute off a campaign_audience row.
COHORT_ATTRIBUTES = {
    "language": lambda row: row["language"],
    "country": lambda row: row["country"],
    "lifecycle_stage": lambda row: row["lifecycle_stage"],
    "interest": lambda row: (row["interests"] or "").split(";")[0].strip() or None,
    "last_purchase_category": lambda row: row["last_purchase_category"],
}


@dataclass
class DbtRun:
    home: Path
    target: Path
    logs: Path
    build: object  # dbtRunnerResult
    build_seconds: float

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"


def _release_warehouse() -> None:
    """Close the DuckDB file dbt-duckdb keeps open in this process after an in-process run.

    dbt-duckdb 1.11 defaults `keep_open: true`: its environment holds the database open (with the
    profile's settings) after dbtRunner returns, and DuckDB refuses a second connection to the same
    file with a different configuration in the same process.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    environment = DuckDBConnectionManager._ENV
    if environment is not None:
        environment.close()
    DuckDBConnectionManager.close_all_connections()


def _dbt(run_dir: Path, *args: str):
    from dbt.cli.main import dbtRunner

    try:
        return dbtRunner().invoke(
            [
                *args,
                "--project-dir",
                str(DBT),
                "--profiles-dir",
                str(DBT),
                "--target-path",
                str(run_dir / "target"),
                "--log-path",
                str(run_dir / "logs"),
                "--vars",
                json.dumps({"as_of": AS_OF}),
            ]
        )
    finally:
        _release_warehouse()


@pytest.fixture(scope="module")
def dbt_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbtRun]:
    run_dir = tmp_path_factory.mktemp("dbt_project")
    home = run_dir / "gmp_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        env.setenv("GMP_PSEUDONYM_KEY", TEST_KEY)
        env.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        env.delenv("DBT_TARGET", raising=False)
        reset_settings()  # the plugin reads GMP_HOME and the key through the cached settings
        try:
            conn = connect(home / "warehouse.duckdb")
            try:
                ingest_export(FIXTURE, conn=conn, policy=load_policy(), landing_root=home / "landing")
            finally:
                conn.close()
            started = time.perf_counter()
            build = _dbt(run_dir, "build")
            seconds = time.perf_counter() - started
            yield DbtRun(home, run_dir / "target", run_dir / "logs", build, seconds)
        finally:
            reset_settings()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


@pytest.fixture
def warehouse(dbt_run: DbtRun) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection for one test, opened after dbt has finished and closed before the next
    dbt invocation (DuckDB allows one configuration per file per process)."""
    assert dbt_run.build.success, failures(dbt_run.build)
    conn = duckdb.connect(str(dbt_run.warehouse), read_only=True)
    try:
        yield conn
    finally:
        conn.close()


def _rows(conn: duckdb.DuckDBPyConnection, sql: str, *params) -> list[dict]:
    cursor = conn.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _fixture_emails() -> dict[str, str]:
    """contact_id -> normalized email, read from the export itself (not from the warehouse)."""
    with (FIXTURE / "contacts.csv").open(encoding="utf-8-sig", newline="") as handle:
        return {
            row["contact_id"].strip(): normalize_email(row["email"])
            for row in csv.DictReader(handle)
            if (row.get("contact_id") or "").strip() and row.get("email")
        }


# ---------------------------------------------------------------------------------------------


def test_dbt_build_passes_models_data_tests_and_unit_tests(dbt_run: DbtRun) -> None:
    assert dbt_run.build.success, failures(dbt_run.build)
    assert failures(dbt_run.build) == []

    manifest = json.loads((dbt_run.target / "manifest.json").read_text())
    declared_unit = len(manifest["unit_tests"])
    declared_data = sum(1 for n in manifest["nodes"].values() if n["resource_type"] == "test")
    declared_models = sum(1 for n in manifest["nodes"].values() if n["resource_type"] == "model")
    ran = nodes_by_type(dbt_run.build)
    print(
        f"\ndbt build: {ran['model']} models, {ran['test']} data tests, {ran['unit_test']} unit tests "
        f"in {dbt_run.build_seconds:.1f}s"
    )
    # Every declared node ran (none skipped or deselected), and there is something to run.
    assert ran["model"] == declared_models > 0
    assert ran["test"] == declared_data > 0
    assert ran["unit_test"] == declared_unit > 0


def test_campaign_audience_is_exactly_the_expected_recipients(warehouse: duckdb.DuckDBPyConnection) -> None:
    expected = {line.strip() for line in (FIXTURE / "expected_recipients.txt").read_text().splitlines()}
    expected.discard("")
    rows = _rows(
        warehouse,
        """
        select recipients.contact_id
        from marts.campaign_audience as audience
        inner join marts.campaign_recipients as recipients
            on audience.campaign_id = recipients.campaign_id
            and audience.recipient_pseudonym = recipients.recipient_pseudonym
        where audience.campaign_id = ?
        """,
        CAMPAIGN,
    )
    contact_ids = [row["contact_id"] for row in rows]
    assert len(contact_ids) == len(set(contact_ids)), "a contact appears twice in the audience"
    assert set(contact_ids) == expected
    (audience_size,) = warehouse.execute(
        "select count(*) from marts.campaign_audience where campaign_id = ?", [CAMPAIGN]
    ).fetchone()
    (recipient_count,) = warehouse.execute(
        "select count(*) from marts.campaign_recipients where campaign_id = ?", [CAMPAIGN]
    ).fetchone()
    assert audience_size == recipient_count == len(expected)


def test_audience_funnel_adds_up(warehouse: duckdb.DuckDBPyConnection) -> None:
    funnel = _rows(warehouse, "select * from marts.audience_funnel")
    assert {row["campaign_id"] for row in funnel} >= {CAMPAIGN}
    for row in funnel:
        excluded = sum(value for name, value in row.items() if name.startswith("excluded_"))
        assert row["contacts"] == excluded + row["audience"], row
        (audience_size,) = warehouse.execute(
            "select count(*) from marts.campaign_audience where campaign_id = ?", [row["campaign_id"]]
        ).fetchone()
        assert row["audience"] == audience_size, row
    spring = next(row for row in funnel if row["campaign_id"] == CAMPAIGN)
    # EXPECTED.md, counts by first failing rule (rule 1 records never become contacts).
    by_rule = {
        "rule 2": spring["excluded_erasure_requested"] + spring["excluded_objection"] + spring["excluded_restriction"],
        "rule 3": spring["excluded_consent_missing_or_withdrawn"] + spring["excluded_consent_expired"],
        "rule 4": spring["excluded_under_minimum_age"] + spring["excluded_age_unknown"],
        "rule 5": spring["excluded_duplicate_email"],
        "recipients": spring["audience"],
    }
    assert by_rule == {"rule 2": 5, "rule 3": 6, "rule 4": 2, "rule 5": 2, "recipients": 20}
    assert spring["contacts"] == 35


def test_generation_cohorts_are_k_anonymous(warehouse: duckdb.DuckDBPyConnection, policy: Policy) -> None:
    k = policy.cohorts.k
    last_level = len(policy.cohorts.generalize)
    cohorts = _rows(warehouse, "select * from marts.generation_cohorts where campaign_id = ?", CAMPAIGN)
    audience = _rows(warehouse, "select * from marts.campaign_audience where campaign_id = ?", CAMPAIGN)
    assert cohorts and audience
    assert sum(c["member_count"] for c in cohorts) == len(audience)

    for cohort in cohorts:
        members = [row for row in audience if row["cohort_id"] == cohort["cohort_id"]]
        assert cohort["member_count"] == len(members), cohort
        if cohort["generalization_level"] == last_level:
            # The fully generalized cohort carries no attribute (only the fallback language).
            assert cohort["language"] == policy.cohorts.fallback_language, cohort
            assert all(cohort[name] is None for name in COHORT_ATTRIBUTES if name != "language"), cohort
            continue
        assert cohort["generalization_level"] < last_level, cohort
        assert cohort["member_count"] >= k, cohort
        for name, read in COHORT_ATTRIBUTES.items():
            shown = cohort[name]
            if shown is None:
                continue
            sharing_in_cohort = sum(1 for row in members if read(row) == shown)
            sharing_in_audience = sum(1 for row in audience if read(row) == shown)
            assert sharing_in_cohort >= k, (cohort["cohort_id"], name)
            assert sharing_in_audience >= k, (cohort["cohort_id"], name)


def test_campaign_audience_carries_only_the_purpose_fields(
    warehouse: duckdb.DuckDBPyConnection, policy: Policy
) -> None:
    purpose = policy.purposes[policy.campaigns[CAMPAIGN].purpose]
    columns = [
        name
        for (name,) in warehouse.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'marts' and table_name = 'campaign_audience' order by ordinal_position"
        ).fetchall()
    ]
    assert sorted(columns) == sorted(["campaign_id", "recipient_pseudonym", "cohort_id", *purpose.fields])


def test_pseudonym_key_never_reaches_dbt_artifacts(dbt_run: DbtRun) -> None:
    key = TEST_KEY.encode()
    scanned = 0
    for folder in (dbt_run.target, dbt_run.logs):
        assert folder.is_dir(), folder
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert key not in path.read_bytes(), f"pseudonym key found in {path}"
    assert list((dbt_run.target / "compiled").rglob("*.sql")), "no compiled SQL to check"
    assert (dbt_run.logs / "dbt.log").is_file()
    assert scanned > 0


def test_recipient_pseudonym_is_the_keyed_hmac_of_the_normalized_email(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    emails = _fixture_emails()
    rows = _rows(
        warehouse,
        """
        select recipients.contact_id, recipients.recipient_pseudonym
        from marts.campaign_recipients as recipients
        inner join marts.campaign_audience as audience
            on recipients.campaign_id = audience.campaign_id
            and recipients.recipient_pseudonym = audience.recipient_pseudonym
        where recipients.campaign_id = ?
        """,
        CAMPAIGN,
    )
    assert rows
    for row in rows:
        expected = pseudonym(TEST_KEY.encode(), emails[row["contact_id"]])
        assert row["recipient_pseudonym"] == expected, row["contact_id"]


def test_unit_tests_pass_on_their_own(dbt_run: DbtRun, tmp_path: Path) -> None:
    assert dbt_run.build.success, "the build must have created the relations the unit tests read types from"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(dbt_run.home))
        env.setenv("GMP_PSEUDONYM_KEY", TEST_KEY)
        env.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        env.delenv("DBT_TARGET", raising=False)
        reset_settings()
        try:
            result = _dbt(tmp_path, "test", "--select", "test_type:unit")
        finally:
            reset_settings()
    assert result.success, failures(result)
    ran = nodes_by_type(result)
    assert set(ran) - {"operation"} == {"unit_test"}, ran  # operation: the on-run-start classification hook
    assert ran["unit_test"] == nodes_by_type(dbt_run.build)["unit_test"]


# ---- classification: every column classified, nothing direct reaches the vendor ----------------


def test_docs_generate_works_and_every_column_is_classified(dbt_run):
    from governed_marketing.classification import check_project

    docs = _dbt(dbt_run.target.parent, "docs", "generate")
    assert docs.success, docs.exception
    report = check_project(dbt_run.target)
    assert report.problems == []
    assert report.columns > 100
    assert report.share_classified == 1.0


def test_a_direct_column_added_to_the_vendor_payload_fails_the_build_at_once(tmp_path):
    """The analyst adds `email` to generation_cohorts: dbt refuses before anything is built."""
    import shutil

    project = tmp_path / "dbt_project"
    shutil.copytree(DBT, project, ignore=shutil.ignore_patterns("target", "logs"))
    models = project / "models" / "marts" / "_marts__models.yml"
    text = models.read_text()
    text = text.replace(
        "      - {name: member_count, data_type: bigint, meta: {pii: none}}",
        "      - {name: member_count, data_type: bigint, meta: {pii: none}}\n"
        "      - {name: email, data_type: varchar, meta: {pii: direct}}",
        1,
    )
    models.write_text(text)
    from dbt.cli.main import dbtRunner

    result = dbtRunner().invoke(
        ["build", "--project-dir", str(project), "--profiles-dir", str(project), "--target-path",
         str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"), "--select", "generation_cohorts"]
    )  # fmt: skip
    _release_warehouse()
    assert not result.success
    assert "generation_cohorts.email: a direct identifier in a vendor payload model" in str(result.exception)

    from governed_marketing.classification import check_project

    report = check_project(tmp_path / "target")
    assert any("generation_cohorts.email" in problem for problem in report.problems)


def test_an_unclassified_column_is_named(tmp_path):
    from governed_marketing.classification import check_classification

    manifest = {
        "nodes": {
            "model.p.m": {
                "resource_type": "model",
                "columns": {"a": {"meta": {"pii": "none"}}, "b": {"meta": {}}},
                "config": {"tags": []},
            }
        },
        "sources": {},
        "exposures": {},
        "parent_map": {},
    }
    catalog = {"nodes": {"model.p.m": {"columns": {"a": {}, "b": {}, "c": {}}}}, "sources": {}}
    report = check_classification(manifest, catalog)
    assert report.columns == 3 and report.classified == 1
    assert "model.p.m.b: meta.pii is missing" in report.problems
    assert "model.p.m.c: in the warehouse but not declared (no meta.pii)" in report.problems


def test_consent_history_is_incremental_and_a_delta_load_only_adds(dbt_run, tmp_path):
    """Runs last in this module: it loads a delta export into the shared warehouse and builds again."""
    delta = tmp_path / "delta"
    delta.mkdir()
    for name in ("contacts.csv", "activity.csv"):
        (delta / name).write_bytes((FIXTURE / name).read_bytes())
    header = "event_id,contact_id,purpose,action,source,notice_version,occurred_at\n"
    (delta / "consent_events.csv").write_text(
        header + "DELTA-1,1001,email_marketing,withdraw,web,v1,2026-11-10T09:00:00Z\n"
    )
    conn = connect(dbt_run.warehouse)
    try:
        before = conn.execute("select count(*) from intermediate.int_consent_events_deduplicated").fetchall()[0][0]
        ingest_export(delta, conn=conn, policy=load_policy(), landing_root=dbt_run.home / "landing")
    finally:
        conn.close()
    manifest = json.loads((dbt_run.target / "manifest.json").read_text())
    node = manifest["nodes"]["model.governed_marketing.int_consent_events_deduplicated"]
    assert node["config"]["materialized"] == "incremental"
    result = _dbt(dbt_run.target.parent, "build", "--select", "int_consent_events_deduplicated")
    assert result.success, failures(result)
    conn = duckdb.connect(str(dbt_run.warehouse), read_only=True)
    try:
        after = conn.execute("select count(*) from intermediate.int_consent_events_deduplicated").fetchall()[0][0]
        delta_rows = conn.execute(
            "select consent_action from intermediate.int_consent_events_deduplicated where event_id = 'DELTA-1'"
        ).fetchall()
    finally:
        conn.close()
    assert after == before + 1
    assert delta_rows == [("withdraw",)]
