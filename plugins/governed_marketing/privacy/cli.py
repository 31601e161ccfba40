"""`gmp dsr ...`, `gmp purge`, `gmp audit verify`: the privacy commands, a thin face over the library.

Nothing here prints an email, a name or request details: requests are shown by id, type and dates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

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
    """Answer every request received by now, whatever --as-of: exports, corrections, suppression, verified erasure.

    --as-of fixes eligibility for reproducibility; it never delays a right.
    """
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
    left = result.get("left_open", [])
    console.print(f"Answered {result.get('answered', 0)} request(s); {len(left)} left open", highlight=False)
    for entry in left:
        console.print(
            f"  [yellow]{entry['status']:>13}[/]  {entry['request_id']}  {escape(entry['reason'])}", soft_wrap=True
        )
    failed = result.get("failed", [])
    if failed:
        raise _fail(f"{len(failed)} erasure(s) not verified: the scan still found identifiers; see the receipts")


def _table(title: str):
    """A table that fits 80 columns: light borders, long text folded, never cut with an ellipsis."""
    from rich import box
    from rich.table import Table

    return Table(
        title=title,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        title_justify="left",
    )


def _notes(rows: list[tuple[str, str]]) -> None:
    """Notes under a table, one per id: the id whole, the text wrapped beside it."""
    from rich.table import Table

    if not rows:
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for key, text in rows:
        grid.add_row(f"{key}:", escape(text))
    console.print(grid)


@dsr_app.command("list")
def list_requests(
    open_only: Annotated[bool, typer.Option("--open", help="Only requests still open")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document (for scripts and pipes)")] = False,
) -> None:
    """Requests with their status, due date, days left and why any is open (no emails: ids, types, dates)."""
    import json

    from governed_marketing import warehouse
    from governed_marketing.privacy import dsr
    from governed_marketing.runs import parse_as_of

    settings, policy, key = _context()
    now = parse_as_of(None)
    with warehouse.session(settings=settings) as conn:
        dsr.sync_ledger(conn, policy=policy, key=key, as_of=now)
        requests = dsr.list_requests(conn, include_closed=not open_only)
    today = now.date()
    if as_json:
        rows = [r.as_json(today) for r in requests]
        typer.echo(json.dumps({"today": today.isoformat(), "requests": rows}, indent=2))
        return
    table = _table(f"Data subject requests (today {today}, UTC)")
    width = max((len(r.request_id) for r in requests), default=7)
    table.add_column("request", no_wrap=True, min_width=width)
    table.add_column("type", overflow="fold")
    table.add_column("received", no_wrap=True, min_width=10)
    table.add_column("due", min_width=10)
    table.add_column("left", justify="right", overflow="fold")
    table.add_column("status", overflow="fold")
    notes = []
    for r in requests:
        days = r.days_left(today)
        style = "bold red" if r.overdue(today) else ("yellow" if days is not None and days <= 7 else "")
        due = f"{r.effective_due}" + (" extended" if r.extended_due_date else "")
        table.add_row(
            r.request_id,
            r.request_type,
            f"{r.received_at:%Y-%m-%d}",
            due,
            "-" if days is None else str(days),
            r.status + (" OVERDUE" if r.overdue(today) else ""),
            style=style,
        )
        if note := r.note(now):
            notes.append((r.request_id, note))
    console.print(table)
    _notes(notes)


@dsr_app.command("resolve")
def resolve(
    request_id: Annotated[str, typer.Argument(help="The rectification waiting in needs_review")],
    approve: Annotated[bool, typer.Option("--approve", help="Apply the corrected value (with --value)")] = False,
    value: Annotated[
        str | None, typer.Option("--value", help='JSON object of corrected fields, e.g. \'{"last_name": "..."}\'')
    ] = None,
    reject: Annotated[bool, typer.Option("--reject", help="Refuse, with --reason (the person is told)")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why it is refused: told to the person")] = None,
) -> None:
    """Resolve a rectification in needs_review: --approve --value JSON, or --reject --reason TEXT."""
    from governed_marketing import warehouse
    from governed_marketing.privacy import audit, dsr

    if approve == reject:
        raise _fail("pass exactly one of --approve or --reject")
    if approve and not value:
        raise _fail('--approve needs --value, e.g. --value \'{"last_name": "Corrected"}\'')
    if reject and not (reason and reason.strip()):
        raise _fail("--reject needs --reason: the person is told why (GDPR Art. 12(4))")
    settings, policy, _ = _context()
    try:
        with warehouse.session(settings=settings) as conn:
            outcome = dsr.resolve_rectification(
                conn,
                request_id,
                approve=value if approve else None,
                reject_reason=reason if reject else None,
                home=settings.home_dir,
                policy=policy,
            )
            counts = {"request_id": request_id, "resolution": outcome["resolution"]}
            if approve:
                counts |= {"fields": outcome["fields"], "contact_rows": outcome["contact_rows"]}
            else:
                counts["answer"] = outcome["answer"]
            audit.record(
                conn, actor=audit.ACTOR_CLI, action="dsr:resolve", purpose="data_subject_rights", counts=counts
            )
    except dsr.DsrError as exc:
        raise _fail(str(exc)) from None
    if approve:
        fields = ", ".join(outcome["fields"])
        console.print(
            f"{request_id}: approved; {fields} corrected on {outcome['contact_rows']} contact row(s) "
            "(the models follow on the next run)",
            soft_wrap=True,
            highlight=False,
        )
    else:
        answer = settings.home_dir / outcome["answer"]
        console.print(f"{request_id}: rejected; the answer to send the person: {answer}", soft_wrap=True)


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
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document (for scripts and pipes)")] = False,
) -> None:
    """Apply the retention rules in governance.yml to every store, with counts as evidence."""
    import json

    from governed_marketing.policy import PolicyError
    from governed_marketing.privacy.retention import purge as run_purge

    settings, policy, _ = _context()
    try:
        result = run_purge(settings=settings, policy=policy, dry_run=dry_run)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        rules = [
            {
                "rule": o.rule,
                "period": o.period,
                "cutoff": o.cutoff.isoformat(),
                "counts": o.counts,
                "total": o.total,
                "note": o.note or None,
            }
            for o in result.rules
        ]
        document = {"run_at": result.run_at.isoformat(), "dry_run": dry_run, "rules": rules}
        typer.echo(json.dumps(document, indent=2))
        return
    verb = "would go" if dry_run else "removed"
    table = _table(f"Retention purge{' (dry run: nothing removed)' if dry_run else ''}")
    table.add_column("rule", overflow="fold")
    table.add_column("period", overflow="fold")
    table.add_column("cutoff", overflow="fold")
    table.add_column("store", overflow="fold")
    table.add_column(verb, justify="right", no_wrap=True)
    notes = []
    for outcome in result.rules:
        for store, n in (outcome.counts or {outcome.store: 0}).items():
            table.add_row(outcome.rule, outcome.period, f"{outcome.cutoff:%Y-%m-%d}", store, f"{n:,}")
        if outcome.note:
            notes.append((outcome.rule, outcome.note))
    console.print(table)
    _notes(notes)


@audit_app.command("verify")
def verify() -> None:
    """Recompute the audit log's hash chain; exit 1 naming the first broken row."""
    from governed_marketing import warehouse
    from governed_marketing.privacy.audit import verify as verify_chain
    from governed_marketing.settings import get_settings

    settings = get_settings()
    if not warehouse.exists(settings):
        raise _fail(f"no warehouse at {warehouse.describe(settings)}")
    try:
        with warehouse.session(read_only=True, settings=settings) as conn:
            result = verify_chain(conn)
    except RuntimeError as exc:  # no audit key in production, or one too short: named by the message
        raise _fail(str(exc)) from None
    if not result.ok:
        raise _fail(result.one_line())
    console.print(f"[green]{result.one_line()}[/]", soft_wrap=True)
    console.print(f"checked at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
