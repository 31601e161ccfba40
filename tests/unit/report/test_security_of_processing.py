"""The report says which stores are encrypted at rest and carries the audit chain's head."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.fernet import Fernet
from governed_marketing.privacy import audit
from governed_marketing.report import build_report
from governed_marketing.settings import Settings
from governed_marketing.warehouse import connect
from pydantic import SecretStr

REPO = Path(__file__).resolve().parents[3]


def _build(home: Path, **fields) -> dict:
    settings = Settings(home=home, project_root=REPO, **fields)
    conn = connect(settings.warehouse_path)
    try:
        audit.record(conn, actor="gmp-cli", action="ingest", purpose="crm_ingest", counts={"rows": 3}, home=home)
        audit.record(conn, actor="gmp-cli", action="purge", purpose="storage", counts={"rows": 1}, home=home)
    finally:
        conn.close()
    html = build_report(settings).read_text(encoding="utf-8")
    assert "Security of processing" in html
    return json.loads((home / "reports" / "report.json").read_text(encoding="utf-8"))


def test_the_report_says_which_stores_are_encrypted_and_holds_the_audit_head(tmp_path):
    report = _build(tmp_path / "clear")
    stores = {s["store"].split(" (")[0]: s["encrypted_at_rest"] for s in report["security_of_processing"]["stores"]}
    assert stores["warehouse"] is False and stores["access and portability exports"] is False
    assert report["security_of_processing"]["gmp_home_mode"] == "0700"
    assert report["audit_head"]["seq"] == 2 and report["audit_head"]["warehouse"] == "warehouse.duckdb"
    assert report["audit_head"] == audit.latest_recorded_head(tmp_path / "clear")

    encrypted = _build(tmp_path / "enc", export_encryption_key=SecretStr(Fernet.generate_key().decode()))
    exports = [s for s in encrypted["security_of_processing"]["stores"] if s["store"].startswith("access")]
    assert exports[0]["encrypted_at_rest"] is True and "GMP_EXPORT_ENCRYPTION_KEY" in exports[0]["note"]
