"""The sample CRM export: deterministic, on contract, and holding every case the rules must handle."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from governed_marketing.crm import contract
from governed_marketing.crm.contract import is_valid_email, normalize_email
from governed_marketing.policy import Policy, load_policy
from governed_marketing.sample_data import crm_export
from governed_marketing.sample_data.crm_export import (
    LLM_INSTRUCTION,
    REQUEST_WINDOW_DAYS,
    SAMPLE_AS_OF,
    SAMPLE_EMAIL_DOMAIN,
    SAMPLE_PHONE,
    SampleExportSummary,
    write_sample_export,
)

from tests.support.reference_eligibility import RECIPIENT, RULE_AGE, RULES, evaluate, parse_timestamp

REPO = Path(__file__).resolve().parents[3]
COUNTRIES = {"DE", "FR", "ES", "IT", "NL", "BE", "DK", "PL", "SE", "AT", "IE", "PT"}
LANGUAGES = {"DE": {"de"}, "FR": {"fr"}, "ES": {"es"}, "IT": {"it"}, "NL": {"nl"}, "BE": {"nl", "fr"},
             "DK": {"da"}, "PL": {"pl"}, "SE": {"sv"}, "AT": {"de"}, "IE": {"en"}, "PT": {"pt"}}  # fmt: skip
#: The module export's reference date: its requests straddle SAMPLE_AS_OF (received before and after it).
REFERENCE = datetime(2026, 12, 1, tzinfo=UTC)
SIXTEENTH_BIRTHDAY = SAMPLE_AS_OF.date().replace(year=SAMPLE_AS_OF.year - 16).isoformat()


class Export:
    """A generated export read back with the csv module, as records (lists of strings)."""

    def __init__(self, directory: Path, summary: SampleExportSummary) -> None:
        self.directory = directory
        self.summary = summary
        self.records = {spec.name: read(directory / spec.name) for spec in contract.EXPORT_FILES}

    def rows(self, spec: contract.ExportFile) -> list[dict[str, str]]:
        """The records with the right field count, by column."""
        return [dict(zip(spec.columns, r, strict=True)) for r in self.records[spec.name] if len(r) == len(spec.columns)]

    @property
    def contacts(self) -> list[dict[str, str]]:
        return self.rows(contract.CONTACTS)

    @property
    def events(self) -> list[dict[str, str]]:
        return self.rows(contract.CONSENT_EVENTS)


def read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == list(next(s for s in contract.EXPORT_FILES if s.name == path.name).columns)
        return list(reader)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Export:
    directory = tmp_path_factory.mktemp("sample_crm")
    summary = write_sample_export(directory, contacts=2000, seed=2026, reference_date=REFERENCE.date())
    return Export(directory, summary)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(REPO / "governance.yml")


# ---- determinism and shape -------------------------------------------------------------------


def test_subject_requests_are_dated_before_the_reference_day_so_a_run_that_day_is_on_time(tmp_path, policy):
    """The demo's requests are received in the weeks before it runs: answered that day, none is late."""
    from governed_marketing.privacy.dsr import due_date

    before = datetime.now(UTC).date()
    write_sample_export(tmp_path / "today", contacts=400, seed=9)  # the reference date defaults to today
    after = datetime.now(UTC).date()
    rows = Export(tmp_path / "today", None).rows(contract.DSR_REQUESTS)
    received = [parse_timestamp(r["received_at"]) for r in rows]
    assert received and all(before - timedelta(days=REQUEST_WINDOW_DAYS) <= at.date() <= after for at in received)
    assert all(due_date(at, policy) >= after for at in received)  # answered today: within the deadline
    again = write_sample_export(tmp_path / "a", contacts=400, seed=9, reference_date=date(2027, 3, 10))
    same = write_sample_export(tmp_path / "b", contacts=400, seed=9, reference_date=date(2027, 3, 10))
    assert again.cases == same.cases
    for spec in contract.EXPORT_FILES:
        assert (tmp_path / "a" / spec.name).read_bytes() == (tmp_path / "b" / spec.name).read_bytes(), spec.name
    moved = [parse_timestamp(r["received_at"]) for r in Export(tmp_path / "a", None).rows(contract.DSR_REQUESTS)]
    assert all(datetime(2027, 2, 13, tzinfo=UTC) <= at < datetime(2027, 3, 10, tzinfo=UTC) for at in moved)


