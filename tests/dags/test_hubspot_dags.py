"""The HubSpot source through the real ingest_crm DAG (dag.test() in a subprocess, as test_ingest_schedule):
the `source` param picks HubSpot, the token comes from the Airflow connection `hubspot_default`, the
pull is loaded, recorded, and the run's report holds no personal data. One DAG run, no dbt build
(the test budget); the upstream erasure and objection are proven at connector level in
tests/unit/crm/test_hubspot.py through the same task body `inform_crm` calls.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from governed_marketing import warehouse

from tests.dags.test_ingest_schedule import run_dag
from tests.support.hubspot_server import TOKEN, HubSpotServer, Portal

pytestmark = pytest.mark.dags

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def test_ingest_crm_pulls_from_hubspot_with_the_airflow_connection(tmp_path):
    portal = Portal()
    for i in range(8):
        email = f"dagperson{i}@hubspot-dag.example"
        portal.add(
            {
                "email": email,
                "firstname": "Ann",
                "lastname": "Quillby",
                "country": "DE",
                "hs_language": "de",
                "date_of_birth": "1985-04-0" + str(i + 1),
            },
            modified=T0 + timedelta(minutes=i),
            contact_id=str(2000 + i),
        )
        portal.set_status(email, "101", "SUBSCRIBED", at=T0, basis="CONSENT_WITH_NOTICE")
    home = tmp_path / "gmp"
    with HubSpotServer(portal) as server:
        env = {
            "AIRFLOW_CONN_HUBSPOT_DEFAULT": json.dumps({"conn_type": "generic", "password": TOKEN}),
            "GMP_HUBSPOT_BASE_URL": server.url,
        }
        ingest = run_dag(home, "ingest_crm", {"source": "hubspot"}, **env)
        assert ingest["state"] == "success" and ingest["tasks"]["load_export"]["state"] == "success"
        assert ingest["asset_events"] == 1
        with warehouse.session(home / "warehouse.duckdb") as conn:
            assert conn.execute("select count(*) from raw.crm_contacts").fetchall() == [(8,)]
            (pulls,) = conn.execute("select mode, counts_json from ops.hubspot_pulls").fetchall()
        assert pulls[0] == "full" and json.loads(pulls[1])["requests"]["made"] == len(server.requests)
    report = (home / "reports" / "report.json").read_text(encoding="utf-8")
    assert "dagperson" not in report and "Quillby" not in report  # no personal data in the report
