"""`gmp dsr list/resolve` and `gmp purge` as a user runs them: readable at 80 columns and when piped.

Run through typer's CliRunner (not a tty: rich falls back to 80 columns), and again with the
console fixed at 80 columns as in a small terminal. Request ids are never cut; `--json` gives the
same facts to scripts. Resolutions of a rectification in needs_review are applied, told and audited.
"""

from __future__ import annotations

import json

import pytest
from governed_marketing.cli import app
from governed_marketing.privacy import audit, dsr
from governed_marketing.privacy import cli as privacy_cli
from governed_marketing.privacy.process import process_pending
from rich.console import Console
from typer.testing import CliRunner

from tests.unit.privacy.conftest import email_of, identifiers

NOBODY = "nobody.at.all@privacy-test.example"


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(params=["piped", "80 columns"])
def narrow(request, monkeypatch):
    """Piped (CliRunner's stdout is no terminal) or a terminal 80 columns wide."""
    if request.param == "80 columns":
        monkeypatch.setattr(privacy_cli, "console", Console(width=80, force_terminal=True, color_system=None))
    return request.param


@pytest.fixture
def requests(home):
    """Five requests answered or left open: an access, one for nobody we hold, two rectifications, an erasure."""
    with home.connect() as conn:
        ids = {
            "access": dsr.submit(conn, "access", email_of("bob"), policy=home.policy, key=home.key),
            "nobody": dsr.submit(conn, "access", NOBODY, policy=home.policy, key=home.key),
            "review": dsr.submit(conn, "rectification", email_of("bob"), policy=home.policy, key=home.key),
            "review2": dsr.submit(
                conn, "rectification", email_of("carol"), '{"shoe_size": 42}', policy=home.policy, key=home.key
            ),
            "erasure": dsr.submit(conn, "erasure", email_of("alice"), policy=home.policy, key=home.key),
        }
    process_pending(settings=home.settings, policy=home.policy)
    return ids


def test_dsr_list_fits_80_columns_with_whole_ids_and_says_why_a_request_is_open(home, requests, narrow):
    out = _invoke("dsr", "list")
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out
    for request_id in requests.values():
        assert request_id in out, f"{request_id} cut in:\n{out}"
    assert f"{requests['review']}: needs review: no corrected values" in out.replace("\n  ", " ")
    assert "shoe_size" in out  # the second rectification names the field it cannot correct
    assert f"{requests['nobody']}: no data held" in out
    assert "@" not in out


def test_dsr_list_json_gives_every_request_with_its_status_and_note(home, requests):
    document = json.loads(_invoke("dsr", "list", "--json"))
    rows = {r["request_id"]: r for r in document["requests"]}
    assert set(rows) == set(requests.values())
    assert rows[requests["review"]]["status"] == "needs_review"
    assert "no corrected values" in rows[requests["review"]]["note"]
    assert rows[requests["nobody"]]["status"] == "done" and "no data held" in rows[requests["nobody"]]["note"]
    assert rows[requests["erasure"]]["days_left"] is None and rows[requests["review"]]["days_left"] >= 0
    assert "@" not in json.dumps(document)


def test_an_access_request_for_someone_not_held_is_answered_with_a_confirmation(home, requests):
    export = home.path / "exports" / requests["nobody"]
    assert [p.name for p in export.iterdir()] == ["subject.json"]  # no empty CSV files
    document = json.loads((export / "subject.json").read_text(encoding="utf-8"))
    assert document["data_held"] is False
    assert "hold no personal data" in document["answer"] and "Art. 15(1)" in document["answer"]
    assert [r["request_id"] for r in document["requests"]] == [requests["nobody"]]
    held = json.loads((home.path / "exports" / requests["access"] / "subject.json").read_text(encoding="utf-8"))
    assert held["data_held"] is True and len(held["contacts"]) == 2


