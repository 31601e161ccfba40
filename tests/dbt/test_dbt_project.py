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
from governed_marketing.warehouse import connect as warehouse_connect

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
    from governed_marketing.validation.classification_coverage import check_project

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
    member_count = next(line for line in text.splitlines() if line.startswith("      - {name: member_count,"))
    text = text.replace(
        member_count, member_count + "\n      - {name: email, data_type: varchar, meta: {pii: direct}}", 1
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

    from governed_marketing.validation.classification_coverage import check_project

    report = check_project(tmp_path / "target")
    assert any("generation_cohorts.email" in problem for problem in report.problems)


def test_an_unclassified_column_is_named(tmp_path):
    from governed_marketing.validation.classification_coverage import check_classification

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


# ---- issue 13: the project's structure and the privacy guarantee under test ---------------------


def _copy_project(tmp_path: Path) -> Path:
    import shutil

    project = tmp_path / "dbt_project"
    shutil.copytree(DBT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    return project


def _dbt_in(project: Path, run_dir: Path, home: Path, *args: str, as_of: str | None = AS_OF):
    """dbt on a copy of the project and a copy of the warehouse (the module's build stays as built)."""
    from dbt.cli.main import dbtRunner

    variables = ["--vars", json.dumps({"as_of": as_of})] if as_of is not None else []
    paths = ["--target-path", str(run_dir / "target"), "--log-path", str(run_dir / "logs")]
    if args[0] == "deps":
        paths, variables = [], []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_HOME", str(home))
        env.setenv("GMP_PSEUDONYM_KEY", TEST_KEY)
        env.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        env.delenv("DBT_TARGET", raising=False)
        reset_settings()
        try:
            return dbtRunner().invoke(
                [*args, "--project-dir", str(project), "--profiles-dir", str(project), *paths, *variables]
            )  # fmt: skip
        finally:
            _release_warehouse()
            reset_settings()


def _home_copy(dbt_run: DbtRun, tmp_path: Path) -> Path:
    import shutil

    assert dbt_run.build.success, failures(dbt_run.build)
    home = tmp_path / "gmp_home"
    home.mkdir()
    shutil.copy2(dbt_run.warehouse, home / "warehouse.duckdb")
    return home


def _failed(result) -> dict[str, str]:
    """unique_id -> status of every node that did not pass."""
    return {
        r.node.unique_id: str(r.status)
        for r in result.result.results
        if str(r.status) not in {"pass", "success", "no-op"}
    }


def _manifest(dbt_run: DbtRun) -> dict:
    return json.loads((dbt_run.target / "manifest.json").read_text())


def _own(manifest: dict, resource_type: str) -> dict[str, dict]:
    return {
        uid: node
        for uid, node in {**manifest["nodes"], **manifest["sources"]}.items()
        if node["resource_type"] == resource_type and node["package_name"] == "governed_marketing"
    }


def test_no_model_above_staging_reads_a_source(dbt_run: DbtRun) -> None:
    manifest = _manifest(dbt_run)
    above_staging = {
        uid: node["depends_on"]["nodes"]
        for uid, node in _own(manifest, "model").items()
        if not node["name"].startswith("stg_")
    }
    direct = {uid: [p for p in parents if p.startswith("source.")] for uid, parents in above_staging.items()}
    assert {uid: refs for uid, refs in direct.items() if refs} == {}
    # Every governance table has its staging model, which reads exactly that table.
    governance = [uid for uid in manifest["sources"] if uid.startswith("source.governed_marketing.governance.")]
    staged = {
        node["depends_on"]["nodes"][0]
        for node in _own(manifest, "model").values()
        if node["name"].startswith("stg_governance__")
    }
    assert sorted(governance) == sorted(staged)
    # The generalization order reaches the cohort model through ref: lineage knows it.
    cohorts = manifest["nodes"]["model.governed_marketing.int_audience_cohorts_assigned"]
    assert "model.governed_marketing.stg_governance__cohort_generalization" in cohorts["depends_on"]["nodes"]
    assert "run_query" not in cohorts["raw_code"]


def test_every_model_has_a_key_test(dbt_run: DbtRun) -> None:
    manifest = _manifest(dbt_run)
    keyed = set()
    for node in manifest["nodes"].values():
        if node["resource_type"] == "test" and node["test_metadata"]["name"] in {"unique", "unique_combination"}:
            keyed.update(n for n in node["depends_on"]["nodes"] if n.startswith("model."))
    models = set(_own(manifest, "model"))
    print(f"\nmodels with a key test: {len(models & keyed)} of {len(models)}")
    assert sorted(models - keyed) == []


def test_column_descriptions_cover_every_mart_column_and_most_of_the_rest(dbt_run: DbtRun) -> None:
    manifest = _manifest(dbt_run)
    models = _own(manifest, "model")
    columns = [(node, c) for node in models.values() for c in node["columns"].values()]
    described = [(node, c) for node, c in columns if c.get("description", "").strip()]
    marts = [(node, c) for node, c in columns if node["path"].startswith("marts")]
    marts_described = [(node, c) for node, c in marts if c.get("description", "").strip()]
    sources = _own(manifest, "source")
    print(
        f"\ncolumn descriptions: marts {len(marts_described)}/{len(marts)}, all models "
        f"{len(described)}/{len(columns)} ({len(described) / len(columns):.0%}); source tables described "
        f"{sum(1 for s in sources.values() if s['description'].strip())}/{len(sources)}"
    )
    assert [f"{n['name']}.{c['name']}" for n, c in marts if (n, c) not in marts_described] == []
    assert len(described) / len(columns) >= 0.8
    assert [uid for uid, s in sources.items() if not s["description"].strip()] == []
    # The shared docs blocks are the wording (one place), e.g. every exclusion flag and funnel count.
    docs = manifest["docs"]
    eligibility = models["model.governed_marketing.int_campaign_eligibility"]["columns"]
    assert eligibility["is_objecting"]["description"] == docs["doc.governed_marketing.is_objecting"]["block_contents"]
    funnel = models["model.governed_marketing.audience_funnel"]["columns"]
    assert all(funnel[name]["description"] for name in funnel if name.startswith("excluded_"))


def test_every_python_reader_of_a_mart_is_an_exposure(dbt_run: DbtRun) -> None:
    """Each module under plugins/ that reads marts.<name> is declared, with that mart upstream."""
    import re

    manifest = _manifest(dbt_run)
    marts = {n["name"] for n in _own(manifest, "model").values() if n["path"].startswith("marts")}
    declared: dict[str, set[str]] = {}
    for exposure in manifest["exposures"].values():
        for path in re.findall(r"plugins/governed_marketing/[\w/]+\.py|\b\w+\.py\b", exposure["description"]):
            declared.setdefault(path.rsplit("/", 1)[-1], set()).update(
                n.rsplit(".", 1)[-1] for n in exposure["depends_on"]["nodes"]
            )
    readers: dict[str, set[str]] = {}
    for path in (ROOT / "plugins" / "governed_marketing").rglob("*.py"):
        read = set(re.findall(r"\b(?:from|join)\s+marts\.(\w+)", path.read_text(), flags=re.I)) & marts
        if read:
            readers[path.name] = read
    assert readers, "no reader found: the scan is broken"
    missing = {name: sorted(read - declared.get(name, set())) for name, read in readers.items()}
    assert {name: m for name, m in missing.items() if m} == {}
    for uid in ("campaign_audience", "generation_cohorts", "audience_funnel", "campaign_recipients"):
        node = manifest["nodes"][f"model.governed_marketing.{uid}"]
        assert node["group"] == "marketing_audience" and node["access"] in {"public", "protected"}, uid


def test_k_anonymity_tests_fail_on_a_broken_cohort_model(dbt_run: DbtRun, tmp_path: Path) -> None:
    """In a copy: cells no longer need k members. The data test and the unit tests both catch it."""
    project = _copy_project(tmp_path)
    model = project / "models" / "intermediate" / "int_audience_cohorts_assigned.sql"
    text = model.read_text()
    broken = text.replace("cells_{{ level }}.cell_size >= cohort_policy.k", "cells_{{ level }}.cell_size >= 1")
    assert broken != text
    model.write_text(broken)
    home = _home_copy(dbt_run, tmp_path)
    # The data test on the built model (unit tests first would skip the model they fail).
    built = _dbt_in(
        project, tmp_path, home, "build", "--select", "int_audience_cohorts_assigned", "--exclude", "test_type:unit"
    )
    assert not built.success
    failed = {uid.split(".")[2]: status for uid, status in _failed(built).items()}
    assert failed == {"int_audience_cohorts_assigned_cells_hold_k": "fail"}, failed
    units = _dbt_in(project, tmp_path, home, "test", "--select", "int_audience_cohorts_assigned,test_type:unit")
    failed_units = {uid.rsplit(".", 1)[-1] for uid, status in _failed(units).items() if status == "fail"}
    # Levels 1..4 need the k rule (level 0 pairs are whole cells either way; level 5 has no rule).
    assert {f"level_{n}" for n in (1, 2, 3, 4)} <= {name.split("share_a_")[-1][:7] for name in failed_units}, (
        failed_units
    )


def test_the_pii_hook_ignores_an_installed_package(dbt_run: DbtRun, tmp_path: Path) -> None:
    """A local dbt package whose documented columns carry no meta.pii: the project still builds."""
    package = tmp_path / "vendor_pkg"
    (package / "models").mkdir(parents=True)
    (package / "dbt_project.yml").write_text("name: vendor_pkg\nversion: '1.0.0'\nconfig-version: 2\n")
    (package / "models" / "vendor_things.sql").write_text("select 1 as thing_id, 'x' as thing_name\n")
    (package / "models" / "schema.yml").write_text(
        "version: 2\nmodels:\n  - name: vendor_things\n    description: A package's model\n"
        "    columns:\n      - {name: thing_id, description: Documented, unclassified}\n"
        "      - {name: thing_name, description: Documented too}\n"
    )
    project = _copy_project(tmp_path)
    (project / "packages.yml").write_text(f"packages:\n  - local: {package}\n")
    home = _home_copy(dbt_run, tmp_path)
    deps = _dbt_in(project, tmp_path, home, "deps", as_of=None)
    assert deps.success, deps.exception
    result = _dbt_in(project, tmp_path, home, "build", "--select", "vendor_things stg_governance__cohort_policy")
    assert result.success, failures(result)
    assert {r.node.name for r in result.result.results} >= {"vendor_things", "stg_governance__cohort_policy"}
    # The project's own nodes are still checked: an unclassified column of ours fails at once.
    staging = project / "models" / "staging" / "governance" / "_governance__models.yml"
    classified = "holds, meta: {pii: none}, data_tests: [unique, not_null]}"
    assert classified in staging.read_text()
    staging.write_text(staging.read_text().replace(classified, "holds, data_tests: [unique, not_null]}", 1))
    refused = _dbt_in(project, tmp_path, home, "build", "--select", "stg_governance__cohort_policy")
    assert not refused.success
    assert "stg_governance__cohort_policy.k: meta.pii is missing" in str(refused.exception)


def test_a_policy_with_a_direct_identifier_in_a_purpose_stops_dbt(dbt_run: DbtRun, tmp_path: Path) -> None:
    import shutil

    import yaml

    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    raw = yaml.safe_load((ROOT / "governance.yml").read_text())
    purpose = next(iter(raw["purposes"]))
    raw["purposes"][purpose]["fields"].append("email")
    (tmp_path / "governance.yml").write_text(yaml.safe_dump(raw, sort_keys=False))
    home = _home_copy(dbt_run, tmp_path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_POLICY", str(tmp_path / "governance.yml"))
        result = _dbt_in(DBT, tmp_path, home, "build", "--select", "stg_governance__purpose_fields")
    assert not result.success
    assert f"purposes.{purpose}.fields: 'email' is a direct identifier" in str(result.exception)


def test_direct_identifiers_of_the_policy_cover_the_project_classification(dbt_run: DbtRun) -> None:
    """policy.DIRECT_IDENTIFIERS can not fall behind a column the project classifies `direct`."""
    from governed_marketing.policy import DIRECT_IDENTIFIERS

    manifest = _manifest(dbt_run)
    direct = {
        name.lower()
        for kind in ("model", "source")
        for node in _own(manifest, kind).values()
        for name, column in node["columns"].items()
        if (column.get("meta") or {}).get("pii") == "direct"
    }
    assert direct and direct <= DIRECT_IDENTIFIERS, sorted(direct - DIRECT_IDENTIFIERS)


def test_dbt_build_without_vars_reproduces_the_last_runs_as_of_and_says_so(dbt_run: DbtRun, tmp_path: Path) -> None:
    home = _home_copy(dbt_run, tmp_path)
    result = _dbt_in(DBT, tmp_path, home, "build", "--select", "audience_funnel", as_of=None)
    assert result.success, failures(result)
    conn = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        (as_of,) = conn.execute("select distinct as_of from marts.audience_funnel").fetchone()
    finally:
        conn.close()
    assert as_of.isoformat() == AS_OF
    log = (tmp_path / "logs" / "dbt.log").read_text()
    assert f"as_of: {AS_OF}.000000 UTC, the last run's (marts.audience_funnel)" in log


def test_the_pipeline_with_no_as_of_builds_for_now_not_the_last_run(dbt_run: DbtRun, tmp_path: Path) -> None:
    """The DAG always sets GMP_DBT_AS_OF (empty without an as_of param): that means now, never a replay."""
    from datetime import datetime

    home = _home_copy(dbt_run, tmp_path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GMP_DBT_AS_OF", "")
        result = _dbt_in(DBT, tmp_path, home, "build", "--select", "audience_funnel", as_of=None)
    assert result.success, failures(result)
    conn = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        (as_of,) = conn.execute("select distinct as_of from marts.audience_funnel").fetchone()
    finally:
        conn.close()
    assert as_of > datetime.fromisoformat(AS_OF)  # the fixture's as-of lies in the past


def test_the_readme_dbt_command_runs_from_dbt_project() -> None:
    """The analyst's loop as written in dbt_project/README.md: the dbt it names exists after `make`."""
    readme = (DBT / "README.md").read_text()
    commands = [line.split() for line in readme.splitlines() if " build" in line and "dbt" in line.split(" build")[0]]
    executables = {words[0] for words in commands if words and words[0].endswith("dbt") and words[1] == "build"}
    assert executables, "the README shows no dbt build command"
    for executable in executables:
        assert "/" in executable, f"{executable}: not on PATH unless the venv is activated"
        assert (DBT / executable).resolve().is_file(), f"{executable} (from dbt_project/) does not exist"


def test_stale_crm_data_warns_then_fails_at_the_policy_thresholds(
    dbt_run: DbtRun, tmp_path: Path, policy: Policy
) -> None:
    """The newest CRM load older than ingest.freshness at the as-of time: warn, then error."""
    freshness = policy.ingest.freshness
    assert freshness is not None
    home = _home_copy(dbt_run, tmp_path)

    def load_age(hours: float) -> dict[str, str]:
        conn = warehouse_connect(home / "warehouse.duckdb")
        try:
            conn.execute(
                "update ops.crm_loads set loaded_at = cast(? as timestamp) - ? * interval '1 hour'", [AS_OF, hours]
            )
        finally:
            conn.close()
        result = _dbt_in(DBT, tmp_path, home, "test", "--select", "source:crm,test_name:loaded_within_policy")
        return {
            r.node.unique_id.rsplit(".", 2)[-2]: str(r.status)
            for r in result.result.results
            if str(r.node.resource_type) == "test"
        }

    fresh = load_age(freshness.warn_after_hours - 1)
    assert fresh and set(fresh.values()) == {"pass"}, fresh
    assert set(load_age(freshness.warn_after_hours + 1).values()) == {"warn"}
    assert set(load_age(freshness.error_after_hours + 1).values()) == {"fail"}


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
