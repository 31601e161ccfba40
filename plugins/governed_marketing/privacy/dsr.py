"""Data subject requests: intake, deadlines in calendar months, and the ledger that tracks each one.

Requests arrive in `raw.crm_dsr_requests` from two places: the CRM's `dsr_requests.csv` (channel
`crm_export`) and `gmp dsr submit` (channel `gmp_cli`). Identity is the normalized email; it reaches
every contact row sharing it. A request is effective for marketing the moment it is received (the dbt
suppression model reads the raw table), whatever its processing status.

The ledger `ops.dsr_requests` holds no identity: the person is referenced by a keyed HMAC
(`subject_ref`), so the ledger outlives an erasure and still answers "what did you do, and when".
Deadlines follow Art. 12(3): one calendar month from receipt (31 January -> 28/29 February), which
may be extended by two further months with a reason, told to the person within the first month.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governed_marketing.crm import contract
from governed_marketing.policy import Policy
from governed_marketing.privacy.periods import parse_period
from governed_marketing.privacy.suppression import subject_ref

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

CHANNEL_CLI = "gmp_cli"

#: Answered (closed) statuses; a restriction is `in_effect` (answered, still active) until lifted; a
#: request refused after review is `rejected`, with the reason the person is told (Art. 12(4)).
CLOSED = ("done", "in_effect", "lifted", "rejected")
#: Open statuses: the deadline runs. `needs_review` waits for a person (e.g. a rectification without details).
OPEN = ("received", "needs_review", "failed")


class DsrError(ValueError):
    """A request cannot be taken or changed; the message says why (never with the email in it)."""


class OverdueRequests(RuntimeError):
    """Open requests are past their deadline; the message names them by id with their due dates."""


@dataclass(frozen=True)
class RequestView:
    """One ledger row as `gmp dsr list` and the report show it: no identity, only ids and dates."""

    request_id: str
    request_type: str
    channel: str
    received_at: datetime
    due_date: date
    extended_due_date: date | None
    extension_reason: str | None
    status: str
    closed_at: datetime | None
    outcome: dict[str, Any]

    @property
    def effective_due(self) -> date:
        return self.extended_due_date or self.due_date

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def days_left(self, today: date) -> int | None:
        return (self.effective_due - today).days if self.is_open else None

    def overdue(self, today: date) -> bool:
        return self.is_open and today > self.effective_due

    def note(self, now: datetime | None = None) -> str:
        """Why the request is open, or what its answer was, in words (ids and reasons only, no identity)."""
        now = now or _now()
        if self.status == "needs_review":
            reason = self.outcome.get("reason") or "waits for a reviewer"
            return f"needs review: {reason} (gmp dsr resolve {self.request_id} --approve/--reject)"
        if self.status == "failed":
            return "erasure not verified: the scan still found identifiers (see its receipt); retried next pass"
        if self.status == "received":
            if self.received_at > now:
                return f"received {self.received_at:%Y-%m-%d %H:%M} UTC, in the future: answered from then"
            return "not processed yet (run `gmp dsr process`)"
        notes = []
        if self.status == "rejected":
            notes.append(f"rejected: {self.outcome.get('rejection_reason', '')}")
        if self.outcome.get("resolution") == "approved":
            notes.append(f"approved after review: {', '.join(self.outcome.get('fields', []))} corrected")
        if self.outcome.get("data_held") is False:
            notes.append("no data held: confirmed to the person (Art. 15(1))")
        if self.extension_reason:
            notes.append(f"extended: {self.extension_reason}")
        return "; ".join(notes)

    def as_json(self, today: date) -> dict[str, Any]:
        """The machine-readable row of `gmp dsr list --json`."""
        return {
            "request_id": self.request_id,
            "type": self.request_type,
            "channel": self.channel,
            "received_at": self.received_at.isoformat(),
            "due_date": self.due_date.isoformat(),
            "extended_due_date": self.extended_due_date.isoformat() if self.extended_due_date else None,
            "days_left": self.days_left(today),
            "status": self.status,
            "overdue": self.overdue(today),
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "note": self.note(),
        }


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


# ---- deadlines ---------------------------------------------------------------------------------


def due_date(received: date | datetime, policy: Policy) -> date:
    """The last day to answer: one calendar month (governance.yml dsr.deadline) after receipt.

    A month from 31 January ends on 28 February (29 in a leap year): there is no 31 February, and
    the period ends on the last day of that month.
    """
    day = received.date() if isinstance(received, datetime) else received
    return day + parse_period(policy.dsr.deadline, key="dsr.deadline")


def extended_due_date(original_due: date, policy: Policy) -> date:
    """The deadline extended by two further months (dsr.extension), counted from the original deadline."""
    return original_due + parse_period(policy.dsr.extension, key="dsr.extension")


# ---- intake ------------------------------------------------------------------------------------


def new_request_id(now: datetime) -> str:
    return f"gmp-{now:%Y%m%d}-{secrets.token_hex(4)}"


def submit(
    conn: Warehouse,
    request_type: str,
    email: str,
    details: dict[str, Any] | str | None = None,
    *,
    policy: Policy,
    key: bytes,
    now: datetime | None = None,
) -> str:
    """Take a request from the CLI into raw.crm_dsr_requests (channel gmp_cli) and the ledger.

    Returns:
        The new request id (the only thing printed; the email is never echoed).

    Raises:
        DsrError: unknown type, an invalid email, or details that are not a JSON object.
    """
    kind = (request_type or "").strip().lower()
    if kind not in contract.DSR_TYPES:
        raise DsrError(f"request type {request_type!r} is not one of {', '.join(contract.DSR_TYPES)}")
    normalized = contract.normalize_email(email)
    if not contract.is_valid_email(normalized):
        raise DsrError("the email address is not valid after trim + lower-case")
    if isinstance(details, str):
        try:
            details = json.loads(details) if details.strip() else {}
        except ValueError as exc:
            raise DsrError(f"--details is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if details is not None and not isinstance(details, dict):
        raise DsrError('--details must be a JSON object, e.g. \'{"last_name": "..."}\'')
    moment = (now or _now()).replace(tzinfo=None)
    request_id = new_request_id(moment)
    conn.execute(
        "insert into raw.crm_dsr_requests values (?, ?, ?, ?, ?, ?, ?)",
        [request_id, normalized, kind, json.dumps(details or {}), moment, CHANNEL_CLI, CHANNEL_CLI],
    ).fetchall()
    _register(conn, request_id, kind, CHANNEL_CLI, subject_ref(key, normalized), moment, policy)
    return request_id


def _register(
    conn: Warehouse,
    request_id: str,
    kind: str,
    channel: str,
    ref: str,
    received_at: datetime,
    policy: Policy,
) -> None:
    conn.execute(
        "insert into ops.dsr_requests values (?, ?, ?, ?, ?, ?, null, null, 'received', null, null, ?) "
        "on conflict do nothing",
        [request_id, kind, channel, ref, received_at, due_date(received_at, policy), _now()],
    ).fetchall()


def sync_ledger(conn: Warehouse, *, policy: Policy, key: bytes, as_of: datetime) -> int:
    """Register every raw request received by `as_of` that the ledger does not know yet (CRM intake).

    One set-based insert for the whole intake (a 1M-contact export brings ~20,000 requests): the keyed
    subject refs and due dates are computed here, the rows go in through a session table.
    """
    import pandas as pd

    rows = conn.execute(
        """
        select r.request_id, r.request_type, r.channel, r.email_normalized, r.received_at
        from raw.crm_dsr_requests r
        where r.received_at <= ? and r.request_id not in (select request_id from ops.dsr_requests)
        order by r.received_at, r.request_id
        """,
        [as_of.replace(tzinfo=None)],
    ).fetchall()
    if not rows:
        return 0
    registered_at = _now().isoformat(sep=" ")
    intake = pd.DataFrame(
        [
            (
                request_id,
                kind,
                channel,
                email.removeprefix("erased:") if email.startswith("erased:") else subject_ref(key, email),
                received_at.isoformat(sep=" "),
                due_date(received_at, policy).isoformat(),
                registered_at,
            )
            for request_id, kind, channel, email, received_at in rows
        ],
        columns=["request_id", "request_type", "channel", "subject_ref", "received_at", "due_date", "updated_at"],
        dtype="string",
    )
    conn.temp_table("dsr_intake", intake)
    conn.execute(
        """
        insert into ops.dsr_requests
        select request_id, request_type, channel, subject_ref, cast(received_at as timestamp),
               cast(due_date as date), null, null, 'received', null, null, cast(updated_at as timestamp)
        from dsr_intake
        on conflict do nothing
        """
    ).fetchall()
    conn.execute("drop table if exists dsr_intake").fetchall()
    return len(rows)


# ---- status ------------------------------------------------------------------------------------


def get(conn: Warehouse, request_id: str) -> RequestView:
    rows = _select(conn, "where request_id = ?", [request_id])
    if not rows:
        raise DsrError(f"no request {request_id!r} in the ledger (see `gmp dsr list`)")
    return rows[0]


def set_status(
    conn: Warehouse,
    request_id: str,
    status: str,
    *,
    outcome: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> None:
    """Record a request's new status; closing statuses stamp closed_at. The outcome holds counts and paths only."""
    moment = (now or _now()).replace(tzinfo=None)
    closed = moment if status in CLOSED else None
    conn.execute(
        """
        update ops.dsr_requests
        set status = ?, closed_at = coalesce(?, closed_at), outcome_json = coalesce(?, outcome_json), updated_at = ?
        where request_id = ?
        """,
        [status, closed, json.dumps(outcome, sort_keys=True, default=str) if outcome else None, moment, request_id],
    ).fetchall()