def test_the_same_seed_writes_byte_identical_files(tmp_path):
    first = write_sample_export(tmp_path / "a", contacts=500, seed=11)
    second = write_sample_export(tmp_path / "b", contacts=500, seed=11)
    for spec in contract.EXPORT_FILES:
        assert (tmp_path / "a" / spec.name).read_bytes() == (tmp_path / "b" / spec.name).read_bytes(), spec.name
    assert first.rows == second.rows and first.cases == second.cases


@pytest.mark.parametrize("block_lines", [1, 7])
def test_files_are_streamed_in_blocks_that_do_not_change_them(tmp_path, monkeypatch, block_lines):
    write_sample_export(tmp_path / "default", contacts=600, seed=4)
    monkeypatch.setattr(crm_export, "_BLOCK_LINES", block_lines)
    summary = write_sample_export(tmp_path / "small_blocks", contacts=600, seed=4)
    for spec in contract.EXPORT_FILES:
        default = (tmp_path / "default" / spec.name).read_bytes()
        assert (tmp_path / "small_blocks" / spec.name).read_bytes() == default, spec.name
    assert summary.rows == {
        name: len(records) for name, records in Export(tmp_path / "small_blocks", summary).records.items()
    }


def test_another_seed_or_as_of_writes_another_export(tmp_path):
    write_sample_export(tmp_path / "a", contacts=200, seed=1)
    write_sample_export(tmp_path / "b", contacts=200, seed=2)
    write_sample_export(tmp_path / "c", contacts=200, seed=1, as_of=datetime(2027, 1, 1))
    contacts = [(tmp_path / d / "contacts.csv").read_bytes() for d in "abc"]
    assert len(set(contacts)) == 3


def test_timestamps_are_relative_to_as_of(tmp_path):
    as_of = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    write_sample_export(tmp_path, contacts=300, seed=5, as_of=as_of)
    with (tmp_path / "contacts.csv").open(encoding="utf-8", newline="") as handle:
        updated = [parse_timestamp(row["updated_at"]) for row in csv.DictReader(handle) if row.get("updated_at")]
    assert max(u for u in updated if u) <= as_of
    assert min(u for u in updated if u) >= as_of - timedelta(days=2200)


@pytest.mark.parametrize("contacts", [0, 1, 15])
def test_small_exports_are_valid_csv(tmp_path, contacts):
    summary = write_sample_export(tmp_path, contacts=contacts, seed=3)
    assert summary.rows["contacts.csv"] == contacts
    assert len(read(tmp_path / "contacts.csv")) == contacts


def test_files_are_utf8_csv_with_lf_line_ends_and_the_contract_header(export):
    for spec in contract.EXPORT_FILES:
        data = (export.directory / spec.name).read_bytes()
        assert data.decode("utf-8").splitlines()[0] == ",".join(spec.columns)
        assert b"\r\n" not in data


def test_the_summary_counts_the_rows_written_and_holds_no_personal_data(export):
    summary = export.summary
    assert summary.rows == {name: len(records) for name, records in export.records.items()}
    assert summary.as_of == SAMPLE_AS_OF
    text = json.dumps(summary.counts())
    assert "@" not in text and not SAMPLE_PHONE.search(text)


# ---- the cases real CRMs have ----------------------------------------------------------------


def test_most_contacts_consent_to_both_purposes_recently(export):
    latest_grant: dict[tuple[str, str], datetime] = {}
    for e in export.events:
        at = parse_timestamp(e["occurred_at"])
        if e["action"].strip().lower() == "grant" and at:
            key = (e["contact_id"], e["purpose"].strip().lower())
            latest_grant[key] = max(at, latest_grant.get(key, at))
    recent = SAMPLE_AS_OF - timedelta(days=730)
    both = {c for c, p in latest_grant if p == "email_marketing" and latest_grant[(c, p)] >= recent} & {
        c for c, p in latest_grant if p == "ai_personalization" and latest_grant[(c, p)] >= recent
    }
    assert len(both) > 0.75 * len(export.contacts)
    assert {e["purpose"].strip().lower() for e in export.events} >= {
        "email_marketing",
        "ai_personalization",
        "sms_marketing",
    }


