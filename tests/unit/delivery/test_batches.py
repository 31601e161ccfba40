"""The sender reads the outbox a batch at a time: across batch boundaries nothing is sent twice or
skipped, and the last-moment check runs per batch, so an objection recorded while earlier batches
were sending stops the later ones (not only the unsubscribe spool, which is applied per chunk)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from email import message_from_bytes
from email.policy import default

import pytest
from governed_marketing.delivery import ledger, sender
from governed_marketing.delivery.sender import Relay, deliver_campaign, iter_outbox
from governed_marketing.settings import get_settings

from tests.support import delivery_world
from tests.support.delivery_world import AS_OF, email_of


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 1 per connection and batches of 2 chunks: with 2 connections, 4 rows a batch."""
    monkeypatch.setattr(sender, "CHUNK_PER_CONNECTION", 1)
    monkeypatch.setattr(sender, "BATCH_CHUNKS", 2)


def _send(world, *, run_id: str, on_chunk=lambda conn: ()):
    settings = get_settings()
    return deliver_campaign(
        "spring_newsletter",
        conn=world.conn,
        policy=delivery_world.policy_for(),
        relay=Relay("127.0.0.1", world.sink.port, security="none"),
        outbox_root=world.outbox,
        delivery_key=settings.resolve_delivery_key(),
        pseudonym_key=settings.resolve_pseudonym_key()[0],
        as_of=AS_OF,
        run_id=run_id,
        apply_unsubscribes=on_chunk,
        sleep=lambda seconds: None,
    )


def _reseed(world, n: int) -> None:
    for table in ("raw.crm_consent_events", "raw.crm_contacts", "marts.campaign_recipients"):
        world.conn.execute(f"delete from {table}").fetchall()
    delivery_world.seed(world.conn, n, campaigns=("spring_newsletter",))


def test_batches_send_each_message_once_with_retries_bounces_and_a_duplicate_row(world, small_batches):
    _reseed(world, 9)
    path = delivery_world.write_outbox(world.outbox, "spring_newsletter", 9)
    with path.open("a", encoding="utf-8") as handle:  # the same person again, in the last batch
        handle.write(path.read_text(encoding="utf-8").splitlines()[2] + "\n")
    assert [len(b) for b in iter_outbox(path, 4)] == [4, 4, 2]
    world.sink.handler.defer_once |= {email_of(1), email_of(6)}
    world.sink.handler.reject.add(email_of(5))

    outcome = _send(world, run_id="run-1")
    assert (outcome.messages, outcome.planned, outcome.already_done) == (10, 9, 1)
    assert (outcome.sent, outcome.bounced, outcome.deferred, outcome.retries) == (8, 1, 0, 2)
    ids = Counter(message_from_bytes(d, policy=default)["Message-ID"] for d in world.sink.handler.accepted)
    assert len(ids) == 8 and max(ids.values()) == 1
    assert ledger.totals(world.conn)["spring_newsletter"] == {"sent": 8, "bounced": 1}

    again = _send(world, run_id="run-2")
    assert (again.sent, again.already_done, again.planned) == (0, 10, 0) and len(world.sink.handler.accepted) == 8


def test_an_objection_recorded_while_earlier_batches_send_stops_the_later_ones(world, small_batches):
    """Recorded straight in raw.crm_dsr_requests (as `gmp dsr submit` or an ingest would), not spooled:
    only the per-batch re-check of consent and requests can see it."""
    _reseed(world, 12)
    delivery_world.write_outbox(world.outbox, "spring_newsletter", 12)
    calls: dict[str, bool] = {}

    def object_after_first_batch(conn):
        if world.sink.handler.count == 4 and not calls:  # the first batch has been sent
            conn.execute(
                "insert into raw.crm_dsr_requests values ('R-late', ?, 'objection', ?, ?, 'gmp_cli', 'test')",
                [email_of(9), json.dumps({}), datetime(2026, 12, 1, 9, 30)],
            ).fetchall()
            calls["done"] = True
        return ()

    outcome = _send(world, run_id="run-1", on_chunk=object_after_first_batch)
    assert calls.get("done"), "the objection was recorded between batches"
    sent_to = {m["To"] for m in world.sink.handler.messages()}
    assert email_of(9) not in sent_to and len(sent_to) == 11
    assert (outcome.sent, outcome.suppressed_at_send) == (11, 1)


def test_an_outbox_line_with_an_address_the_contract_refuses_stops_before_its_batch_is_marked(world):
    """A hand-edited outbox (a non-ASCII address cannot be rendered): the error names the line, not the
    address, and comes before the batch holding it is planned or marked `sending` (none left in doubt)."""
    path = delivery_world.write_outbox(world.outbox, "spring_newsletter", 3)
    lines = path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[1])
    row["email"] = "jörg@exämple.test"
    lines[1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"line 2: the email is not an address") as refused:
        _send(world, run_id="run-1")

    assert "jörg" not in str(refused.value)
    assert world.sink.handler.accepted == []
    marked = world.conn.execute("select count(*) from ops.delivery_ledger where status = 'sending'").fetchone()
    assert marked == (0,)
