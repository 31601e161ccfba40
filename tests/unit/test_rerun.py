"""What makes `gmp run` rebuild: any input of the models or the content, and nothing else."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from governed_marketing import rerun
from governed_marketing.settings import Settings
from governed_marketing.warehouse import connect as warehouse_connect

from tests.conftest import PROJECT_ROOT

RUNS = {"build_marketing_models": "manual__models", "generate_campaign_content": "manual__content"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what the fingerprint reads from the project (not the code: too big to copy per test)."""
    root = tmp_path / "project"
    for name in ("dbt_project/models", "dbt_project/macros", "prompts", "expectations"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "dbt_project" / "dbt_project.yml", root / "dbt_project" / "dbt_project.yml")
    shutil.copy(PROJECT_ROOT / "governance.yml", root / "governance.yml")
    return root


@pytest.fixture
def settings(project: Path, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", project_root=project)


@pytest.fixture
def conn(settings: Settings):
    settings.home_dir.mkdir(parents=True)
    with warehouse_connect(settings.warehouse_path) as connection:
        yield connection


def _recorded(conn, settings: Settings, as_of: str | None = None) -> str:
    fingerprint = rerun.inputs_fingerprint(conn, settings, as_of=as_of)
    rerun.record_complete_pass(conn, fingerprint, RUNS)
    return fingerprint


def _kept(conn, settings: Settings, as_of: str | None = None) -> dict | None:
    return rerun.kept_pass(conn, rerun.inputs_fingerprint(conn, settings, as_of=as_of))


def test_nothing_changed_keeps_the_last_complete_pass(conn, settings):
    assert _kept(conn, settings) is None  # no complete pass yet
    _recorded(conn, settings)
    assert _kept(conn, settings) == RUNS


@pytest.mark.parametrize(
    "change",
    [
        "policy",
        "model",
        "prompt",
        "privacy request",
        "suppression",
        "new export",
        "as-of given",
        "outbox deleted",
        "settings",
    ],
)
def test_any_input_of_the_models_or_content_makes_a_rebuild(conn, settings, project, change):
    outbox = settings.home_dir / "outbox" / "spring_newsletter" / "newsletter_v1.jsonl"
    outbox.parent.mkdir(parents=True)
    outbox.write_text("{}\n")
    _recorded(conn, settings)
    now = datetime(2026, 12, 1, 12)
    as_of = None
    if change == "policy":
        (project / "governance.yml").write_text((project / "governance.yml").read_text() + "\n# reviewed\n")
    elif change == "model":
        model = next((project / "dbt_project" / "models").rglob("int_campaign_eligibility.sql"))
        model.write_text(model.read_text() + "\n-- an analyst's edit\n")
    elif change == "prompt":
        prompt = next(p for p in (project / "prompts").rglob("*") if p.is_file())
        prompt.write_text(prompt.read_text() + "\n")
    elif change == "privacy request":
        conn.execute(
            "insert into ops.dsr_requests (request_id, request_type, channel, subject_ref, received_at, due_date, "
            "status, updated_at) values ('dsr-9', 'objection', 'cli', 'ref', ?, ?, 'received', ?)",
            [now, now.date(), now],
        )
    elif change == "suppression":
        conn.execute(
            "insert into ops.suppression (subject_hmac, identifier, reason, added_at) values ('h', 'e', 'obj', ?)",
            [now],
        )
    elif change == "new export":
        conn.execute(
            "insert into ops.crm_loads (load_id, export_sha256, loaded_at, files_json) values ('load_2', 's', ?, '[]')",
            [now],
        )
    elif change == "as-of given":
        as_of = "2026-12-01T00:00:00Z"
    elif change == "outbox deleted":
        outbox.unlink()
    elif change == "settings":
        settings = Settings(home=settings.home, project_root=settings.project_root, llm_model="gpt-4.1")
    assert _kept(conn, settings, as_of) is None, f"{change} did not make a rebuild"


def test_a_pass_that_stops_halfway_keeps_nothing(conn, settings):
    _recorded(conn, settings)
    rerun.forget_complete_pass(conn)  # what gmp run does before the models DAG runs
    assert _kept(conn, settings) is None
