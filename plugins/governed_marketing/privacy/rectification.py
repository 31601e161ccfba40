"""Rectification (Art. 16): apply the corrected values in a request's `details` to the person's contact rows.

Every contact row sharing the normalized email is corrected, and stamped `updated_at` now, so an
older CRM export cannot overwrite the correction (ingest keeps the newest version). The marts are
rebuilt from raw on the next run (`gmp run` processes requests before it builds the models), and
the outbox is rewritten then. The corrected fields are reported by name, never by value.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from governed_marketing.crm import contract

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

#: Contact fields a person may have corrected (identity and keys are not among them, except the email).
RECTIFIABLE = tuple(c for c in contract.CONTACTS.columns if c not in ("contact_id", "created_at", "updated_at"))


class RectificationError(ValueError):
    """The details cannot be applied; the message names the field, never its value."""


@dataclass
class Rectification:
    contact_rows: int = 0
    fields: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        return {"contact_rows": self.contact_rows, "fields": self.fields}


def parse_details(details: str | dict | None) -> dict[str, Any]:
    """The corrections to apply; raises RectificationError naming what is wrong."""
    if isinstance(details, dict):
        values = details
    else:
        try:
            values = json.loads(details or "{}")
        except ValueError:
            raise RectificationError("details are not valid JSON") from None
    if not isinstance(values, dict):
        raise RectificationError("details must be a JSON object of field -> corrected value")
    values = {str(k).strip().lower(): v for k, v in values.items() if k not in ("reason", "note", "unparsed_details")}
    unknown = sorted(set(values) - set(RECTIFIABLE))
    if unknown:
        raise RectificationError(f"cannot rectify {', '.join(unknown)}: allowed fields are {', '.join(RECTIFIABLE)}")
    if "email" in values and not contract.is_valid_email(values["email"]):
        raise RectificationError("email: the corrected address is not valid")
    if values.get("birth_date"):
        try:
            date.fromisoformat(str(values["birth_date"]))
        except ValueError:
            raise RectificationError("birth_date: not YYYY-MM-DD") from None
    if values.get("lifecycle_stage") and values["lifecycle_stage"] not in contract.LIFECYCLE_STAGES:
        raise RectificationError(f"lifecycle_stage: must be one of {', '.join(contract.LIFECYCLE_STAGES)}")
    if values.get("country"):
        values["country"] = str(values["country"]).strip().upper()
    if values.get("language"):
        values["language"] = str(values["language"]).strip().lower()
    return values


def rectify(conn: Warehouse, email: str, details: str | dict | None, *, now: datetime | None = None) -> Rectification:
    """Apply the corrections to every contact row of this person; returns counts and field names."""
    values = parse_details(details)
    outcome = Rectification(fields=sorted(values))
    if not values:
        return outcome
    normalized = contract.normalize_email(email)
    moment = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    if "email" in values:
        values["email_normalized"] = contract.normalize_email(values["email"])
        values["email"] = str(values["email"]).strip()
    assignments = ", ".join(f'"{column}" = ?' for column in values)
    rows = conn.execute(
        f"update raw.crm_contacts set {assignments}, updated_at = greatest(updated_at, ?) where email_normalized = ?",
        [*(None if v in ("", None) else v for v in values.values()), moment, normalized],
    ).fetchall()
    outcome.contact_rows = int(rows[0][0]) if rows else 0
    return outcome


#: Contact columns that are not text (the corrected values travel as text and are cast back).
_TYPED = {"birth_date": "date"}


def rectify_many(
    conn: Warehouse, requests: list[tuple[str, str, str | dict | None]], *, now: datetime | None = None
) -> dict[str, Rectification | RectificationError]:
    """`rectify` for a pass's requests ((request_id, email, details) each): one UPDATE per set of fields.

    A person corrected twice in the pass, a corrected email (it may join two people) or a value that is
    not text is applied one request at a time, in order, exactly as `rectify` does; so is the whole pass
    when it changes an email. Returns each request's outcome, or the error that sends it to review.
    """
    import pandas as pd

    moment = (now or datetime.now(UTC)).replace(tzinfo=None, microsecond=0)
    outcomes: dict[str, Rectification | RectificationError] = {}
    parsed: list[tuple[str, str, dict[str, Any]]] = []
    for request_id, email, details in requests:
        try:
            parsed.append((request_id, contract.normalize_email(email), parse_details(details)))
        except RectificationError as problem:
            outcomes[request_id] = problem
    times = Counter(email for _, email, _ in parsed)
    one_by_one = any("email" in values for _, _, values in parsed)
    groups: dict[tuple[str, ...], list[tuple[str, str, dict[str, Any]]]] = defaultdict(list)
    for request_id, email, values in parsed:
        if not values:
            outcomes[request_id] = Rectification(fields=[])
        elif one_by_one or times[email] > 1 or not all(isinstance(v, str | None) for v in values.values()):
            outcomes[request_id] = rectify(conn, email, values, now=moment)
        else:
            groups[tuple(sorted(values))].append((request_id, email, values))
    for fields, members in groups.items():
        frame = pd.DataFrame(
            [(email, *(values[f] or None for f in fields)) for _, email, values in members],
            columns=["email", *fields],
            dtype="string",
        )
        conn.temp_table("rectify_values", frame)
        rows = dict(
            conn.execute(
                "select u.email, count(*) from raw.crm_contacts c "
                "join rectify_values u on c.email_normalized = u.email group by u.email"
            ).fetchall()
        )
        assignments = ", ".join(f'"{f}" = cast(u."{f}" as {_TYPED.get(f, "varchar")})' for f in fields)
        conn.execute(
            f"update raw.crm_contacts set {assignments}, updated_at = greatest(raw.crm_contacts.updated_at, ?) "
            "from rectify_values u where raw.crm_contacts.email_normalized = u.email",
            [moment],
        ).fetchall()
        conn.execute("drop table if exists rectify_values").fetchall()
        for request_id, email, _ in members:
            outcomes[request_id] = Rectification(contact_rows=int(rows.get(email, 0)), fields=list(fields))
    return outcomes