def set_statuses(
    conn: Warehouse,
    updates: list[tuple[str, str, dict[str, Any] | None]],
    *,
    now: datetime | None = None,
) -> None:
    """`set_status` for many requests in one statement: (request_id, status, outcome) each, same rules."""
    if not updates:
        return
    import pandas as pd

    moment = (now or _now()).replace(tzinfo=None)
    stamp = moment.isoformat(sep=" ")
    frame = pd.DataFrame(
        [
            (
                request_id,
                status,
                stamp if status in CLOSED else None,
                json.dumps(outcome, sort_keys=True, default=str) if outcome else None,
            )
            for request_id, status, outcome in updates
        ],
        columns=["request_id", "status", "closed_at", "outcome_json"],
        dtype="string",
    )
    conn.temp_table("dsr_status_updates", frame)
    conn.execute(
        """
        update ops.dsr_requests
        set status = u.status,
            closed_at = coalesce(cast(u.closed_at as timestamp), ops.dsr_requests.closed_at),
            outcome_json = coalesce(u.outcome_json, ops.dsr_requests.outcome_json),
            updated_at = cast(? as timestamp)
        from dsr_status_updates u
        where ops.dsr_requests.request_id = u.request_id
        """,
        [stamp],
    ).fetchall()
    conn.execute("drop table if exists dsr_status_updates").fetchall()