def test_consent_histories_hold_withdrawals_regrants_ties_and_stale_grants(export):
    by_key: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    for e in export.events:
        at = parse_timestamp(e["occurred_at"])
        by_key[(e["contact_id"], e["purpose"].strip().lower())].append((at, e["action"].strip().lower()))
    limit = SAMPLE_AS_OF - timedelta(days=730)
    withdrawn = regranted = same_instant = stale = at_limit = past_limit = future = 0
    for history in by_key.values():
        history.sort()
        actions = [a for _, a in history]
        withdrawn += "withdraw" in actions
        regranted += any(a == "withdraw" and "grant" in actions[i + 1 :] for i, a in enumerate(actions))
        same_instant += any(
            t == u and {a, b} == {"grant", "withdraw"} for (t, a), (u, b) in zip(history, history[1:], strict=False)
        )
        grants = [t for t, a in history if a == "grant"]
        stale += bool(grants) and max(grants) < limit
        at_limit += limit in grants
        past_limit += (limit - timedelta(seconds=1)) in grants
        future += any(t > SAMPLE_AS_OF for t, _ in history)
    assert min(withdrawn, regranted, same_instant, stale, at_limit, past_limit, future) >= 1
    assert withdrawn < 0.2 * len(by_key)


def test_events_are_duplicated_and_out_of_order(export):
    ids = Counter(e["event_id"] for e in export.events)
    duplicated = [event_id for event_id, n in ids.items() if n > 1]
    assert duplicated and len(duplicated) < 0.05 * len(ids)
    seen: dict[str, datetime] = {}
    backwards = 0
    for e in export.events:
        at = parse_timestamp(e["occurred_at"])
        backwards += e["contact_id"] in seen and at < seen[e["contact_id"]]
        seen[e["contact_id"]] = at
    assert backwards > 0
    assert any(e["action"] != e["action"].strip().lower() for e in export.events)
    assert any(e["action"].strip().lower() not in ("grant", "withdraw") for e in export.events)


def test_ages_cover_minors_the_be_dk_limit_a_birthday_on_as_of_and_unknown(export):
    today = SAMPLE_AS_OF.date()

    def age(born: str) -> int:
        b = date.fromisoformat(born)
        return today.year - b.year - ((today.month, today.day) < (b.month, b.day))

    known = [(age(c["birth_date"]), c["country"].strip().upper()) for c in export.contacts if _is_date(c["birth_date"])]
    assert any(years < 16 and country not in ("BE", "DK") for years, country in known)
    assert any(13 <= years <= 15 and country in ("BE", "DK") for years, country in known)
    assert any(years < 13 and country in ("BE", "DK") for years, country in known)
    assert any(c["birth_date"] == SIXTEENTH_BIRTHDAY for c in export.contacts)
    missing = sum(1 for c in export.contacts if not c["birth_date"].strip())
    assert 0.03 * len(export.contacts) < missing < 0.2 * len(export.contacts)


def _is_date(text: str) -> bool:
    try:
        return len(text) == 10 and bool(date.fromisoformat(text))
    except ValueError:
        return False


def test_duplicate_emails_differ_only_in_case_and_surrounding_spaces(export):
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for c in export.contacts:
        if c["contact_id"].strip() and is_valid_email(c["email"]):
            groups[normalize_email(c["email"])].append(c)
    shared = [g for g in groups.values() if len({c["contact_id"] for c in g}) > 1]
    assert shared
    assert any(len({c["email"] for c in g}) > 1 and len({c["updated_at"] for c in g}) > 1 for g in shared)
    ties = [g for g in shared if len({parse_timestamp(c["updated_at"]) for c in g}) < len(g)]
    assert ties, "no duplicate email whose rows share the updated_at instant"
    assert any(c["email"] != c["email"].strip() for c in export.contacts)


def test_malformed_rows_are_present(export):
    contacts = export.records["contacts.csv"]
    assert any(len(r) < len(contract.CONTACTS.columns) for r in contacts)
    rows = export.contacts
    assert any(not c["contact_id"].strip() for c in rows)
    emails = {c["email"] for c in rows}
    assert {"not-an-email", "a@b"} <= emails
    assert any(c["birth_date"] == "31/02/1990" for c in rows)
    ids = Counter(c["contact_id"] for c in rows if c["contact_id"].strip())
    assert any(n > 1 for n in ids.values()), "no contact_id repeated on two lines"
    bad = len(contacts) - sum(1 for c in rows if c["contact_id"].strip() and is_valid_email(c["email"]))
    assert bad < 0.05 * len(contacts)


