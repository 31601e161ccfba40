"""`approval: required`: drafts wait for a human in Airflow's Human-in-the-loop step, then publish or not.

Runs the real generate_campaign_content DAG with dag.test() in a subprocess (its own AIRFLOW_HOME),
with governance.yml switched to `approval: required`; a reviewer thread answers the request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from tests.support.built_warehouse import build_home

pytestmark = pytest.mark.dags

AS_OF = "2026-11-15T12:00:00"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_home(tmp_path_factory.mktemp("approval"), contacts=300, seed=11, as_of=AS_OF)


def _run(built: Path, tmp_path: Path, choice: str) -> tuple[dict, Path]:
    home = tmp_path / "home"
    shutil.copytree(built, home)
    policy = yaml.safe_load((PROJECT_ROOT / "governance.yml").read_text())
    policy["campaigns"]["spring_newsletter"]["approval"] = "required"
    policy["campaigns"]["spring_newsletter"]["prompt"] = str(PROJECT_ROOT / "prompts" / "newsletter_v1.md")
    (tmp_path / "governance.yml").write_text(yaml.safe_dump(policy))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GMP_", "OPENAI_"))}
    env.update(
        GMP_HOME=str(home),
        GMP_POLICY=str(tmp_path / "governance.yml"),
        GMP_PSEUDONYM_KEY=os.environ["GMP_PSEUDONYM_KEY"],
        GMP_LLM_PROVIDER="offline",
        AIRFLOW__COSMOS__ENABLE_TELEMETRY="False",
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.approval_run", choice, AS_OF],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), home


def test_approved_drafts_reach_the_outbox_and_the_reviewer_sees_no_recipient(built, tmp_path):
    result, home = _run(built, tmp_path, "Approve")
    assert result["state"] == "success", result
    assert result["seen"]["options"] == ["Approve", "Reject"]
    body = result["seen"]["body"]
    assert "{{" not in body and "spring_newsletter" in body  # drafts carry no greeting, no template syntax
    outbox = list((home / "outbox").rglob("*.jsonl"))
    assert outbox and outbox[0].read_text().strip()
    emails = [json.loads(line)["email"] for line in outbox[0].read_text().splitlines()]
    assert not any(email in body for email in emails), "the approval request shows a recipient"


def test_rejected_drafts_never_reach_the_outbox(built, tmp_path):
    result, home = _run(built, tmp_path, "Reject")
    assert result["tasks"]["publish[0]"] == "skipped", result
    assert not list((home / "outbox").rglob("*.jsonl"))
