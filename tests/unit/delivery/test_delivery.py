"""Delivery against a real local SMTP server (aiosmtpd) and the real unsubscribe endpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from urllib.parse import unquote

from fastapi.testclient import TestClient
from governed_marketing.delivery import ledger
from governed_marketing.delivery.mailbox import MAILBOX_DIR, read_mailbox
from governed_marketing.delivery.report import delivery_section
from governed_marketing.delivery.sender import Relay, deliver_campaign
from governed_marketing.delivery.unsubscribe import SPOOL_DIR, apply_pending, create_app
from governed_marketing.settings import get_settings

from tests.support import delivery_world
from tests.support.delivery_world import AS_OF, contact_of, email_of

PROJECT_ROOT = Path(__file__).resolve().parents[3]
MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}@example\.com>$")


def _send(world, campaign_id: str, policy=None, *, run_id: str = "run-1"):
    settings = get_settings()
    pseudonym_key = settings.resolve_pseudonym_key()[0]
    policy = policy or delivery_world.policy_for()
    return deliver_campaign(
        campaign_id,
        conn=world.conn,
        policy=policy,
        relay=Relay("127.0.0.1", world.sink.port, security="none"),
        outbox_root=world.outbox,
        delivery_key=settings.resolve_delivery_key(),
        pseudonym_key=pseudonym_key,
        as_of=AS_OF,
        run_id=run_id,
        apply_unsubscribes=lambda conn: apply_pending(
            conn, world.home / SPOOL_DIR, policy=policy, pseudonym_key=pseudonym_key
        ),
        sleep=lambda seconds: None,
    )


def _links(message) -> tuple[str, str]:
    https, mailto = re.findall(r"<([^>]+)>", message["List-Unsubscribe"])
    return https, mailto


def test_every_message_carries_the_headers_and_parses(world):
    delivery_world.write_outbox(world.outbox, "spring_newsletter", 6, subject="Spring <b>news</b> & more \u00fcber")
    outcome = _send(world, "spring_newsletter")
    assert (outcome.sent, outcome.bounced, outcome.deferred) == (6, 0, 0)
    messages = world.sink.handler.messages()
    assert sorted(m["To"] for m in messages) == sorted(email_of(i) for i in range(6))
    for raw in world.sink.handler.accepted:  # read verbatim by mail providers: never RFC 2047-encoded
        assert b"\r\nList-Unsubscribe: <https://marketing.example.com/unsubscribe/" in raw
        assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw
    assert all(not part.defects for m in messages for part in m.walk())
    for message in messages:
        https, mailto = _links(message)
        assert https.startswith("https://marketing.example.com/unsubscribe/")
        assert mailto.startswith("mailto:unsubscribe@example.com?subject=unsubscribe")
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert MESSAGE_ID.match(message["Message-ID"])
        assert message["From"] == "Example Shop <news@example.com>" and message["Reply-To"] == "service@example.com"
        assert message["Subject"] == "Spring <b>news</b> & more \u00fcber"
        assert message.get_content_type() == "multipart/alternative"
        plain = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "<script>" in plain and "<script>" not in html and "&lt;script&gt;" in html
        assert https in plain and https in html
        # No email, contact id or pseudonym in any URL (the token names a message, not a person).
        urls = unquote(https + mailto)
        i = int(message["To"].split("person")[1].split("@")[0])
        for identifier in (email_of(i), contact_of(i), f"p{contact_of(i)}", "seed.person"):
            assert identifier.lower() not in urls.lower()
    assert len({m["Message-ID"] for m in messages}) == 6
    # A rerun sends nothing and pays nothing twice; the ledger holds no identifier.
    again = _send(world, "spring_newsletter", run_id="run-2")
    assert (again.sent, again.already_done) == (0, 6) and len(world.sink.handler.accepted) == 6
    dump = str(world.conn.execute("select * from ops.delivery_ledger").fetchall())
    assert "seed" not in dump.lower() and "SEEDC" not in dump


def test_unsubscribe_between_publish_and_send_gets_nothing(world):
    delivery_world.write_outbox(world.outbox, "spring_newsletter", 6)
    _send(world, "spring_newsletter")
    by_recipient = {m["To"]: m for m in world.sink.handler.messages()}
    https, _ = _links(by_recipient[email_of(2)])
    _, mailto = _links(by_recipient[email_of(4)])
    token = https.rsplit("/", 1)[1]

    delivery_world.write_outbox(world.outbox, "summer_newsletter", 6)  # published; not sent yet
    policy = delivery_world.policy_for()
    settings = get_settings()
    pseudonym_key = settings.resolve_pseudonym_key()[0]
    app = create_app(
        lambda: settings.home_dir,
        settings.resolve_delivery_key,
        lambda spool: apply_pending(world.conn, spool, policy=policy, pseudonym_key=pseudonym_key),
    )
    client = TestClient(app)

    def state():
        q = "select (select count(*) from raw.crm_dsr_requests), (select count(*) from ops.suppression), "
        return world.conn.execute(q + "(select count(*) from ops.unsubscribes)").fetchall()[0]

    assert client.get(f"/{token}").status_code == 200 and state() == (0, 0, 0)  # a link scanner's GET: nothing
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    assert client.post(f"/{forged}", data={"List-Unsubscribe": "One-Click"}).status_code == 400
    assert state() == (0, 0, 0)
    answer = client.post(f"/{token}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200 and "unsubscribed" in answer.text
    assert email_of(2) not in answer.text
    assert state()[0] == 1 and state()[2] == 1
    after_first = state()
    assert client.post(f"/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200  # replay
    assert state() == after_first
    request = world.conn.execute("select request_type, details from raw.crm_dsr_requests").fetchall()[0]
    assert request[0] == "objection" and "unsubscribe_one_click" in request[1]
    clicked, suppressed = world.conn.execute("select clicked_at, suppressed_at from ops.unsubscribes").fetchall()[0]
    assert suppressed >= clicked

    # The mailto path: a mail to the unsubscribe address, in the mailbox folder the privacy DAG reads.
    mailbox = world.home / MAILBOX_DIR / "new"
    mailbox.mkdir(parents=True)
    subject = unquote(mailto.split("subject=", 1)[1])
    (mailbox / "1.eml").write_bytes(
        f"From: {email_of(4)}\r\nTo: unsubscribe@example.com\r\nSubject: {subject}\r\n\r\nplease\r\n".encode()
    )
    (mailbox / "2.eml").write_bytes(
        b"From: x@y.example\r\nSubject: unsubscribe " + b"a" * 32 + b"." + b"b" * 32 + b"\r\n\r\n"
    )
    counts = read_mailbox(world.home, delivery_key=settings.resolve_delivery_key())
    assert counts == {"mails": 2, "spooled": 1, "ignored": 1} and not list(mailbox.iterdir())

    outcome = _send(world, "summer_newsletter", policy)  # the mailto click is applied before the first chunk
    assert outcome.unsubscribes_applied == 1
    summer = [m["To"] for m in world.sink.handler.messages()[6:]]
    assert sorted(summer) == sorted(email_of(i) for i in (0, 1, 3, 5))
    assert outcome.suppressed_at_send == 2 and outcome.sent == 4
    assert ledger.totals(world.conn)["summer_newsletter"] == {"sent": 4, "suppressed": 2}
    section = delivery_section(world.conn)
    assert section["unsubscribes"] == {"one_click": 1, "mailto": 1}
    assert section["click_to_suppression_seconds"]["n"] == 2
    summer_row = next(c for c in section["campaigns"] if c["campaign_id"] == "summer_newsletter")
    assert (summer_row["sent"], summer_row["suppressed"], summer_row["in_doubt"]) == (4, 2, 0)


def test_a_4xx_is_retried_and_a_5xx_is_not(world):
    delivery_world.write_outbox(world.outbox, "spring_newsletter", 6)
    world.sink.handler.defer_once.add(email_of(1))
    world.sink.handler.reject.add(email_of(3))
    outcome = _send(world, "spring_newsletter")
    assert (outcome.sent, outcome.bounced, outcome.deferred, outcome.retries) == (5, 1, 0, 1)
    attempts = world.sink.handler.rcpt_attempts
    assert attempts[email_of(1)] == 2 and attempts[email_of(3)] == 1
    rows = dict(world.conn.execute("select status, sum(attempts) from ops.delivery_ledger group by 1").fetchall())
    assert rows == {"sent": 6, "bounced": 1}  # five sent (one after two attempts), one bounced
    reply = world.conn.execute("select last_reply from ops.delivery_ledger where status = 'bounced'").fetchall()
    assert reply[0][0].startswith("550") and "@" not in reply[0][0]
    _send(world, "spring_newsletter", run_id="run-2")
    assert attempts[email_of(3)] == 1  # a bounce is final for the campaign


_CHILD = """
import sys
from governed_marketing import warehouse
from governed_marketing.delivery.sender import Relay, deliver_campaign
from governed_marketing.settings import get_settings
from tests.support import delivery_world

