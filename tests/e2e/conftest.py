"""Whole `gmp run` passes, through the installed CLI in a subprocess (as a user runs it)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

GMP = Path(sys.executable).with_name("gmp")
TEST_KEY = "e2e-pseudonym-key-fedcba9876543210"


@dataclass
class Run:
    home: Path
    result: subprocess.CompletedProcess

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0

    def outbox_rows(self) -> list[dict]:
        rows = []
        for path in sorted((self.home / "outbox").rglob("*.jsonl")):
            rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        return rows

    def recipients(self, campaign_id: str = "spring_newsletter") -> set[str]:
        return {row["contact_id"] for row in self.outbox_rows() if row["campaign_id"] == campaign_id}


def run_gmp(home: Path, *args: str, extra_env: dict[str, str] | None = None, timeout: int = 1500) -> Run:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "GMP_", "OPENAI_", "PYTEST", "DBT_TARGET"))
    }
    env.update(
        {
            "GMP_HOME": str(home),
            "GMP_PSEUDONYM_KEY": TEST_KEY,
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "COLUMNS": "160",
            **(extra_env or {}),
        }
    )
    result = subprocess.run(
        [str(GMP), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Run(home=home, result=result)


def contact_identifiers(crm_dir: Path) -> dict[str, set[str]]:
    """Every direct identifier in an export: what must never reach a vendor, a log or a report."""
    found: dict[str, set[str]] = {"email": set(), "phone": set(), "name": set(), "notes": set()}
    with (crm_dir / "contacts.csv").open(encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            if (row.get("email") or "").strip():
                found["email"].add(row["email"].strip().lower())
            if (row.get("phone") or "").strip():
                found["phone"].add(row["phone"].strip())
            for key in ("first_name", "last_name"):
                name = (row.get(key) or "").strip()
                if len(name) >= 4:
                    found["name"].add(name)
            if (row.get("notes") or "").strip():
                found["notes"].add(row["notes"].strip())
    return found


@pytest.fixture(scope="session")
def sample_export(tmp_path_factory) -> Path:
    from governed_marketing.sample_data.crm_export import write_sample_export

    out = tmp_path_factory.mktemp("crm") / "export"
    write_sample_export(out, contacts=1500, seed=11)
    return out