def test_purge_dry_run_fits_80_columns_and_has_json(home, narrow):
    out = _invoke("purge", "--dry-run")
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out and "inactive_contacts" in out and "would go" in out
    document = json.loads(_invoke("purge", "--dry-run", "--json"))
    assert document["dry_run"] is True
    assert {r["rule"] for r in document["rules"]} >= {"raw_crm", "outbox", "inactive_contacts"}
    assert all(isinstance(r["total"], int) for r in document["rules"])


def _raw_names(home, contact_ids) -> set[tuple[str, str]]:
    with home.connect(read_only=True) as conn:
        return set(
            conn.execute(
                "select contact_id, last_name from raw.crm_contacts where contact_id = any(cast(? as varchar[]))",
                [list(contact_ids)],
            ).fetchall()
        )


def test_resolve_approve_applies_the_corrected_value_and_audits_only_field_names(home, requests):
    review = requests["review"]
    out = _invoke("dsr", "resolve", review, "--approve", "--value", '{"last_name": "Quillfeathering"}')
    assert "approved" in out and "last_name" in out
    assert _raw_names(home, ["c002", "c003"]) == {("c002", "Quillfeathering"), ("c003", "Quillfeathering")}
    with home.connect(read_only=True) as conn:
        request = dsr.get(conn, review)
        entry = conn.execute("select action, counts_json from ops.audit_log order by seq desc limit 1").fetchall()[0]
        assert audit.verify(conn).ok
    assert request.status == "done" and request.outcome["resolution"] == "approved"
    assert request.outcome["review_reason"].startswith("no corrected values")
    assert entry[0] == "dsr:resolve" and "Quillfeathering" not in entry[1] and "last_name" in entry[1]
    assert "approved after review: last_name" in request.note()


def test_resolve_reject_records_the_reason_tells_the_person_and_shows_it(home, requests):
    review = requests["review2"]
    reason = "We hold no shoe size for you, so there is nothing to correct"
    out = _invoke("dsr", "resolve", review, "--reject", "--reason", reason)
    assert "rejected" in out
    answer = json.loads((home.path / "receipts" / f"{review}.json").read_text(encoding="utf-8"))
    assert answer["decision"] == "rejected" and answer["reason"] == reason and "complaint" in answer["your_rights"]
    text = json.dumps(answer).lower()
    assert not [value for value in identifiers("carol") if value.lower() in text]
    listed = json.loads(_invoke("dsr", "list", "--json"))
    row = next(r for r in listed["requests"] if r["request_id"] == review)
    assert row["status"] == "rejected" and reason in row["note"] and row["days_left"] is None
    with home.connect(read_only=True) as conn:
        entry = conn.execute("select action, counts_json from ops.audit_log order by seq desc limit 1").fetchall()[0]
    assert entry[0] == "dsr:resolve" and json.loads(entry[1])["resolution"] == "rejected"
    assert _raw_names(home, ["c004"]) == {("c004", "Nyxberg")}  # nothing changed


@pytest.mark.parametrize(
    ("which", "args", "message"),
    [
        ("review", ["--approve"], "--approve needs --value"),
        ("review", ["--reject"], "needs --reason"),
        ("review", ["--approve", "--value", '{"shoe_size": 1}'], "cannot rectify shoe_size"),
        ("review", ["--reject", "--reason", "write to someone@example.com"], "must not hold an email"),
        ("access", ["--reject", "--reason", "no"], "only a rectification is resolved"),
    ],
)
def test_resolve_refuses_what_it_cannot_do_with_a_clear_message(home, requests, which, args, message):
    result = CliRunner().invoke(app, ["dsr", "resolve", requests[which], *args], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    with home.connect(read_only=True) as conn:
        assert dsr.get(conn, requests[which]).status in ("needs_review", "done")


def test_a_resolved_request_cannot_be_resolved_twice(home, requests):
    _invoke("dsr", "resolve", requests["review"], "--reject", "--reason", "Not verifiable")
    result = CliRunner().invoke(app, ["dsr", "resolve", requests["review"], "--approve", "--value", "{}"])
    assert result.exit_code == 1 and "only a request in needs_review" in " ".join(result.output.split())
