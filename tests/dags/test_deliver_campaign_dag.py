"""The real deliver_campaign DAG (dag.test() in a subprocess, as test_ingest_schedule) through Airflow's
`smtp_default` connection to a local aiosmtpd server: every message arrives with one-click unsubscribe,
a rerun sends nothing twice, and the run's report counts without naming anyone."""

from __future__ import annotations

import json

import pytest
from governed_marketing import warehouse

from tests.dags.test_ingest_schedule import run_dag, run_report
from tests.support import delivery_world
from tests.support.smtp_sink import SinkHandler, SmtpSink

pytestmark = pytest.mark.dags

RECIPIENTS = 5


def test_deliver_campaign_sends_the_outbox_through_the_airflow_connection_at_most_once(tmp_path):
    home = tmp_path / "gmp"
    home.mkdir(mode=0o700)
    with warehouse.session(home / "warehouse.duckdb") as conn:
        delivery_world.seed(conn, RECIPIENTS, campaigns=("spring_newsletter",))
    delivery_world.write_outbox(home / "outbox", "spring_newsletter", RECIPIENTS)
    with SmtpSink(SinkHandler()) as sink:
        env = {
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {"conn_type": "smtp", "host": "127.0.0.1", "port": sink.port, "extra": {"security": "none"}}
            ),
            "GMP_DELIVERY_KEY": "dag-test-delivery-key-0123456789abcdef",
        }
        first = run_dag(home, "deliver_campaign", {"as_of": delivery_world.AS_OF.isoformat()}, **env)
        again = run_dag(home, "deliver_campaign", {"as_of": delivery_world.AS_OF.isoformat()}, **env)

    assert first["state"] == "success" and again["state"] == "success", (first, again)
    messages = sink.handler.messages()
    assert len(messages) == RECIPIENTS, "the rerun sent a message twice, or one is missing"
    assert sorted(m["To"] for m in messages) == sorted(delivery_world.email_of(i) for i in range(RECIPIENTS))
    assert len({m["Message-ID"] for m in messages}) == RECIPIENTS
    for message in messages:
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "https://marketing.example.com/unsubscribe/" in message["List-Unsubscribe"]
        assert "recipients.example" not in message["List-Unsubscribe"]  # a token, never the address
    with warehouse.session(home / "warehouse.duckdb") as conn:
        statuses = conn.execute("select status, count(*) from ops.delivery_ledger group by status").fetchall()
    assert statuses == [("sent", RECIPIENTS)]
    report = run_report(home, "deliver_campaign", first["run_id"]).read_text(encoding="utf-8")
    assert "recipients.example" not in report and "Seedname" not in report
    delivered = json.loads(report)["delivery"]["campaigns"]
    assert [(c["campaign_id"], c["sent"]) for c in delivered] == [("spring_newsletter", RECIPIENTS)]