def test_names_countries_and_languages_look_european_and_unicode(export):
    rows = export.contacts
    names = {c["first_name"] for c in rows} | {c["last_name"] for c in rows}
    assert {"Zoë", "Łukasz", "Søren", "José", "Ольга", "王"} <= names
    countries = Counter(c["country"].strip().upper() for c in rows)
    assert set(countries) == COUNTRIES
    consistent = sum(1 for c in rows if c["language"] in LANGUAGES[c["country"].strip().upper()])
    assert consistent > 0.9 * len(rows)
    assert {c["lifecycle_stage"] for c in rows} == set(contract.LIFECYCLE_STAGES)
    interests = {i for c in rows for i in c["interests"].split(";") if i}
    assert 5 <= len(interests) <= 15 and all(i == i.strip().lower() for i in interests)
    assert any(";" in c["interests"] for c in rows)


def test_every_email_and_phone_number_is_recognizable(export):
    rows = export.contacts
    valid = [normalize_email(c["email"]) for c in rows if is_valid_email(c["email"])]
    assert valid and all(email.endswith("@" + SAMPLE_EMAIL_DOMAIN) for email in valid)
    phones = [c["phone"] for c in rows if c["phone"]]
    assert phones and all(SAMPLE_PHONE.fullmatch(p) for p in phones)
    assert len({p[:4] for p in phones}) > 3, "phone numbers should come in several formats"
    requests = export.rows(contract.DSR_REQUESTS)
    assert all(normalize_email(r["email"]).endswith("@" + SAMPLE_EMAIL_DOMAIN) for r in requests)


def test_notes_hold_phone_numbers_emails_and_instructions_to_an_llm(export):
    notes = [c["notes"] for c in export.contacts if c["notes"]]
    assert any(SAMPLE_PHONE.search(n) for n in notes)
    assert any(LLM_INSTRUCTION in n for n in notes)
    assert any("@" + SAMPLE_EMAIL_DOMAIN in n for n in notes)
    assert any("\n" in n for n in notes)
    assert sum(LLM_INSTRUCTION in n for n in notes) < 0.02 * len(export.contacts)


def test_activity_has_purchases_with_amounts_and_engagement(export):
    rows = export.rows(contract.ACTIVITY)
    assert {r["event_type"] for r in rows} == set(contract.ACTIVITY_TYPES)
    purchases = [r for r in rows if r["event_type"] == "purchase"]
    assert all(r["product_category"] and float(r["amount"]) > 0 for r in purchases)
    assert all(not r["amount"] for r in rows if r["event_type"] != "purchase")
    assert all(parse_timestamp(r["occurred_at"]) <= SAMPLE_AS_OF for r in rows)


def test_subject_requests_cover_the_suppressing_types_and_messy_emails(export):
    requests = export.rows(contract.DSR_REQUESTS)
    assert {"erasure", "objection", "restriction", "access"} <= {r["request_type"] for r in requests}
    assert all(isinstance(json.loads(r["details"]), dict) for r in requests)
    received = [parse_timestamp(r["received_at"]) for r in requests]
    assert all(REFERENCE - timedelta(days=REQUEST_WINDOW_DAYS) <= at < REFERENCE for at in received)
    raw_emails = {c["email"] for c in export.contacts}
    normalized = {normalize_email(e) for e in raw_emails}
    assert any(r["email"] not in raw_emails and normalize_email(r["email"]) in normalized for r in requests)
    assert any("lifted_at" in json.loads(r["details"]) for r in requests)


# ---- against the reference rules -------------------------------------------------------------


def test_the_reference_finds_recipients_among_the_valid_contacts_and_excludes_by_every_rule(export, policy):
    evaluation = evaluate(export.directory, policy, "spring_newsletter", SAMPLE_AS_OF)
    valid_contacts = sum(1 for d in evaluation.decisions.values() if d != RULES[0])
    assert 0 < len(evaluation.recipients) < valid_contacts
    assert 0.6 * valid_contacts < len(evaluation.recipients) < 0.9 * valid_contacts
    assert all(n > 0 for n in evaluation.excluded_by_reason().values())


def test_planned_edges_land_on_the_right_side_of_the_rules(export, policy):
    decisions = evaluate(export.directory, policy, "spring_newsletter", SAMPLE_AS_OF).decisions
    on_birthday = [c["contact_id"] for c in export.contacts if c["birth_date"] == SIXTEENTH_BIRTHDAY]
    assert all(decisions.get(i) != RULE_AGE for i in on_birthday)
    assert any(decisions.get(i) == RECIPIENT for i in on_birthday)
    limit = SAMPLE_AS_OF - timedelta(days=730)
    at_limit = {e["contact_id"] for e in export.events if parse_timestamp(e["occurred_at"]) == limit}
    assert any(decisions.get(i) == RECIPIENT for i in at_limit)


