"""`gmp`: the command line face of the library (a thin layer: every command calls one function)."""

from __future__ import annotations

import logging
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from governed_marketing.privacy import cli as privacy_cli

app = typer.Typer(help="Governed Marketing Pipelines: governed CRM -> audience -> content runs.", no_args_is_help=True)
crm_app = typer.Typer(help="CRM exports.", no_args_is_help=True)
policy_app = typer.Typer(help="governance.yml, the policy as code.", no_args_is_help=True)
app.add_typer(crm_app, name="crm")
app.add_typer(policy_app, name="policy")
app.add_typer(privacy_cli.dsr_app, name="dsr")
app.add_typer(privacy_cli.audit_app, name="audit")
app.command("purge")(privacy_cli.purge)

console = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@crm_app.command("generate")
def crm_generate(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the export to")],
    contacts: Annotated[int, typer.Option("--contacts", min=1, help="Number of contacts")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files)")] = 42,
    reference_date: Annotated[
        datetime | None,
        typer.Option(
            "--reference-date",
            formats=["%Y-%m-%d"],
            help="Subject requests are received in the weeks before this day (default: today)",
        ),
    ] = None,
) -> None:
    """Write a sample CRM export in the contract's four files, with the cases real CRMs have."""
    from governed_marketing.sample_data.crm_export import write_sample_export

    day = reference_date.date() if reference_date else None
    summary = write_sample_export(out, contacts=contacts, seed=seed, reference_date=day)
    console.print(f"Wrote a sample CRM export to {out}")
    console.print(summary)


@policy_app.command("check")
def policy_check(
    path: Annotated[Path | None, typer.Argument(help="governance.yml (default: the project's)")] = None,
) -> None:
    """Validate governance.yml and print what it allows."""
    from governed_marketing.policy import PolicyError, load_policy

    try:
        policy = load_policy(path)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    for campaign_id in policy.campaign_ids():
        purpose = policy.purpose_of(campaign_id)
        console.print(
            f"{campaign_id}: purpose {policy.campaigns[campaign_id].purpose} ({purpose.lawful_basis}), "
            f"consents {', '.join(purpose.requires_consent)}, fields {', '.join(purpose.fields)}"
        )
    console.print(f"[green]{policy.source_path} is valid[/]")
    from governed_marketing.policy import content_hash

    digest = content_hash(policy.source_path.read_text(encoding="utf-8"))
    reviewed = policy.review.policy.sha256 if policy.review else None
    state = "matches review.policy.sha256" if digest == reviewed else "record it as review.policy.sha256 once reviewed"
    console.print(f"content hash (without the review block): {digest} ({state})")


