"""An independent reference for DESIGN.md's eligibility rules, in plain Python over the export's CSVs.

The pipeline decides who receives a campaign in dbt SQL, after the ingest; this module decides it
again from the four CSV files alone, using neither, so tests can hold the two against each other on
the same export. It follows "Eligibility (normative)" rule by rule. Where the rules leave a choice
open, the choice is stated at the code that makes it:

- Rule 1 checks exactly: the field count, contact_id non-blank after trim, email valid after trim +
  lower-case, birth_date blank or a real YYYY-MM-DD date, created_at and updated_at parseable ISO 8601.
  Records whose fields are all blank are skipped, not counted. Country, language, lifecycle_stage
  and the rest are not checked.
- Several valid lines with one contact_id: the latest updated_at is the contact; on a tie, the later
  line in the file.
- Consent events: a line counts only with the right field count, a non-blank event_id and contact_id,
  an action of grant|withdraw (trimmed, lower-cased) and a parseable occurred_at. Of lines sharing an
  event_id, the first such line counts.
- DSR requests: a line counts only with the right field count and a parseable received_at; its
  request_type is trimmed and lower-cased. A request counts from its receipt whatever the as-of (a
  right never waits for the clock). A restriction is lifted only by a details JSON object whose
  "lifted_at" parses; it counts while in force at as-of (received by then, lifted after) or when not
  lifted at all; unreadable details leave it in force.
- contact_ids are trimmed wherever they appear. Rule 5 compares two ids as integers when both are
  all ASCII digits, else as strings (mixed id schemes have no total order; the export's ids are
  expected to follow one scheme).
- Ages: whole years at as-of's UTC date; someone born on 29 February turns a year older on 1 March
  in years without one.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from governed_marketing.crm.contract import (
    CONSENT_EVENTS,
    CONTACTS,
    DSR_REQUESTS,
    SUPPRESSING_DSR_TYPES,
    ExportFile,
    is_valid_email,
    normalize_email,
)
from governed_marketing.policy import Policy

RULE_INVALID_ROW = "rule1_invalid_row"
RULE_DSR = "rule2_dsr_request"
RULE_CONSENT = "rule3_consent"
RULE_AGE = "rule4_age"
RULE_DUPLICATE_EMAIL = "rule5_duplicate_email"
RECIPIENT = "recipient"
RULES = (RULE_INVALID_ROW, RULE_DSR, RULE_CONSENT, RULE_AGE, RULE_DUPLICATE_EMAIL)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Contact:
    contact_id: str
    email: str  # normalized
    birth_date: date | None
    country: str  # trimmed, upper-cased
    updated_at: datetime
    line: int


@dataclass
class Evaluation:
    """Every contact's fate for one campaign at one as-of."""

    decisions: dict[str, str] = field(default_factory=dict)  # contact_id -> RECIPIENT or first failing rule
    invalid_lines: list[int] = field(default_factory=list)  # contacts.csv records failing rule 1
    superseded_lines: list[int] = field(default_factory=list)  # valid, but an older version of a contact

    @property
    def recipients(self) -> set[str]:
        return {contact_id for contact_id, decision in self.decisions.items() if decision == RECIPIENT}

    def excluded_by_reason(self) -> dict[str, int]:
        """Rule 1 counts invalid records (lines), rules 2-5 count contacts, each by its first failing rule."""
        counts = Counter(d for d in self.decisions.values() if d not in (RECIPIENT, RULE_INVALID_ROW))
        return {RULE_INVALID_ROW: len(self.invalid_lines), **{rule: counts[rule] for rule in RULES[1:]}}


def expected_recipients(crm_dir: Path, policy: Policy, campaign_id: str, as_of: datetime) -> set[str]:
    """The contact_ids that must receive `campaign_id` at `as_of`, by DESIGN.md's five rules."""
    return evaluate(crm_dir, policy, campaign_id, as_of).recipients