def extend(conn: Warehouse, request_id: str, reason: str, *, policy: Policy, now: datetime | None = None) -> date:
    """Extend an open request by dsr.extension; only within the first deadline, and only with a reason.

    Returns:
        The new due date (tell the person, with the reason, before the first deadline passes).
    """
    if not reason or not reason.strip():
        raise DsrError("an extension needs a reason (Art. 12(3)): pass --reason")
    request = get(conn, request_id)
    today = (now or _now()).date()
    if not request.is_open:
        raise DsrError(f"{request_id} is {request.status}; only open requests can be extended")
    if request.extended_due_date is not None:
        raise DsrError(f"{request_id} was already extended to {request.extended_due_date}")
    if today > request.due_date:
        raise DsrError(
            f"{request_id} was due on {request.due_date}: an extension must be decided within the first month"
        )
    new_due = extended_due_date(request.due_date, policy)
    conn.execute(
        "update ops.dsr_requests set extended_due_date = ?, extension_reason = ?, updated_at = ? where request_id = ?",
        [new_due, reason.strip(), _now(), request_id],
    ).fetchall()
    return new_due


def lift_restriction(conn: Warehouse, request_id: str, *, now: datetime | None = None) -> datetime:
    """Lift a restriction: details.lifted_at is set, so the dbt suppression model lets the person back in."""
    request = get(conn, request_id)
    if request.request_type != "restriction":
        raise DsrError(f"{request_id} is a {request.request_type} request; only a restriction can be lifted")
    if request.status == "lifted":
        raise DsrError(f"{request_id} was already lifted")
    moment = (now or _now()).replace(tzinfo=None)
    # The JSON merge in Python: the same on DuckDB and Postgres (details is varchar on both).
    found = conn.execute("select details from raw.crm_dsr_requests where request_id = ?", [request_id]).fetchall()
    for (text,) in found:
        try:
            details = json.loads(text) if text else {}
        except ValueError:
            details = {}
        details = {**(details if isinstance(details, dict) else {}), "lifted_at": moment.isoformat() + "Z"}
        conn.execute(
            "update raw.crm_dsr_requests set details = ? where request_id = ?", [json.dumps(details), request_id]
        ).fetchall()
    set_status(conn, request_id, "lifted", now=moment)
    return moment


