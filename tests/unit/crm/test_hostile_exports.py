"""Hostile exports (tests/fixtures/hostile/<case>/): every valid row survives every broken one.

Each case is the 50-contact `baseline/` export with one thing broken by hand (build_cases.py). The
ingest must quarantine the bad row with its line and reason (or clear only the bad value), load every
other row the baseline loads, and keep nothing outside the contract on disk.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from governed_marketing.crm import contract
from governed_marketing.crm.contract import ExportUnreadable
from governed_marketing.crm.ingest import IngestResult, ingest_export
from governed_marketing.orchestration import task_bodies
from governed_marketing.policy import Policy, load_policy
from governed_marketing.privacy.suppression import rewrite_csv
from governed_marketing.settings import get_settings, reset_settings
from governed_marketing.warehouse import connect

REPO = Path(__file__).resolve().parents[3]
HOSTILE = REPO / "tests" / "fixtures" / "hostile"
#: The load time of every test (the fixture describes 2026-11-15): the future-skew check is relative to it.
LOAD_TIME = datetime(2026, 11, 15, 12, 0)
TEST_KEY = "hostile-export-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "governance.yml")


@pytest.fixture
def conn(tmp_path: Path):
    connection = connect(tmp_path / "w.duckdb")
    yield connection
    connection.close()


def load(case: str, conn: duckdb.DuckDBPyConnection, tmp_path: Path, policy: Policy) -> IngestResult:
    return ingest_export(HOSTILE / case, conn=conn, policy=policy, landing_root=tmp_path / "landing", now=LOAD_TIME)


def ids(conn: duckdb.DuckDBPyConnection, table: str, key: str) -> set[str]:
    return {row[0] for row in conn.execute(f"select {key} from raw.{table}").fetchall()}


def quarantined(conn: duckdb.DuckDBPyConnection) -> set[tuple[str, int, str]]:
    sql = "select file_name, line_number, reason from raw.quarantine"
    return {tuple(row) for row in conn.execute(sql).fetchall()}


def contact(conn: duckdb.DuckDBPyConnection, contact_id: str) -> dict:
    cursor = conn.execute("select * from raw.crm_contacts where contact_id = ?", [contact_id])
    names = [d[0] for d in cursor.description]
    (row,) = cursor.fetchall()
    return dict(zip(names, row, strict=True))


def file_result(result: IngestResult, file_name: str = "contacts.csv"):
    (found,) = [f for f in result.files if f.file_name == file_name]
    return found


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, policy) -> dict:
    """What the unedited export loads: the survivors every case is compared with."""
    tmp = tmp_path_factory.mktemp("baseline")
    with connect(tmp / "w.duckdb") as connection:
        load("baseline", connection, tmp, policy)
        loaded = ids(connection, "crm_contacts", "contact_id")
        assert len(loaded) == 49  # 50 contacts, one exported twice: the comparison point is itself clean
        return {
            "contacts": ids(connection, "crm_contacts", "contact_id"),
            "activity": ids(connection, "crm_activity", "event_id"),
            "consent": ids(connection, "crm_consent_events", "event_id"),
            "quarantine": quarantined(connection),
        }


# ---- unterminated_quote ----------------------------------------------------------------------


def test_an_unterminated_quote_costs_its_own_line_only(tmp_path, conn, policy, baseline):
    result = load("unterminated_quote", conn, tmp_path, policy)

    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"] - {"9"}
    new = quarantined(conn) - baseline["quarantine"]
    assert new == {("contacts.csv", 12, "unreadable CSV record: a quoted field is not closed on this line")}
    assert file_result(result).rows_read == file_result(result).rows_loaded + file_result(result).rows_quarantined
    assert ids(conn, "crm_consent_events", "event_id") == baseline["consent"]  # no event became an orphan


# ---- oversized_field -------------------------------------------------------------------------


def test_an_oversized_field_is_quarantined_and_never_stored(tmp_path, conn, policy, baseline):
    load("oversized_field", conn, tmp_path, policy)

    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"] - {"13"}
    new = quarantined(conn) - baseline["quarantine"]
    assert new == {("contacts.csv", 16, "unreadable CSV record: field larger than field limit (131072)")}
    landing = b"".join(p.read_bytes() for p in (tmp_path / "landing").rglob("*") if p.is_file())
    assert b"OVERSIZED-NOTE" not in landing
    (archived,) = (tmp_path / "landing").rglob("contacts.csv")
    assert b"rene.lebrun.13@" not in archived.read_bytes()  # the unreadable record stays out of the archive
    stored = conn.execute("select string_agg(raw_record, '') from raw.quarantine").fetchall()[0][0]
    assert "OVERSIZED-NOTE" not in stored


def test_erasure_works_after_an_oversized_field(tmp_path, monkeypatch):
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GMP_PSEUDONYM_KEY", TEST_KEY)
    reset_settings()
    try:
        from governed_marketing.privacy.process import process_pending

        settings = get_settings()
        policy = load_policy()
        with connect(settings.warehouse_path) as connection:
            ingest_export(HOSTILE / "oversized_field", conn=connection, policy=policy,
                          landing_root=settings.path("landing"), now=LOAD_TIME)  # fmt: skip

        outcome = process_pending(settings=settings, policy=policy, as_of=LOAD_TIME)

        assert sorted(outcome["erasure"]) == ["dsr-000003", "dsr-000009"]
        assert outcome.get("failed", []) == []
        landing = b"".join(p.read_bytes() for p in settings.path("landing").rglob("*.csv")).lower()
        assert b"hassan.girschner.32@" not in landing and b"margot.fouquet.45@" not in landing
    finally:
        reset_settings()


def test_rewrite_csv_reads_a_field_beyond_the_csv_default_limit_and_leaves_the_limit_as_it_was(tmp_path):
    """An archive written before the ingest enforced its limit still has to be erasable."""
    path = tmp_path / "contacts.csv"
    path.write_text("contact_id,notes\n1," + "x" * 200_000 + "\n2,keep\n", encoding="utf-8")
    limit = csv.field_size_limit()

    removed, _ = rewrite_csv(path, lambda row: isinstance(row, dict) and row["contact_id"] == "1")

    assert removed == 1
    assert path.read_text(encoding="utf-8") == "contact_id,notes\n2,keep\n"
    assert csv.field_size_limit() == limit  # the ingest's limit is not raised behind its back


# ---- control_characters ----------------------------------------------------------------------


def test_control_characters_never_reach_the_warehouse(tmp_path, conn, policy, baseline):
    result = load("control_characters", conn, tmp_path, policy)

    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"]  # a bad name costs no contact
    assert contact(conn, "8")["first_name"] is None  # "Jo\x00sé": cleared, so the greeting falls back
    assert contact(conn, "8")["last_name"] == "Núñez"
    assert contact(conn, "5")["notes"] == "ring [31mtwice[0m"  # free text: the control characters go
    assert file_result(result).values_cleared == {
        "first_name cleared: control character": 1,
        "notes: control characters removed": 1,
    }
    assert ids(conn, "crm_activity", "event_id") == baseline["activity"] - {"act-000000003"}
    new = quarantined(conn) - baseline["quarantine"]
    assert new == {("activity.csv", 4, "event_id has a control character")}
    text = conn.execute(
        "select string_agg(concat_ws('|', contact_id, email, first_name, last_name, phone, city, interests, notes), '')"
        " from raw.crm_contacts"
    ).fetchall()[0][0]
    assert not contract.CONTROL_IN_FREE_TEXT.search(text)


# ---- future_updated_at -----------------------------------------------------------------------


def test_a_future_updated_at_is_quarantined_so_later_corrections_still_apply(tmp_path, conn, policy, baseline):
    load("future_updated_at", conn, tmp_path, policy)
    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"] - {"15"}
    new = quarantined(conn) - baseline["quarantine"]
    reason = "updated_at more than 1d after the load time (ingest.max_future_skew)"
    assert new == {("contacts.csv", 18, reason)}

    correction = tmp_path / "correction"
    correction.mkdir()
    rows = list(csv.DictReader((HOSTILE / "baseline" / "contacts.csv").open(encoding="utf-8", newline="")))
    (row,) = [r for r in rows if r["contact_id"] == "15"]
    row.update(city="Corrected-City", updated_at="2026-11-20T09:00:00Z")
    with (correction / "contacts.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=contract.CONTACTS.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerow(row)
    for spec in (contract.CONSENT_EVENTS, contract.ACTIVITY):
        (correction / spec.name).write_text(",".join(spec.columns) + "\n", encoding="utf-8")
    ingest_export(correction, conn=conn, policy=policy, landing_root=tmp_path / "landing",
                  now=datetime(2026, 11, 20, 10, 0))  # fmt: skip
    assert contact(conn, "15")["city"] == "Corrected-City"

    # the tolerance is governance.yml's, nowhere else: widen it and the same row loads
    lenient = policy.model_copy(update={"ingest": policy.ingest.model_copy(update={"max_future_skew": "30000d"})})
    with connect(tmp_path / "lenient.duckdb") as other:
        load("future_updated_at", other, tmp_path / "lenient", lenient)
        assert "15" in ids(other, "crm_contacts", "contact_id")


# ---- equal_timestamp_duplicates --------------------------------------------------------------


def test_an_equal_timestamp_duplicate_keeps_the_later_line_and_says_so(tmp_path, conn, policy, baseline):
    result = load("equal_timestamp_duplicates", conn, tmp_path, policy)
    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"]
    assert contact(conn, "20")["city"] == "Later-Line-City"
    new = quarantined(conn) - baseline["quarantine"]
    ((file_name, line, reason),) = new
    assert (file_name, line) == ("contacts.csv", 23)
    assert reason == "duplicate contact_id with the same updated_at (the later line in the file wins: line 54 loaded)"
    assert "newer" not in reason
    assert file_result(result).quarantine_reasons["duplicate contact_id with the same updated_at"] == 1


# ---- unknown_column --------------------------------------------------------------------------


def test_an_unknown_column_is_dropped_named_and_never_archived(tmp_path, conn, policy, baseline):
    result = load("unknown_column", conn, tmp_path, policy)

    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"]
    assert file_result(result).columns_dropped == ["ssn"]
    assert result.counts()["files"][0]["columns_dropped"] == ["ssn"]
    archived = tmp_path / "landing" / result.load_id / "contacts.csv"
    with archived.open(encoding="utf-8", newline="") as handle:
        assert next(csv.reader(handle)) == list(contract.CONTACTS.columns)
    everything = b"".join(p.read_bytes() for p in (tmp_path / "landing").rglob("*") if p.is_file())
    assert b"987-65-" not in everything
    assert b"987-65-" not in (tmp_path / "w.duckdb").read_bytes()
    # the archive keeps every row the export had, in the contract's columns
    assert sum(1 for _ in csv.DictReader(archived.open(encoding="utf-8", newline=""))) == 50


def test_the_report_names_the_dropped_column_and_never_its_values(tmp_path, policy):
    from governed_marketing.report import build_report
    from governed_marketing.runs import record_step
    from governed_marketing.settings import Settings

    settings = Settings(home=tmp_path / "gmp", project_root=REPO)
    with connect(settings.warehouse_path) as connection:
        result = ingest_export(HOSTILE / "unknown_column", conn=connection, policy=policy,
                               landing_root=settings.path("landing"), now=LOAD_TIME)  # fmt: skip
        record_step(connection, "hostile-run", "ingest", "crm", result.counts())
    build_report(settings)
    reports = " ".join(p.read_text(encoding="utf-8") for p in (settings.home_dir / "reports").rglob("*.html"))
    assert "columns outside the contract, dropped (contacts.csv)</th><td>ssn</td>" in reports
    assert "987-65-" not in reports


def test_landing_holds_only_contract_columns_for_every_loaded_case(tmp_path, policy):
    for case in ("unterminated_quote", "oversized_field", "control_characters", "unknown_column", "markup_names"):
        with connect(tmp_path / f"{case}.duckdb") as connection:
            result = load(case, connection, tmp_path / case, policy)
        for spec in contract.EXPORT_FILES:
            archived = tmp_path / case / "landing" / result.load_id / spec.name
            with archived.open(encoding="utf-8-sig", newline="") as handle:
                assert [c.strip().lower() for c in next(csv.reader(handle))] == list(spec.columns), (case, spec.name)


# ---- headers_only and a missing directory: fail fast, say so -----------------------------------


def test_an_export_of_headers_only_is_refused_naming_it(tmp_path, conn, policy):
    with pytest.raises(ExportUnreadable) as caught:
        load("headers_only", conn, tmp_path, policy)
    assert str(HOSTILE / "headers_only") in str(caught.value)
    assert "no data rows" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "landing").exists()


def test_a_missing_directory_is_refused_naming_it(tmp_path, conn, policy):
    missing = tmp_path / "no-such-export"
    with pytest.raises(ExportUnreadable, match="no-such-export: CRM export directory not found"):
        ingest_export(missing, conn=conn, policy=policy, landing_root=tmp_path / "landing")


@pytest.mark.parametrize("case", ["missing", "headers_only"])
def test_the_pipeline_step_refuses_before_opening_the_warehouse(tmp_path, monkeypatch, case):
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    reset_settings()
    try:
        source = tmp_path / "missing" if case == "missing" else HOSTILE / case
        with pytest.raises(ExportUnreadable, match=str(source)):
            task_bodies.ingest(str(source), run_id="hostile")
        assert not get_settings().warehouse_path.exists()
    finally:
        reset_settings()


def test_gmp_run_on_a_missing_export_exits_at_once_with_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    env = {"PATH": "/usr/bin:/bin", "GMP_HOME": str(tmp_path / "home"), "HOME": str(tmp_path), "COLUMNS": "300"}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("gmp")), "run", "--crm", str(missing)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: {missing}: CRM export directory not found"
    assert not (tmp_path / "home" / "airflow").exists() and not (tmp_path / "home" / "logs").exists()


# ---- markup_names ----------------------------------------------------------------------------


def test_markup_as_a_name_clears_that_name_and_keeps_the_contact(tmp_path, conn, policy, baseline):
    result = load("markup_names", conn, tmp_path, policy)

    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"]
    assert quarantined(conn) == baseline["quarantine"]
    assert contact(conn, "6")["first_name"] is None and contact(conn, "6")["last_name"] == "Alfaro"
    assert contact(conn, "10")["last_name"] is None and contact(conn, "10")["first_name"] == "Yasmine"
    cleared = file_result(result).values_cleared
    assert cleared == {
        "first_name cleared: markup or other character not used in names": 1,
        "last_name cleared: markup or other character not used in names": 1,
    }
    assert all("<" not in reason and "alert" not in reason for reason in cleared)
    names = conn.execute("select string_agg(concat(first_name, last_name), '') from raw.crm_contacts").fetchall()[0][0]
    assert "<" not in names and ">" not in names


# ---- the name rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("Zoë", "Zoë"),
        ("Zoe\u0308", "Zoë"),  # decomposed: NFC
        ("O'Brien", "O'Brien"),
        ("O\u2019Brien", "O\u2019Brien"),
        ("Jean-Luc", "Jean-Luc"),
        ("Łukasz", "Łukasz"),
        ("  José   María ", "José María"),  # trimmed, inner whitespace collapsed
        ("李小龍", "李小龍"),
        ("ジョン・スミス", "ジョン・スミス"),
        ("Nguyễn Thị", "Nguyễn Thị"),
        ("Col·lell", "Col·lell"),
        ("Mary Jr.", "Mary Jr."),
    ],
)
def test_real_names_are_kept_normalised(raw, kept):
    assert contract.normalize_name(raw) == (kept, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("Ca\x00leb", "control character"),
        ("Ann\u202eeB", "control or invisible formatting character"),  # a bidi override
        ("<b>Ann</b>", "markup or other character not used in names"),
        ("=HYPERLINK(1)", "markup or other character not used in names"),
        ("{{email}}", "markup or other character not used in names"),
        ("Ann2", "markup or other character not used in names"),
        ("- .", "no letter"),
        ("A" * (contract.NAME_MAX_CHARS + 1), f"longer than {contract.NAME_MAX_CHARS} characters"),
    ],
)
def test_a_value_that_is_not_a_name_is_cleared_with_a_reason(raw, reason):
    assert contract.normalize_name(raw) == (None, reason)


def test_names_are_normalised_on_the_way_into_the_warehouse(tmp_path, conn, policy):
    export = tmp_path / "export"
    export.mkdir()
    for spec in contract.EXPORT_FILES:
        (export / spec.name).write_bytes((HOSTILE / "baseline" / spec.name).read_bytes())
    text = (export / "contacts.csv").read_text(encoding="utf-8")
    (export / "contacts.csv").write_text(text.replace(",María Fernanda,", ",  María   Fernanda ,"), encoding="utf-8")
    ingest_export(export, conn=conn, policy=policy, landing_root=tmp_path / "landing", now=LOAD_TIME)
    assert contact(conn, "6")["first_name"] == "María Fernanda"


def test_a_contact_id_with_a_control_character_is_quarantined_but_surrounding_whitespace_is_trimmed(
    tmp_path, conn, policy, baseline
):
    export = tmp_path / "export"
    export.mkdir()
    for spec in contract.EXPORT_FILES:
        (export / spec.name).write_bytes((HOSTILE / "baseline" / spec.name).read_bytes())
    text = (export / "contacts.csv").read_text(encoding="utf-8")
    text = text.replace("\n4,asa.angstrom", "\n4\x01,asa.angstrom").replace("\n5,albert.", "\n\t5 ,albert.")
    (export / "contacts.csv").write_text(text, encoding="utf-8")
    ingest_export(export, conn=conn, policy=policy, landing_root=tmp_path / "landing", now=LOAD_TIME)
    assert ids(conn, "crm_contacts", "contact_id") == baseline["contacts"] - {"4"}
    new = {(f, line, reason) for f, line, reason in quarantined(conn) - baseline["quarantine"] if f == "contacts.csv"}
    assert new == {("contacts.csv", 5, "contact_id has a control character")}


@pytest.mark.parametrize("value", ["soon", "1w", "-1d", ""])
def test_a_malformed_future_skew_in_governance_yml_names_the_key(tmp_path, value):
    import yaml
    from governed_marketing.policy import PolicyError, parse_policy

    raw = yaml.safe_load((REPO / "governance.yml").read_text(encoding="utf-8"))
    raw["ingest"]["max_future_skew"] = value
    (tmp_path / "prompts").symlink_to(REPO / "prompts")
    with pytest.raises(PolicyError, match=r"ingest\.max_future_skew.*not a duration like 30m, 2h or 1d"):
        parse_policy(yaml.safe_dump(raw), path=tmp_path / "governance.yml")


def test_the_future_skew_reads_as_a_duration(policy):
    from datetime import timedelta

    assert policy.ingest.future_skew == timedelta(days=1)