def _run(crm_dir: Path | None, as_of: str | None, source: str | None = None, *, rebuild: bool = False) -> None:
    from governed_marketing.crm.contract import ExportUnreadable, check_export
    from governed_marketing.generation.providers import build_provider, provider_description
    from governed_marketing.orchestration.pipeline_run import PipelineFailed, RunLocked, run_pipeline
    from governed_marketing.policy import PolicyError, load_policy
    from governed_marketing.settings import get_settings
    from governed_marketing.stopping import RunInterrupted
    from governed_marketing.summary import collect_summary, render_summary

    settings = get_settings()
    try:
        policy = load_policy()
        source = source or policy.ingest.source
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    if source == "csv" and crm_dir is None:
        raise _fail("no CRM export given: pass --crm DIR (or --source hubspot)")
    try:
        if source == "csv":
            check_export(crm_dir)  # a missing or empty export fails here, in a second, naming the path
    except ExportUnreadable as exc:
        raise _fail(str(exc)) from None
    try:
        provider = build_provider(settings, policy, vendor_allowed=True)
        _, key_source = settings.resolve_pseudonym_key()
    except (PolicyError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"GMP_HOME: {settings.home_dir}")
    console.print(f"Pseudonym key: {key_source}")
    transport = " via the Batch API" if settings.llm_mode == "batch" and provider.name != "offline" else ""
    console.print(f"Content provider: {provider_description(provider)}{transport}")

    def on_step(dag_id: str, state: str) -> None:
        style = {"running": "cyan", "success": "green", "failed": "bold red", "kept": "yellow"}[state]
        why = " (nothing it is made from changed since the last complete pass; --rebuild runs it)"
        console.print(f"  [{style}]{state:>7}[/]  {dag_id}{why if state == 'kept' else ''}")

    logging.basicConfig(level=logging.WARNING)
    try:
        run = run_pipeline(
            crm_dir if source == "csv" else None,
            as_of=as_of,
            settings=settings,
            on_step=on_step,
            source=source,
            rebuild=rebuild,
        )
    except RunLocked as exc:
        raise _fail(str(exc)) from None
    except RunInterrupted as exc:
        _fail(str(exc))
        # Everything is recorded (the ledger commits as it goes). Calls abandoned at the vendor still hold
        # their HTTP connections on daemon threads, and interpreter shutdown would wait for them while it
        # closes the connection pool: leave now, with 128 + SIGTERM as a shell reports it.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(143)
    except PipelineFailed as exc:
        if not exc.report_built:  # failed before a DAG's own report task could say why
            _rebuild_report(settings, failure=str(exc))
        raise _fail(str(exc)) from None
    summary = collect_summary(settings, list(run.dag_runs.values()), kept_run_ids=list(run.kept.values()))
    render_summary(summary, provider_line=provider_description(provider) + transport, console=console)
    console.print(f"Outbox: {settings.home_dir / 'outbox'}")
    console.print(_delivery_line(settings), soft_wrap=True)
    latest = settings.home_dir / "reports" / "index.html"  # each DAG's last task rebuilt it
    console.print(f"Compliance report: {latest if latest.is_file() else _rebuild_report(settings)}", soft_wrap=True)


def _delivery_line(settings) -> str:
    """What the deliver_campaign DAG did, or "deliver: off" when no SMTP relay is configured."""
    from governed_marketing import warehouse
    from governed_marketing.delivery.report import delivery_section
    from governed_marketing.orchestration.pipeline_run import delivery_configured

    if not delivery_configured(settings):
        return "deliver: off (no SMTP relay: set the Airflow connection smtp_default or GMP_SMTP_URL)"
    with warehouse.session(read_only=True, settings=settings) as conn:
        campaigns = delivery_section(conn)["campaigns"]
    return (
        "Delivered: "
        + "; ".join(
            f"{c['campaign_id']} {c['sent']:,} sent, {c['deferred']:,} deferred, {c['bounced']:,} bounced, "
            f"{c.get('undeliverable', 0):,} undeliverable (deferred too long), "
            f"{c['suppressed']:,} suppressed at send time"
            for c in campaigns
        )
        if campaigns
        else "Delivered: nothing (no campaign in governance.yml delivery.campaigns)"
    )


def _rebuild_report(settings, *, failure: str | None = None) -> str:
    """Rebuild $GMP_HOME/reports after a run; a failed run keeps its own one-line reason as the error."""
    from governed_marketing.report import build_report

    try:
        return str(build_report(settings, failure=failure))
    except Exception as exc:
        if failure is None:
            raise _fail(f"the compliance report could not be built: {exc}") from exc
        err.print(f"[yellow]warning:[/] the compliance report could not be built: {exc}", soft_wrap=True)
        return ""


@app.command("run")
def run(
    crm: Annotated[Path | None, typer.Option("--crm", help="Directory with the CRM export (contacts.csv, ...)")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 as-of time (default: now)")] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="csv (the --crm export) or hubspot (pull from HubSpot); default: ingest.source"),
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option("--rebuild", help="Run the models and content DAGs even when nothing they are made from changed"),
    ] = False,
) -> None:
    """One full pass through the Airflow DAGs: ingest, models, gates, generation, outbox."""
    if source not in (None, "csv", "hubspot"):
        raise _fail(f"--source {source!r}: csv or hubspot")
    _run(crm, as_of, source, rebuild=rebuild)


