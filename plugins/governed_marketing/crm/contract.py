"""The CRM export contract (DESIGN.md): files, their columns, and the allowed values."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