def excluded_by_reason(crm_dir: Path, policy: Policy, campaign_id: str, as_of: datetime) -> dict[str, int]:
    """How many were excluded by each rule (the first one failing), for debugging a mismatch."""
    return evaluate(crm_dir, policy, campaign_id, as_of).excluded_by_reason()


def evaluate(crm_dir: Path, policy: Policy, campaign_id: str, as_of: datetime) -> Evaluation:
    """Decide every contact of the export in `crm_dir`; see the module docstring for the fine print."""
    crm_dir = Path(crm_dir)
    as_of = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC)
    purpose = policy.purpose_of(campaign_id)
    evaluation = Evaluation()

    contacts, invalid_ids = _read_contacts(crm_dir / CONTACTS.name, evaluation)
    for contact_id in invalid_ids - contacts.keys():
        evaluation.decisions[contact_id] = RULE_INVALID_ROW
    suppressed = _suppressed_emails(crm_dir / DSR_REQUESTS.name, as_of)
    latest = _latest_consent_events(crm_dir / CONSENT_EVENTS.name, set(purpose.requires_consent), as_of)
    oldest_grant = as_of - timedelta(days=purpose.consent_max_age_days)
    as_of_date = as_of.date()

    passing: dict[str, list[Contact]] = defaultdict(list)
    for contact in contacts.values():
        if contact.email in suppressed:
            evaluation.decisions[contact.contact_id] = RULE_DSR
            continue
        consented = True
        for consent in purpose.requires_consent:
            event = latest.get((contact.contact_id, consent))
            if event is None or event[1] or event[0] < oldest_grant:  # none, a withdrawal, or too old
                consented = False
                break
        if not consented:
            evaluation.decisions[contact.contact_id] = RULE_CONSENT
            continue
        if contact.birth_date is None:
            old_enough = policy.unknown_age == "include"
        else:
            old_enough = _age(contact.birth_date, as_of_date) >= policy.minimum_age_for(contact.country)
        if not old_enough:
            evaluation.decisions[contact.contact_id] = RULE_AGE
            continue
        passing[contact.email].append(contact)

    for group in passing.values():
        winner = functools.reduce(_later_or_higher, group)
        for contact in group:
            evaluation.decisions[contact.contact_id] = RECIPIENT if contact is winner else RULE_DUPLICATE_EMAIL
    return evaluation


# ---- the files -------------------------------------------------------------------------------


