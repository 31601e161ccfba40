"""A right never waits for the clock: requests received today are answered by a back-dated pass.

The requests go in through the CLI's library path (`dsr.submit`, received now); the pass runs with
the sample's as-of time, weeks earlier. Eligibility is reproducible at that as-of, but the erasure
and the access request are answered all the same, and `gmp dsr process` says so.
"""

from __future__ import annotations

import json

from governed_marketing.cli import app
from governed_marketing.privacy import dsr
from governed_marketing.privacy.process import process_pending
from typer.testing import CliRunner

from tests.unit.privacy.conftest import AS_OF, PEOPLE, email_of


def _files_under(path) -> bytes:
    return b"\n".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def test_requests_received_after_the_as_of_are_answered_by_a_back_dated_pass(home):
    with home.connect() as conn:
        erasure_id = dsr.submit(conn, "erasure", email_of("alice"), policy=home.policy, key=home.key)
        access_id = dsr.submit(conn, "access", email_of("bob"), policy=home.policy, key=home.key)
        received = dsr.get(conn, erasure_id).received_at
    assert received > AS_OF  # received today, after the pass's as-of time

    result = process_pending(as_of=AS_OF, settings=home.settings, policy=home.policy)

    assert result["erasure"] == [erasure_id] and result["access"] == [access_id]
    assert result["answered"] == 2 and result["left_open"] == []
    with home.connect(read_only=True) as conn:
        assert dsr.get(conn, erasure_id).status == "done" and dsr.get(conn, access_id).status == "done"
        left = {r[0] for r in conn.execute("select contact_id from raw.crm_contacts").fetchall()}
    assert left == {"c002", "c003", "c004"}  # Alice's row is gone from the warehouse
    alice = email_of("alice").encode()
    assert alice not in _files_under(home.path / "outbox").lower()
    assert alice not in _files_under(home.path / "landing").lower()
    assert PEOPLE["alice"]["phone"].encode() not in _files_under(home.path / "landing")
    document = json.loads((home.path / "exports" / access_id / "subject.json").read_text(encoding="utf-8"))
    assert {row["contact_id"] for row in document["contacts"]} == {"c002", "c003"}


def test_dsr_process_says_how_many_it_answered_and_why_any_is_left_open(home):
    with home.connect() as conn:
        access_id = dsr.submit(conn, "access", email_of("carol"), policy=home.policy, key=home.key)
        review_id = dsr.submit(conn, "rectification", email_of("bob"), policy=home.policy, key=home.key)

    result = CliRunner().invoke(app, ["dsr", "process", "--as-of", AS_OF.isoformat()], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "Answered 1 request(s); 1 left open" in result.output
    assert access_id in result.output
    line = next(line for line in result.output.splitlines() if review_id in line)
    assert "needs review" in line and "no corrected values" in line
    assert "@" not in result.output


def test_rectifications_of_a_pass_apply_together_and_a_person_corrected_twice_keeps_the_later_value(home):
    from governed_marketing.privacy.rectification import RectificationError, rectify_many

    with home.connect() as conn:
        outcomes = rectify_many(
            conn,
            [
                ("r1", email_of("alice"), '{"last_name": "Wexford-Neu", "city": "Hamburg"}'),
                ("r2", email_of("bob"), '{"last_name": "First"}'),
                ("r3", email_of("carol"), '{"birth_date": "1991-02-03", "city": ""}'),
                ("r4", email_of("bob"), '{"last_name": "Second"}'),
                ("r5", email_of("carol"), '{"shoe_size": "42"}'),
            ],
        )
        rows = {
            r[0]: r[1:]
            for r in conn.execute("select contact_id, last_name, city, birth_date from raw.crm_contacts").fetchall()
        }
    assert (outcomes["r1"].contact_rows, outcomes["r1"].fields) == (1, ["city", "last_name"])
    assert outcomes["r4"].contact_rows == 2 and isinstance(outcomes["r5"], RectificationError)
    assert rows["c001"][:2] == ("Wexford-Neu", "Hamburg")
    assert rows["c002"][0] == rows["c003"][0] == "Second"  # in the order received: the later request wins
    assert rows["c004"][1] is None and str(rows["c004"][2]) == "1991-02-03"


def test_the_pass_records_each_phase_once_and_its_laps_add_up_to_no_more_than_the_pass(home, monkeypatch):
    """The step record says where a pass's time went: the erasure's own phases sit beside the pass's,
    and none is counted twice (the laps, summed, fit inside the pass). The phase clock reads a
    counter here, not the wall: one tick a reading, so the check holds whatever the machine's load."""
    import itertools
    import types

    from governed_marketing.privacy import erasure

    ticks = itertools.count()
    monkeypatch.setattr(erasure, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    with home.connect() as conn:
        dsr.submit(conn, "erasure", email_of("alice"), policy=home.policy, key=home.key)
        dsr.submit(conn, "access", email_of("bob"), policy=home.policy, key=home.key)
    timings: dict[str, float] = {}

    started = next(ticks)
    process_pending(as_of=AS_OF, settings=home.settings, policy=home.policy, timings=timings)
    elapsed = next(ticks) - started

    assert {"dsr_access_exports", "identity", "verify_tables", "receipts", "erasure_statuses_audit"} <= set(timings)
    assert all(seconds >= 0 for seconds in timings.values())
    assert sum(timings.values()) <= elapsed
