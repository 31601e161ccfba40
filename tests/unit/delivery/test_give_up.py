"""A message the relay keeps answering 4xx is given up `delivery.give_up_deferred_after_hours` after it
was planned: `undeliverable` for the campaign, counted in the report, never tried again. Younger
deferred messages are retried by the next run; one that gets through on its last try is sent."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from governed_marketing.delivery import ledger
from governed_marketing.delivery.report import delivery_section
from governed_marketing.policy import PolicyError, parse_policy
from governed_marketing.privacy.suppression import contact_ref
from governed_marketing.settings import get_settings

from tests.conftest import PROJECT_ROOT
from tests.support import delivery_world
from tests.support.delivery_world import email_of
from tests.unit.delivery.test_delivery import _send

TEXT = (PROJECT_ROOT / "governance.yml").read_text(encoding="utf-8")
KEY_LINE = "  give_up_deferred_after_hours: 72 "


def _policy(*, attempts: int = 1, hours: float = 72):
    """One attempt per run (no same-run retry), so each run is one more try of a deferred message."""
    policy = delivery_world.policy_for()
    retry = policy.delivery.retry.model_copy(update={"attempts": attempts})
    delivery = policy.delivery.model_copy(update={"retry": retry, "give_up_deferred_after_hours": hours})
    return policy.model_copy(update={"delivery": delivery})


def _age_deferred_rows(world, hours: float) -> None:
    """As if the deferred rows had been planned `hours` ago (the ledger's clock is the real one)."""
    world.conn.execute(
        f"update ops.delivery_ledger set planned_at = planned_at - interval '{int(hours)} hours' "
        "where status = 'deferred'"
    ).fetchall()


def _status(world, i: int) -> str:
    ref = contact_ref(get_settings().resolve_pseudonym_key()[0], delivery_world.contact_of(i))
    rows = world.conn.execute("select status from ops.delivery_ledger where recipient_ref = ?", [ref]).fetchall()
    return rows[0][0]


def test_a_deferred_message_is_retried_until_its_age_then_undeliverable(world):
    delivery_world.write_outbox(world.outbox, "spring_newsletter", 4)
    world.sink.handler.defer_always |= {email_of(1), email_of(2)}
    policy = _policy()
    attempts = world.sink.handler.rcpt_attempts

    first = _send(world, "spring_newsletter", policy)
    assert (first.sent, first.deferred, first.undeliverable) == (2, 2, 0)
    assert _status(world, 1) == "deferred"

    young = _send(world, "spring_newsletter", policy, run_id="run-2")  # within 72 h: tried again, still deferred
    assert (young.sent, young.deferred, young.undeliverable, young.already_done) == (0, 2, 0, 2)
    assert attempts[email_of(1)] == 2 and attempts[email_of(2)] == 2

    _age_deferred_rows(world, 73)
    world.sink.handler.defer_always.discard(email_of(2))  # the relay takes this one on its last try
    old = _send(world, "spring_newsletter", policy, run_id="run-3")
    assert (old.sent, old.deferred, old.undeliverable) == (1, 0, 1)
    assert attempts[email_of(1)] == 3 and attempts[email_of(2)] == 3
    assert (_status(world, 1), _status(world, 2)) == ("undeliverable", "sent")
    assert ledger.totals(world.conn)["spring_newsletter"] == {"sent": 3, "undeliverable": 1}
    row = next(c for c in delivery_section(world.conn)["campaigns"] if c["campaign_id"] == "spring_newsletter")
    assert (row["sent"], row["undeliverable"], row["deferred"]) == (3, 1, 0)

    world.sink.handler.defer_always.clear()  # even a relay that would take it now gets no further try
    again = _send(world, "spring_newsletter", policy, run_id="run-4")
    assert (again.sent, again.already_done) == (0, 4) and attempts[email_of(1)] == 3


def test_a_message_deferred_past_its_age_within_one_run_is_given_up_at_once(world):
    """Retries in the same run stop at the age too: the 4xx that finds it too old is the last."""
    delivery_world.write_outbox(world.outbox, "spring_newsletter", 3)
    world.sink.handler.defer_always.add(email_of(0))
    _send(world, "spring_newsletter", _policy())
    _age_deferred_rows(world, 2)
    outcome = _send(world, "spring_newsletter", _policy(attempts=3, hours=1), run_id="run-2")
    assert (outcome.undeliverable, outcome.deferred, outcome.retries) == (1, 0, 0)
    assert world.sink.handler.rcpt_attempts[email_of(0)] == 2


def test_a_deferred_message_no_longer_in_the_outbox_is_given_up_by_age_too(world):
    """A newer outbox file without the person: the old deferred row is not tried, but it does not stay
    deferred for ever."""
    path = delivery_world.write_outbox(world.outbox, "spring_newsletter", 3)
    world.sink.handler.defer_always.add(email_of(1))
    _send(world, "spring_newsletter", _policy())
    newer = path.with_name("newsletter_v2-1.jsonl")
    newer.write_text("".join(line for line in path.read_text().splitlines(keepends=True) if email_of(1) not in line))
    stat = path.stat()
    os.utime(newer, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    _age_deferred_rows(world, 73)
    outcome = _send(world, "spring_newsletter", _policy(), run_id="run-2")
    assert (outcome.messages, outcome.undeliverable, outcome.already_done) == (2, 1, 2)
    assert world.sink.handler.rcpt_attempts[email_of(1)] == 1
    assert _status(world, 1) == "undeliverable"


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        ("  give_up_deferred_after_hours: 0 ", "greater than 0"),
        ("  give_up_deferred_after_hours: soon ", "valid number"),
        ("  give_up_deferred_after_hours: 1000 ", "less than or equal to 720"),
        ("  # no give_up_deferred_after_hours ", "Field required"),
    ],
)
def test_a_bad_or_missing_give_up_age_names_the_key(new, problem):
    assert KEY_LINE in TEXT
    with pytest.raises(PolicyError, match=re.escape("delivery.give_up_deferred_after_hours")) as caught:
        parse_policy(TEXT.replace(KEY_LINE, new, 1), path=Path("governance.yml"))
    assert problem in str(caught.value)