def _records(path: Path, spec: ExportFile) -> Iterator[tuple[int, dict[str, str], bool]]:
    """(line, fields by column, whether the field count is right) for each non-blank record."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        missing = [column for column in spec.columns if column not in header]
        if missing:
            raise ValueError(f"{path}: header lacks {', '.join(missing)}")
        end = reader.line_num
        for row in reader:
            line, end = end + 1, reader.line_num
            if all(not cell.strip() for cell in row):
                continue
            yield line, dict(zip(header, row, strict=False)), len(row) == len(header)


def parse_timestamp(text: str) -> datetime | None:
    """ISO 8601 to an aware UTC datetime; zone-less means UTC; None when it does not parse."""
    text = text.strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _birth_date(text: str) -> tuple[bool, date | None]:
    """(valid, date): empty is valid and unknown; anything else must be a real YYYY-MM-DD date."""
    text = text.strip()
    if not text:
        return True, None
    if not _ISO_DATE.fullmatch(text):
        return False, None
    try:
        return True, date.fromisoformat(text)
    except ValueError:
        return False, None


def _read_contacts(path: Path, evaluation: Evaluation) -> tuple[dict[str, Contact], set[str]]:
    contacts: dict[str, Contact] = {}
    invalid_ids: set[str] = set()
    for line, record, complete in _records(path, CONTACTS):
        contact = _valid_contact(line, record) if complete else None
        if contact is None:
            evaluation.invalid_lines.append(line)
            if record.get("contact_id", "").strip():
                invalid_ids.add(record["contact_id"].strip())
            continue
        current = contacts.get(contact.contact_id)
        if current is None or contact.updated_at >= current.updated_at:  # a tie: the later line
            contacts[contact.contact_id] = contact
            if current is not None:
                evaluation.superseded_lines.append(current.line)
        else:
            evaluation.superseded_lines.append(line)
    return contacts, invalid_ids


def _valid_contact(line: int, record: dict[str, str]) -> Contact | None:
    contact_id = record["contact_id"].strip()
    valid_birth, birth = _birth_date(record["birth_date"])
    created_at, updated_at = parse_timestamp(record["created_at"]), parse_timestamp(record["updated_at"])
    if not contact_id or not is_valid_email(record["email"]) or not valid_birth:
        return None
    if created_at is None or updated_at is None:
        return None
    return Contact(
        contact_id=contact_id,
        email=normalize_email(record["email"]),
        birth_date=birth,
        country=record["country"].strip().upper(),
        updated_at=updated_at,
        line=line,
    )


def _suppressed_emails(path: Path, as_of: datetime) -> set[str]:
    """Normalized emails with an erasure, objection or restriction (in force) received, whatever the as-of."""
    suppressed: set[str] = set()
    if not path.is_file():  # the file is optional
        return suppressed
    for _line, record, complete in _records(path, DSR_REQUESTS):
        if not complete:
            continue
        request_type = record["request_type"].strip().lower()
        received_at = parse_timestamp(record["received_at"])
        if request_type not in SUPPRESSING_DSR_TYPES or received_at is None:
            continue
        if request_type == "restriction":
            lifted_at = _lifted_at(record["details"])
            if lifted_at is not None and not received_at <= as_of < lifted_at:
                continue
        suppressed.add(normalize_email(record["email"]))
    return suppressed


def _lifted_at(details: str) -> datetime | None:
    try:
        parsed = json.loads(details) if details.strip() else {}
    except ValueError:
        return None
    value = parsed.get("lifted_at") if isinstance(parsed, dict) else None
    return parse_timestamp(value) if isinstance(value, str) else None


def _latest_consent_events(
    path: Path, consents: set[str], as_of: datetime
) -> dict[tuple[str, str], tuple[datetime, bool]]:
    """(contact_id, consent) -> (occurred_at, is_withdraw) of the latest event by as-of.

    On equal occurred_at a withdrawal wins: (t, True) sorts after (t, False).
    """
    seen: set[str] = set()
    latest: dict[tuple[str, str], tuple[datetime, bool]] = {}
    for _line, record, complete in _records(path, CONSENT_EVENTS):
        if not complete:
            continue
        event_id, contact_id = record["event_id"].strip(), record["contact_id"].strip()
        action = record["action"].strip().lower()
        occurred_at = parse_timestamp(record["occurred_at"])
        if not event_id or not contact_id or action not in ("grant", "withdraw") or occurred_at is None:
            continue
        if event_id in seen:  # a duplicated event_id counts once
            continue
        seen.add(event_id)
        consent = record["purpose"].strip().lower()
        if consent not in consents or occurred_at > as_of:
            continue
        key, event = (contact_id, consent), (occurred_at, action == "withdraw")
        if key not in latest or event > latest[key]:
            latest[key] = event
    return latest


# ---- rules 4 and 5 ---------------------------------------------------------------------------


def _age(birth: date, on: date) -> int:
    """Whole years; the birthday itself counts as reached."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def compare_contact_ids(a: str, b: str) -> int:
    """As integers when both are all digits, else as strings; -1, 0 or 1."""
    x: int | str
    y: int | str
    if _DIGITS.fullmatch(a) and _DIGITS.fullmatch(b):
        x, y = int(a), int(b)
    else:
        x, y = a, b
    return (x > y) - (x < y)


def _later_or_higher(a: Contact, b: Contact) -> Contact:
    """Rule 5's winner of two: the latest updated_at, then the highest contact_id."""
    if a.updated_at != b.updated_at:
        return a if a.updated_at > b.updated_at else b
    return a if compare_contact_ids(a.contact_id, b.contact_id) > 0 else b
