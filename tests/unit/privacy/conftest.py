"""A small warehouse with three recognizable people, built by the real ingest on a hand-written export."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from governed_marketing import warehouse
from governed_marketing.crm import contract
from governed_marketing.crm.ingest import ingest_export
from governed_marketing.policy import Policy, load_policy
from governed_marketing.settings import Settings, get_settings, reset_settings

#: Three people, each identifiable by email, phone and name; Bob has two contact rows (one email).
PEOPLE = {
    "alice": {
        "rows": [("c001", "Alice.Wexford@Privacy-Test.example ")],
        "first_name": "Alicia",
        "last_name": "Wexfordson",
        "phone": "+49 30 1234 5671",
    },
    "bob": {
        "rows": [("c002", "bob.quill@privacy-test.example"), ("c003", " BOB.QUILL@privacy-test.example")],
        "first_name": "Bartholomew",
        "last_name": "Quillfeather",
        "phone": "+33 6 9876 5432",
    },
    "carol": {
        "rows": [("c004", "carol.nyx@privacy-test.example")],
        "first_name": "Carolina",
        "last_name": "Nyxberg",
        "phone": "+39 02 5555 0101",
    },
}
AS_OF = datetime(2026, 11, 15, 12, 0, 0)


def email_of(person: str) -> str:
    return contract.normalize_email(PEOPLE[person]["rows"][0][1])


def identifiers(person: str) -> list[str]:
    p = PEOPLE[person]
    return [email_of(person), p["phone"], p["first_name"], p["last_name"]]


def _write(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_export(directory: Path, *, people=("alice", "bob", "carol"), notes: dict[str, str] | None = None) -> Path:
    """contacts, consent events (both consents granted), one purchase each, no requests."""
    directory.mkdir(parents=True, exist_ok=True)
    contacts, events, activity = [], [], []
    for name in people:
        person = PEOPLE[name]
        for contact_id, email in person["rows"]:
            contacts.append(
                {
                    "contact_id": contact_id,
                    "email": email,
                    "first_name": person["first_name"],
                    "last_name": person["last_name"],
                    "phone": person["phone"],
                    "birth_date": "1990-05-17",
                    "country": "DE",
                    "language": "de",
                    "city": "Berlin",
                    "lifecycle_stage": "customer",
                    "interests": "hiking;books",
                    "notes": (notes or {}).get(name, ""),
                    "created_at": "2025-01-01T09:00:00Z",
                    "updated_at": "2026-01-01T09:00:00Z",
                }
            )
            for consent in ("email_marketing", "ai_personalization"):
                events.append(
                    {
                        "event_id": f"ev-{contact_id}-{consent}",
                        "contact_id": contact_id,
                        "purpose": consent,
                        "action": "grant",
                        "source": "signup_form",
                        "notice_version": "v3",
                        "occurred_at": "2026-02-01T10:00:00Z",
                    }
                )
            activity.append(
                {
                    "event_id": f"act-{contact_id}",
                    "contact_id": contact_id,
                    "event_type": "purchase",
                    "product_category": "outdoor",
                    "amount": "59.90",
                    "occurred_at": "2026-03-01T10:00:00Z",
                }
            )
    _write(directory / contract.CONTACTS.name, contract.CONTACTS.columns, contacts)
    _write(directory / contract.CONSENT_EVENTS.name, contract.CONSENT_EVENTS.columns, events)
    _write(directory / contract.ACTIVITY.name, contract.ACTIVITY.columns, activity)
    return directory


def write_outbox(home: Path) -> Path:
    """An outbox as generation writes it: one message per person (the first contact row)."""
    path = home / "outbox" / "spring_newsletter" / "newsletter_v1-test.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for person in PEOPLE.values():
        contact_id, email = person["rows"][0]
        lines.append(
            json.dumps(
                {
                    "campaign_id": "spring_newsletter",
                    "contact_id": contact_id,
                    "email": contract.normalize_email(email),
                    "language": "de",
                    "subject": "Neu",
                    "body": f"Hallo {person['first_name']},\n\n--\nAbmelden: https://example.com/preferences",
                    "prompt_version": "newsletter_v1@test",
                    "model": "offline-templates-v1",
                    "cohort_id": "spring_newsletter:abc",
                    "generated_at": "2026-11-15T12:00:00Z",
                }
            )
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Home:
    settings: Settings
    policy: Policy
    export: Path

    @property
    def path(self) -> Path:
        return self.settings.home_dir

    @property
    def key(self) -> bytes:
        return self.settings.resolve_pseudonym_key()[0]

    def connect(self, read_only: bool = False):
        return warehouse.session(self.settings.warehouse_path, read_only=read_only)

    def ingest(self, export: Path, *, now: datetime | None = None):
        with self.connect() as conn:
            return ingest_export(
                export, conn=conn, policy=self.policy, landing_root=self.settings.path("landing"), now=now
            )


@pytest.fixture
def home(tmp_path, monkeypatch) -> Home:
    """A fresh GMP_HOME with the three people ingested and an outbox holding a message for each."""
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    reset_settings()
    settings = get_settings()
    policy = load_policy()
    notes = {
        "carol": f"Referred by {email_of('alice')} ({PEOPLE['alice']['first_name']} {PEOPLE['alice']['last_name']})"
    }
    built = Home(settings=settings, policy=policy, export=write_export(tmp_path / "export", notes=notes))
    built.ingest(built.export, now=datetime(2026, 11, 1, 8, 0, 0))
    write_outbox(settings.home_dir)
    yield built
    reset_settings()