# ---- fast paths that must not change the files -----------------------------------------------


@pytest.fixture
def bare_generator(monkeypatch) -> crm_export._Generator:
    """A generator without its Faker name pools (the draws below do not use them)."""
    monkeypatch.setattr(crm_export._Generator, "_name_pools", staticmethod(lambda seed: {}))
    return crm_export._Generator(seed=7, as_of=SAMPLE_AS_OF, max_age_days=730)


def test_the_draws_take_the_random_numbers_random_random_takes(bare_generator):
    fast, reference = bare_generator, random.Random(7)
    for n in (1, 2, 3, 5, 7, 8, 10, 150, 1000, 86_401, 190_000_001):
        assert [fast.below(n) for _ in range(300)] == [reference.randrange(n) for _ in range(300)], n
    sources = ("signup_form", "checkout", "preference_center", "call_center", "crm_import")
    assert [fast.choice(sources) for _ in range(300)] == [reference.choice(sources) for _ in range(300)]
    low = 1_700_000_000
    for span in (0, 1, 59, 3_600, 190_080_000):
        drawn = [fast.between(low, low + span) for _ in range(200)]
        assert drawn == [low + reference.randint(0, span) if span else low for _ in range(200)], span
    assert fast.between(low, low - 5) == low
    weights = {"a": 5, "b": 0, "c": 990, "d": 3, "e": 2}
    cumulative = list(itertools.accumulate(weights.values()))
    picked = [fast.pick(crm_export._Weighted.of(weights)) for _ in range(3000)]
    assert picked == [reference.choices(list(weights), cum_weights=cumulative)[0] for _ in range(3000)]
    assert fast.rng.random() == reference.random()  # and both streams are at the same place


_INSTANTS = [
    datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 0, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, 1, tzinfo=UTC),
    datetime(2026, 3, 31, 22, 30, tzinfo=UTC),  # +02:00 moves it into April
    datetime(2026, 3, 31, 23, 30, tzinfo=UTC),
    datetime(2026, 10, 31, 23, 30, tzinfo=UTC),  # +02:00 moves it into November
    datetime(2026, 11, 15, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC),  # +01:00 moves it into the next year
    *(SAMPLE_AS_OF - timedelta(seconds=s) for s in random.Random(1).sample(range(3000 * 86_400), 300)),
]


@pytest.mark.parametrize("microsecond", [0, 123_456])
def test_the_clock_writes_instants_as_iso_does(microsecond):
    # the style a roll of random() picks: < 0.03 zone-less, < 0.06 with an offset, else 'Z'
    for roll, style in ((0.0, "naive"), (0.0299, "naive"), (0.03, "offset"), (0.0599, "offset"), (0.06, "Z")):
        clock = crm_export._Clock(microsecond, lambda roll=roll: roll)
        for instant in _INSTANTS:
            moment = instant.replace(microsecond=microsecond)
            seconds = crm_export._seconds(moment)
            assert clock.stamp(seconds) == crm_export._iso(moment, style), (moment, style)
            assert clock.z(seconds) == crm_export._iso(moment), moment


def test_records_are_written_as_the_csv_module_writes_them():
    records = [
        ["contact_id", "email"],
        ["1", "a@example-crm.test", "", "", ""],
        ["", ""],
        [""],
        ["only"],
        ["Lyon, France", "x"],
        ['Asked about the "loyalty" programme', "y"],
        ["Called twice.\nAsked for catalogue", "z"],
        ["carriage\rreturn", "z"],
        [" lead", "trail ", "\ttab", "   "],
        ["Zoë", "王", "Ольга", "Ó Briain"],
        ["{}", '{"lifted_at": "2026-11-01T10:00:00Z"}', ";"],
    ]
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\n").writerows(records)
    for block_lines in (1, 3, 4096):
        handle = io.StringIO()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(crm_export, "_BLOCK_LINES", block_lines)
            out = crm_export._CsvFile(handle, records[0])
            for record in records[1:]:
                out.writerow(record)
            out.flush()
        assert handle.getvalue() == expected.getvalue(), block_lines
        assert out.records == len(records) - 1
