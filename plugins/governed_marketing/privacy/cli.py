"""`gmp dsr ...`, `gmp purge`, `gmp audit verify`: the privacy commands, a thin face over the library.

Nothing here prints an email, a name or request details: requests are shown by id, type and dates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

dsr_app = typer.Typer(help="Data subject requests (GDPR Art. 15-21): submit, process, list.", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _context():
    from governed_marketing.policy import PolicyError, load_policy
    from governed_marketing.settings import get_settings

    settings = get_settings()
    try:
        policy = load_policy(settings.policy_path)
        key, _ = settings.resolve_pseudonym_key()
    except (PolicyError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    return settings, policy, key


@dsr_app.command("submit")
def submit(
    request_type: Annotated[
        str, typer.Option("--type", help="access | erasure | rectification | restriction | objection | portability")
    ],
    email: Annotated[str, typer.Option("--email", help="The person's email (normalized: trimmed, lower-case)")],
    details: Annotated[
        str | None, typer.Option("--details", help='JSON object, e.g. \'{"last_name": "Corrected"}\' for rectification')
    ] = None,
) -> None:
    """Take a request from the person (received now; effective for marketing at once). Prints the request id."""
    from governed_marketing import warehouse
    from governed_marketing.privacy import audit, dsr

    settings, policy, key = _context()
    try:
        with warehouse.session(settings=settings) as conn:
            request_id = dsr.submit(conn, request_type, email, details, policy=policy, key=key)
            request = dsr.get(conn, request_id)
            audit.record(
                conn,
                actor=audit.ACTOR_CLI,
                action="dsr:submit",
                purpose="data_subject_rights",
                counts={"request_id": request_id, "type": request.request_type, "due": request.due_date.isoformat()},
            )
    except dsr.DsrError as exc:
        raise _fail(str(exc)) from None
    typer.echo(request_id)
    err.print(f"{request.request_type} request received; due {request.due_date} (run `gmp dsr process`)")


@dsr_app.command("process")
def process(
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 (default: now)")] = None,
) -> None:
    """Answer every open request received by now: exports, corrections, suppression, verified erasure."""
    from governed_marketing.privacy.process import process_pending

    settings, policy, _ = _context()
    result = process_pending(as_of=as_of, settings=settings, policy=policy)
    console.print(f"Registered {result['registered']} new request(s) from the CRM intake")
    for kind in ("access", "portability", "rectification", "restriction", "objection", "erasure"):
        for request_id in result.get(kind, []):
            where = {"access": "exports", "portability": "exports", "erasure": "receipts"}.get(kind)
            path = ""
            if where == "exports":
                path = f"  {settings.home_dir / 'exports' / request_id}/"
            elif where == "receipts":
                path = f"  {settings.home_dir / 'receipts' / request_id}.json (verified)"
            console.print(f"  [green]{kind:>13}[/]  {request_id}{path}", soft_wrap=True)
    for request_id in result.get("needs_review", []):
        console.print(f"  [yellow] needs review[/]  {request_id}  (see `gmp dsr list`)")
    failed = result.get("failed", [])
    for request_id in failed:
        console.print(f"  [bold red]       failed[/]  {request_id}  {settings.home_dir / 'receipts' / request_id}.json")
    if failed:
        raise _fail(f"{len(failed)} erasure(s) not verified: the scan still found identifiers; see the receipts")


@dsr_app.command("list")
def list_requests(
    open_only: Annotated[bool, typer.Option("--open", help="Only requests still open")] = False,
) -> None:
    """Requests with their status, due date and days left (no emails: ids, types and dates only)."""
    from rich.table import Table

    from governed_marketing import warehouse
    from governed_marketing.pipeline import parse_as_of
    from governed_marketing.privacy import dsr

    settings, policy, key = _context()
    now = parse_as_of(None)
    with warehouse.session(settings=settings) as conn:
        dsr.sync_ledger(conn, policy=policy, key=key, as_of=now)
        requests = dsr.list_requests(conn, include_closed=not open_only)
    today = now.date()
    table = Table(title=f"Data subject requests (today {today}, UTC)", header_style="bold")
    for column in ("request", "type", "channel", "received", "due", "days left", "status"):
        table.add_column(column, justify="right" if column == "days left" else "left")
    for r in requests:
        days = r.days_left(today)
        style = "bold red" if r.overdue(today) else ("yellow" if days is not None and days <= 7 else "")
        due = f"{r.effective_due}" + (" (extended)" if r.extended_due_date else "")
        table.add_row(
            r.request_id,
            r.request_type,
            r.channel,
            f"{r.received_at:%Y-%m-%d}",
            due,
            "-" if days is None else str(days),
            r.status + (" OVERDUE" if r.overdue(today) else ""),
            style=style,
        )
    console.print(table)


@dsr_app.command("extend")
def extend(
    request_id: Annotated[str, typer.Option("--request-id")],
    reason: Annotated[str, typer.Option("--reason", help="Why (complexity, number of requests); tell the person")],
) -> None:
    """Extend an open request by two further months (Art. 12(3)); only within the first month."""
    from governed_marketing import warehouse
    from governed_marketing.privacy import audit, dsr

    settings, policy, _ = _context()
    try:
        with warehouse.session(settings=settings) as conn:
            due = dsr.extend(conn, request_id, reason, policy=policy)
            audit.record(
                conn,
                actor=audit.ACTOR_CLI,
                action="dsr:extend",
                purpose="data_subject_rights",
                counts={"request_id": request_id, "new_due": due.isoformat()},
            )
    except dsr.DsrError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{request_id}: now due {due}. Tell the person, with the reason, before the first deadline.")


@dsr_app.command("lift")
def lift(request_id: Annotated[str, typer.Option("--request-id")]) -> None:
    """Lift a restriction: the person is processed again from the next run."""
    from governed_marketing import warehouse
    from governed_marketing.privacy import audit, dsr

    settings, _, _ = _context()
    try:
        with warehouse.session(settings=settings) as conn:
            moment = dsr.lift_restriction(conn, request_id)
            audit.record(
                conn,
                actor=audit.ACTOR_CLI,
                action="dsr:lift",
                purpose="data_subject_rights",
                counts={"request_id": request_id},
            )
    except dsr.DsrError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{request_id}: restriction lifted at {moment:%Y-%m-%d %H:%M} UTC")


def purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would go; remove nothing")] = False,
) -> None:
    """Apply the retention rules in governance.yml to every store, with counts as evidence."""
    from rich.table import Table

    from governed_marketing.policy import PolicyError
    from governed_marketing.privacy.retention import purge as run_purge

    settings, policy, _ = _context()
    try:
        result = run_purge(settings=settings, policy=policy, dry_run=dry_run)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    verb = "would remove" if dry_run else "removed"
    table = Table(title=f"Retention purge{' (dry run: nothing removed)' if dry_run else ''}", header_style="bold")
    for column in ("rule", "period", "cutoff", "store", verb):
        table.add_column(column, justify="right" if column == verb else "left")
    for outcome in result.rules:
        for store, n in (outcome.counts or {outcome.store: 0}).items():
            table.add_row(outcome.rule, outcome.period, f"{outcome.cutoff:%Y-%m-%d}", store, f"{n:,}")
        if outcome.note:
            table.add_row(outcome.rule, "", "", f"[dim]{outcome.note}[/]", "")
    console.print(table)


@audit_app.command("verify")
def verify() -> None:
    """Recompute the audit log's hash chain; exit 1 naming the first broken row."""
    from governed_marketing import warehouse
    from governed_marketing.privacy.audit import verify as verify_chain
    from governed_marketing.settings import get_settings

    settings = get_settings()
    if not warehouse.exists(settings):
        where = (
            f"Postgres database {settings.pg_database}" if warehouse.is_postgres(settings) else settings.warehouse_path
        )
        raise _fail(f"no warehouse at {where}")
    try:
        with warehouse.session(read_only=True, settings=settings) as conn:
            result = verify_chain(conn)
    except RuntimeError as exc:  # no audit key in production, or one too short: named by the message
        raise _fail(str(exc)) from None
    if not result.ok:
        raise _fail(result.one_line())
    console.print(f"[green]{result.one_line()}[/]", soft_wrap=True)
    console.print(f"checked at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