@app.command("demo")
def demo(
    contacts: Annotated[int, typer.Option("--contacts", min=50)] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 7,
) -> None:
    """Generate a sample CRM export under $GMP_HOME/demo_crm, then run the whole pipeline on it."""
    from governed_marketing.delivery.sink import local_sink
    from governed_marketing.orchestration.pipeline_run import RunLocked, run_lock
    from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF, write_sample_export
    from governed_marketing.settings import get_settings, reset_settings

    settings = get_settings()
    crm_dir = settings.path("demo_crm")
    try:
        with run_lock(settings):  # the export it rewrites is one a running pass may be reading
            write_sample_export(crm_dir, contacts=contacts, seed=seed)
            console.print(f"Sample CRM export ({contacts:,} contacts, seed {seed}) in {crm_dir}")
            # The sample's made-up addresses go to a local SMTP sink, never to a configured relay.
            sink_dir = settings.path("smtp_sink")
            with local_sink(sink_dir) as url:
                os.environ.pop("AIRFLOW_CONN_SMTP_DEFAULT", None)
                os.environ["GMP_SMTP_URL"] = url
                reset_settings()
                console.print(f"Local SMTP sink: {url.split('?')[0]} (messages kept in {sink_dir})")
                _run(crm_dir, SAMPLE_AS_OF.isoformat())
    except RunLocked as exc:
        raise _fail(str(exc)) from None


@app.command("deliver")
def deliver(
    campaign: Annotated[str | None, typer.Option("--campaign", help="One campaign (default: every one)")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 as-of time (default: now)")] = None,
) -> None:
    """Send the outbox by SMTP through GMP_SMTP_URL now, as the deliver_campaign DAG does (counts only)."""
    from datetime import UTC, datetime

    from governed_marketing.delivery.sender import Relay
    from governed_marketing.orchestration.pipeline_run import RunLocked, run_lock
    from governed_marketing.orchestration.task_bodies import campaign_ids
    from governed_marketing.orchestration.task_bodies import deliver as deliver_body
    from governed_marketing.settings import get_settings

    settings = get_settings()
    url = settings.smtp_url.get_secret_value() if settings.smtp_url else ""
    if not url:
        console.print(
            "deliver: off (no SMTP relay: set GMP_SMTP_URL, or the Airflow connection smtp_default for the DAG)"
        )
        return
    try:
        relay = Relay.from_url(url)
        run_id = f"gmp-deliver-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
        with run_lock(settings):
            for campaign_id in [campaign] if campaign else campaign_ids():
                counts = deliver_body(campaign_id, run_id=run_id, as_of=as_of, relay=relay)
                console.print(f"{campaign_id}: {counts}")
    except (RunLocked, ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None


@app.command("report")
def report() -> None:
    """Rebuild the compliance report ($GMP_HOME/reports) from the latest run's evidence; print its path."""
    from governed_marketing.policy import PolicyError
    from governed_marketing.report import build_report
    from governed_marketing.settings import get_settings

    try:
        path = build_report(get_settings())
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    typer.echo(str(path))


@app.command("assess")
def assess(
    as_json: Annotated[bool, typer.Option("--json", help="Print the assessment as JSON")] = False,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="ISO 8601 date or time to assess at (default: now)")
    ] = None,
) -> None:
    """Run the regular assessment: findings from the policy and the data, recorded in the audit log."""
    import json

    from governed_marketing.assessment import assess as run_assessment
    from governed_marketing.policy import PolicyError

    try:
        moment = datetime.fromisoformat(as_of) if as_of else None
    except ValueError:
        raise _fail(f"--as-of: {as_of!r} is not an ISO 8601 date or time") from None
    try:
        result = run_assessment(now=moment)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
        return
    if not result.findings:
        console.print("[green]clean: no findings[/]")
    typer.echo(f"regular assessment at {result.assessed_at:%Y-%m-%d %H:%M}: {len(result.findings)} finding(s)")
    for f in result.findings:  # one line each: severity, code, owner, subject, due; then what and why
        typer.echo(f"{f.severity:<9} {f.code:<34} {f.owner:<15} {f.subject}  due {f.due}\n          {f.message}")
    console.print(f"report readers: {result.access['summary']}")
    if result.next_due:
        nxt = result.next_due[0]
        console.print(f"next review due: {nxt['what']} on {nxt['due']} ({nxt['owner']})")
    if result.audit_seq is not None:
        console.print(f"recorded in the audit log as seq {result.audit_seq}")