settings = get_settings()
conn = warehouse.connect(settings.warehouse_path)
deliver_campaign(
    "spring_newsletter", conn=conn, policy=delivery_world.policy_for(connections=2),
    relay=Relay("127.0.0.1", int(sys.argv[1]), security="none"), outbox_root=settings.home_dir / "outbox",
    delivery_key=settings.resolve_delivery_key(), pseudonym_key=settings.resolve_pseudonym_key()[0],
    as_of=delivery_world.AS_OF, run_id="killed",
)
"""


def test_a_process_killed_mid_send_and_rerun_sends_no_duplicate(world, tmp_path):
    n = 300
    world.conn.execute("delete from raw.crm_consent_events").fetchall()
    world.conn.execute("delete from raw.crm_contacts").fetchall()
    world.conn.execute("delete from marts.campaign_recipients").fetchall()
    delivery_world.seed(world.conn, n, campaigns=("spring_newsletter",))
    delivery_world.write_outbox(world.outbox, "spring_newsletter", n)
    world.conn.close()  # the child is the one writer now
    world.sink.handler.data_delay = 0.01
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(world.sink.port)], env=env, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 60
    while world.sink.handler.count < 40 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    before_rerun = world.sink.handler.count
    assert 0 < before_rerun < n

    from governed_marketing import warehouse

    world.conn = warehouse.connect(get_settings().warehouse_path)
    world.sink.handler.data_delay = 0
    outcome = _send(world, "spring_newsletter", run_id="rerun")
    ids = Counter(message_from_bytes(d, policy=default)["Message-ID"] for d in world.sink.handler.accepted)
    assert ids and max(ids.values()) == 1  # no Message-ID twice
    assert outcome.in_doubt > 0  # rows the kill left `sending` are reported, not resent
    statuses = dict(world.conn.execute("select status, count(*) from ops.delivery_ledger group by 1").fetchall())
    assert statuses.get("sending", 0) == outcome.in_doubt and statuses["sent"] + outcome.in_doubt == n
    assert len(ids) <= n


def test_the_privacy_dag_call_applies_mailto_unsubscribes(world, monkeypatch):
    """`collect_mailto_unsubscribes` (process_privacy_requests' first call): nothing to do without the
    folders; a mail in the mailbox becomes an objection and a suppression through the configured warehouse."""
    from governed_marketing.delivery.mailbox import collect_mailto_unsubscribes

    assert collect_mailto_unsubscribes() == {"mails": 0, "spooled": 0, "ignored": 0, "suppressed": 0}
    delivery_world.write_outbox(world.outbox, "spring_newsletter", 2)
    _send(world, "spring_newsletter")
    _, mailto = _links(world.sink.handler.messages()[0])
    world.conn.close()  # the privacy task opens the warehouse itself
    mailbox = world.home / MAILBOX_DIR
    mailbox.mkdir()
    subject = unquote(mailto.split("subject=", 1)[1])
    (mailbox / "m.eml").write_bytes(f"From: someone@else.example\r\nSubject: {subject}\r\n\r\n".encode())
    counts = collect_mailto_unsubscribes()
    assert counts == {"mails": 1, "spooled": 1, "ignored": 0, "suppressed": 1}
    from governed_marketing import warehouse

    world.conn = warehouse.connect(get_settings().warehouse_path)
    assert world.conn.execute("select source from ops.unsubscribes").fetchall() == [("mailto",)]