def resolve_rectification(
    conn: Warehouse,
    request_id: str,
    *,
    approve: dict[str, Any] | str | None = None,
    reject_reason: str | None = None,
    home: Path,
    policy: Policy,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Resolve a rectification waiting in needs_review: apply the corrected value, or refuse with a reason.

    Approval goes through the same rectification as `gmp dsr process` (every contact row sharing the
    email, stamped so an older export cannot undo it). A refusal closes the request as `rejected`
    and writes the answer the person is told (`receipts/<request_id>.json`: the reason and their
    right to complain, Art. 12(4)); the reason must not hold an email address.

    Returns:
        The outcome recorded in the ledger (field names and counts, never values).
    """
    from governed_marketing.privacy.rectification import RectificationError, rectify

    if (approve is None) == (reject_reason is None):
        raise DsrError("pass exactly one of --approve (with --value) or --reject (with --reason)")
    request = get(conn, request_id)
    if request.request_type != "rectification":
        raise DsrError(f"{request_id} is a {request.request_type} request; only a rectification is resolved")
    if request.status != "needs_review":
        raise DsrError(f"{request_id} is {request.status}; only a request in needs_review can be resolved")
    moment = (now or _now()).replace(tzinfo=None)
    review = {"review_reason": request.outcome.get("reason", ""), "resolved_at": moment.isoformat() + "Z"}
    if reject_reason is not None:
        reason = reject_reason.strip()
        if not reason:
            raise DsrError("a refusal needs a reason the person is told (Art. 12(4)): pass --reason")
        from governed_marketing.privacy.audit import _EMAIL_LIKE  # the audit log's own test for an address

        if _EMAIL_LIKE.search(reason):
            raise DsrError("the reason must not hold an email address: it is kept in the ledger")
        outcome = {**review, "resolution": "rejected", "rejection_reason": reason}
        outcome["answer"] = str(_write_refusal(home, request, reason, policy, moment).relative_to(home))
        set_status(conn, request_id, "rejected", outcome=outcome, now=moment)
        return outcome
    if isinstance(approve, str):
        try:
            approve = json.loads(approve)
        except ValueError as exc:
            raise DsrError(f"--value is not valid JSON: {exc.msg} at position {exc.pos}") from None
    found = conn.execute("select email_normalized from raw.crm_dsr_requests where request_id = ?", [request_id])
    emails = [r[0] for r in found.fetchall()]
    if not emails or emails[0].startswith("erased:"):
        raise DsrError(f"{request_id}: the person's data was erased; there is nothing left to correct")
    try:
        result = rectify(conn, emails[0], approve, now=moment)
    except RectificationError as problem:
        raise DsrError(f"--value: {problem}") from None
    if not result.fields:
        raise DsrError('--value holds no corrected field, e.g. \'{"last_name": "..."}\'')
    outcome = {**review, "resolution": "approved", **result.counts(), "models": "rebuilt from raw on the next run"}
    set_status(conn, request_id, "done", outcome=outcome, now=moment)
    return outcome


def _write_refusal(home: Path, request: RequestView, reason: str, policy: Policy, moment: datetime) -> Path:
    """The answer to a refused request: what was decided, why, and where to complain. No personal data."""
    path = home / "receipts" / f"{request.request_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    answer = {
        "request_id": request.request_id,
        "request_type": request.request_type,
        "received_at": request.received_at.isoformat() + "Z",
        "decided_at": moment.isoformat() + "Z",
        "decision": "rejected",
        "reason": reason,
        "your_rights": "You may lodge a complaint with a supervisory authority and seek a judicial remedy "
        "(GDPR Art. 12(4), 77, 79).",
        "controller": policy.controller.model_dump(),
    }
    path.write_text(json.dumps(answer, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _select(conn: Warehouse, where: str = "", params: list | None = None) -> list[RequestView]:
    rows = conn.execute(
        f"""
        select request_id, request_type, channel, received_at, due_date, extended_due_date, extension_reason,
               status, closed_at, outcome_json
        from ops.dsr_requests {where}
        order by received_at, request_id
        """,
        params or [],
    ).fetchall()
    return [
        RequestView(
            request_id=r[0],
            request_type=r[1],
            channel=r[2],
            received_at=r[3],
            due_date=r[4],
            extended_due_date=r[5],
            extension_reason=r[6],
            status=r[7],
            closed_at=r[8],
            outcome=json.loads(r[9]) if r[9] else {},
        )
        for r in rows
    ]


def list_requests(conn: Warehouse, *, include_closed: bool = True) -> list[RequestView]:
    from governed_marketing.warehouse import table_exists

    if not table_exists(conn, "ops", "dsr_requests"):
        return []
    if include_closed:
        return _select(conn)
    return _select(conn, "where status = any(cast(? as varchar[]))", [list(OPEN)])


def overdue(conn: Warehouse, *, today: date) -> list[RequestView]:
    """Open requests past their (possibly extended) deadline."""
    return [r for r in list_requests(conn, include_closed=False) if r.overdue(today)]


def check_overdue(*, now: datetime | None = None) -> dict[str, Any]:
    """The daily deadline check: register the CRM intake, then raise if any open request is overdue.

    Raises:
        OverdueRequests: naming every overdue request id and its due date.
    """
    from governed_marketing import warehouse
    from governed_marketing.policy import load_policy
    from governed_marketing.settings import get_settings

    settings = get_settings()
    policy = load_policy(settings.policy_path)
    key, _ = settings.resolve_pseudonym_key()
    moment = (now or _now()).replace(tzinfo=None)
    with warehouse.session(settings=settings) as conn:
        sync_ledger(conn, policy=policy, key=key, as_of=moment)
        late = overdue(conn, today=moment.date())
        still_open = len(list_requests(conn, include_closed=False))
    if late:
        named = ", ".join(f"{r.request_id} ({r.request_type}, due {r.effective_due})" for r in late[:20])
        more = f" and {len(late) - 20} more" if len(late) > 20 else ""
        raise OverdueRequests(f"{len(late)} data subject request(s) overdue (GDPR Art. 12(3)): {named}{more}")
    return {"open": still_open, "overdue": 0}