@app.command("dbt-parse")
def dbt_parse() -> None:
    """Write dbt_project/target/manifest.json, from which Cosmos renders the model DAG."""
    from governed_marketing.dbt import ensure_manifest

    path = ensure_manifest(force=True)
    console.print(f"dbt manifest: {path}")


@app.command(
    "airflow",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def airflow_cli(ctx: typer.Context) -> None:
    """Run an `airflow` command with this project's DAGs, plugins and AIRFLOW_HOME=$GMP_HOME/airflow.

    `gmp airflow standalone` starts the UI with the scheduler, sized for a small machine, with the
    project's DAGs unpaused; once the UI answers it prints where and how to log in. The metadata DB is
    migrated and the warehouse pool created first.
    """
    from governed_marketing.dbt import ensure_manifest
    from governed_marketing.orchestration.pipeline_run import (
        airflow_environment,
        prepare_airflow,
        standalone_environment,
    )
    from governed_marketing.settings import get_settings

    settings = get_settings()
    settings.resolve_pseudonym_key()
    ensure_manifest(settings)
    standalone = ctx.args[:1] == ["standalone"]
    extra = standalone_environment(settings) if standalone else {}
    os.environ.update(extra)  # before Airflow reads its configuration in prepare_airflow
    prepare_airflow(settings)
    env = {**os.environ, **airflow_environment(settings), **extra}
    console.print(f"AIRFLOW_HOME={env['AIRFLOW_HOME']}  DAGs: {env['AIRFLOW__CORE__DAGS_FOLDER']}")
    airflow = Path(sys.executable).with_name("airflow")
    if not standalone:
        os.execve(str(airflow), [str(airflow), *ctx.args], env)  # noqa: S606 - replace this process with airflow
    from governed_marketing.orchestration.pipeline_run import unpause_dags

    unpaused = unpause_dags()
    console.print(
        "The pipeline's DAGs start unpaused (AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False)"
        + (f"; unpaused {', '.join(unpaused)}" if unpaused else "")
    )
    raise typer.Exit(_run_standalone([str(airflow), *ctx.args], env))


def _login_banner(env: dict[str, str]) -> str:
    host = env.get("AIRFLOW__API__HOST") or "localhost"
    host = "localhost" if host in ("0.0.0.0", "::") else host  # noqa: S104 - only displayed
    url = f"http://{host}:{env.get('AIRFLOW__API__PORT') or '8080'}"
    users = env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    user = users.split(",")[0].split(":")[0]
    return (
        f"\nAirflow is up: {url}\n"
        f"Log in as user `{user}`; the password is in {env['AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE']}\n"
        "(written by Airflow at the first start; it stays the same afterwards). Stop with Ctrl-C.\n"
    )


def _run_standalone(argv: list[str], env: dict[str, str], *, ready_timeout: float = 600.0) -> int:
    """Run `airflow standalone`; when the UI answers, print the URL and the login below its start-up noise."""
    import signal
    import socket
    import subprocess
    import threading
    import time

    process = subprocess.Popen(argv, env=env)  # noqa: S603 - our own venv's airflow
    port = int(env.get("AIRFLOW__API__PORT") or 8080)
    host = env.get("AIRFLOW__API__HOST") or "127.0.0.1"
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104 - the address we probe

    def announce() -> None:
        deadline = time.monotonic() + ready_timeout
        passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with socket.create_connection((host, port), timeout=1):
                    if passwords.exists():
                        time.sleep(2)  # let the start-up messages pass first
                        console.print(_login_banner(env), style="bold green", highlight=False)
                        return
            except OSError:
                pass
            time.sleep(2)

    threading.Thread(target=announce, daemon=True).start()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda sig, _frame: process.send_signal(sig))
    return process.wait()


def main() -> None:  # pragma: no cover - console entry point
    from governed_marketing.settings import restrict_process_umask

    restrict_process_umask()  # everything gmp writes under GMP_HOME is personal data: owner-only
    os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
