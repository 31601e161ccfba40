"""The CRM export contract (README, "The CRM export contract"): files, their columns, and the allowed values."""

from __future__ import annotations

import csv
import re
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from governed_marketing.errors import ExportUnreadable  # defined with the other deterministic failures

EMAIL = re.compile(
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$"
)
LIFECYCLE_STAGES = ("subscriber", "lead", "customer", "churned")
CONSENT_ACTIONS = ("grant", "withdraw")
ACTIVITY_TYPES = ("purchase", "email_open", "email_click", "page_view")
DSR_TYPES = ("access", "erasure", "rectification", "restriction", "objection", "portability")
#: DSR types that take a person out of marketing the moment they are received (eligibility rule 2).
SUPPRESSING_DSR_TYPES = ("erasure", "objection", "restriction")


@dataclass(frozen=True)
class ExportFile:
    name: str
    table: str
    key: str
    columns: tuple[str, ...]
    required: bool = True


CONTACTS = ExportFile(
    "contacts.csv",
    "crm_contacts",
    "contact_id",
    (
        "contact_id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "birth_date",
        "country",
        "language",
        "city",
        "lifecycle_stage",
        "interests",
        "notes",
        "created_at",
        "updated_at",
    ),
)
CONSENT_EVENTS = ExportFile(
    "consent_events.csv",
    "crm_consent_events",
    "event_id",
    ("event_id", "contact_id", "purpose", "action", "source", "notice_version", "occurred_at"),
)
ACTIVITY = ExportFile(
    "activity.csv",
    "crm_activity",
    "event_id",
    ("event_id", "contact_id", "event_type", "product_category", "amount", "occurred_at"),
)
DSR_REQUESTS = ExportFile(
    "dsr_requests.csv",
    "crm_dsr_requests",
    "request_id",
    ("request_id", "email", "request_type", "details", "received_at"),
    required=False,
)
EXPORT_FILES: tuple[ExportFile, ...] = (CONTACTS, CONSENT_EVENTS, ACTIVITY, DSR_REQUESTS)


def normalize_email(value: str | None) -> str:
    """Trim and lower-case: the identity the eligibility rules and DSRs use."""
    return (value or "").strip().lower()


def is_valid_email(value: str | None) -> bool:
    return bool(EMAIL.match(normalize_email(value)))


# ---- errors that name the export ----------------------------------------------------------------


def check_export(crm_dir: str | Path) -> Path:
    """Cheap checks before anything heavy: the directory, the required files, at least one data row.

    Raises:
        ExportUnreadable: naming the directory or file.
    """
    directory = Path(crm_dir)
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "not found"
        raise ExportUnreadable(f"{directory}: CRM export directory {what}")
    present = []
    for spec in EXPORT_FILES:
        path = directory / spec.name
        if path.is_file():
            present.append(path)
        elif spec.required:
            raise ExportUnreadable(f"{path}: required export file is missing")
    if not any(_has_data_row(path) for path in present):
        names = ", ".join(path.name for path in present)
        raise ExportUnreadable(f"{directory}: the export holds no data rows (only headers in {names})")
    return directory


def _has_data_row(path: Path) -> bool:
    """True when any line after the first (the header) holds more than whitespace."""
    try:
        with path.open("rb") as handle:
            handle.readline()
            return any(line.strip() for line in handle)
    except OSError as exc:
        raise ExportUnreadable(f"{path}: cannot open: {exc.strerror}") from None


# ---- the CSV field limit ------------------------------------------------------------------------

#: The longest field the contract accepts (the csv module's default limit, 128 KiB): a longer one
#: costs its record (quarantined as unreadable) and is never stored anywhere.
MAX_FIELD_CHARS = 131072
#: What a rewrite of a stored copy reads: anything (an archive written before the limit was enforced).
_UNLIMITED = 2**31 - 1
_field_limit_lock = threading.RLock()


@contextmanager
def csv_field_limit(limit: int | None) -> Iterator[None]:
    """Read CSVs under this field limit (None: no practical limit), then restore the previous one.

    The csv module keeps one limit per process; the lock keeps a reader in one thread from changing
    the limit under a reader in another.
    """
    with _field_limit_lock:
        previous = csv.field_size_limit(_UNLIMITED if limit is None else limit)
        try:
            yield
        finally:
            csv.field_size_limit(previous)


# ---- characters ---------------------------------------------------------------------------------

#: C0 and C1 control characters and DEL. Identifiers holding one are quarantined; free text
#: (notes, details, city, phone, interests, ...) loses them, except tab and line breaks.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_IN_FREE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


# ---- names --------------------------------------------------------------------------------------

#: The longest first_name or last_name kept (in characters, after normalising).
NAME_MAX_CHARS = 100
#: Punctuation a real name uses: apostrophes (' and U+2019), hyphens (- and U+2010), full stop,
#: middle dots (Catalan U+00B7, Japanese U+30FB); everything else in a name is a letter, a combining
#: mark or a single space.
NAME_PUNCTUATION = frozenset("'\u2019-\u2010.\u00b7\u30fb")
#: Joiners some scripts need inside a word (Persian, Indic scripts).
_NAME_JOINERS = frozenset("\u200c\u200d")


def normalize_name(value: str | None) -> tuple[str | None, str | None]:
    """A first or last name as (normalised name, None), or (None, reason) when it is not a name.

    The rule (names are data, never markup or instructions):
    1. Unicode NFC; leading and trailing whitespace trimmed; each run of whitespace becomes one space.
    2. Empty after that: no name (None, None).
    3. Rejected, with a reason that never repeats the value: a control or invisible formatting
       character (C0/C1, DEL, bidi overrides, zero-width space, line/paragraph separators); any
       character that is not a letter, a combining mark, a space or one of NAME_PUNCTUATION (so no
       `<`, `>`, `&`, quotes, digits, `=`, `@`, `{`, `/`, ...); no letter at all; more than
       NAME_MAX_CHARS characters.
    Accepted: "Zoë", "O'Brien", "Jean-Luc", "Łukasz", "José María", "李", "Nguyễn Thị", "Col·lell".
    """
    if value is None:
        return None, None
    text = unicodedata.normalize("NFC", str(value))
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc" and char not in "\t\n\r":
            return None, "control character"
        if (category in ("Cf", "Cs", "Co", "Cn", "Zl", "Zp")) and char not in _NAME_JOINERS:
            return None, "control or invisible formatting character"
    text = " ".join(text.split())
    if not text:
        return None, None
    if len(text) > NAME_MAX_CHARS:
        return None, f"longer than {NAME_MAX_CHARS} characters"
    for char in text:
        category = unicodedata.category(char)
        if not (category[0] in "LM" or char == " " or char in NAME_PUNCTUATION or char in _NAME_JOINERS):
            return None, "markup or other character not used in names"
    if not any(unicodedata.category(char)[0] == "L" for char in text):
        return None, "no letter"
    return text, None
