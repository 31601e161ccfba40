"""`gmp`: the command line face of the library (a thin layer: every command calls one function)."""

from __future__ import annotations

import logging
import os
import sys
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
) -> None:
    """Write a sample CRM export in the contract's four files, with the cases real CRMs have."""
    from governed_marketing.crm.generate import write_sample_export

    summary = write_sample_export(out, contacts=contacts, seed=seed)
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


def _run(crm_dir: Path, as_of: str | None) -> None:
    from governed_marketing.generation.providers import build_provider, provider_description
    from governed_marketing.policy import PolicyError, load_policy
    from governed_marketing.runner import PipelineFailed, RunLocked, run_pipeline
    from governed_marketing.settings import get_settings
    from governed_marketing.stopping import RunInterrupted
    from governed_marketing.summary import collect_summary, render_summary

    settings = get_settings()
    try:
        policy = load_policy()
        provider = build_provider(settings, policy, vendor_allowed=True)
        _, key_source = settings.resolve_pseudonym_key()
    except (PolicyError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    console.print(f"GMP_HOME: {settings.home_dir}")
    console.print(f"Pseudonym key: {key_source}")
    transport = " via the Batch API" if settings.llm_mode == "batch" and provider.name != "offline" else ""
    console.print(f"Content provider: {provider_description(provider)}{transport}")

    def on_step(dag_id: str, state: str) -> None:
        style = {"running": "cyan", "success": "green", "failed": "bold red"}[state]
        console.print(f"  [{style}]{state:>7}[/]  {dag_id}")

    logging.basicConfig(level=logging.WARNING)
    try:
        run = run_pipeline(crm_dir, as_of=as_of, settings=settings, on_step=on_step)
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
        _rebuild_report(settings, failure=str(exc))  # the report shows why the run stopped
        raise _fail(str(exc)) from None
    summary = collect_summary(settings, list(run.dag_runs.values()))
    render_summary(summary, provider_line=provider_description(provider) + transport, console=console)
    console.print(f"Outbox: {settings.home_dir / 'outbox'}")
    console.print(f"Compliance report: {_rebuild_report(settings)}", soft_wrap=True)


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
    crm: Annotated[Path, typer.Option("--crm", help="Directory with the CRM export (contacts.csv, ...)")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="ISO 8601 as-of time (default: now)")] = None,
) -> None:
    """One full pass through the Airflow DAGs: ingest, models, gates, generation, outbox."""
    _run(crm, as_of)


@app.command("demo")
def demo(
    contacts: Annotated[int, typer.Option("--contacts", min=50)] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 7,
) -> None:
    """Generate a sample CRM export under $GMP_HOME/demo_crm, then run the whole pipeline on it."""
    from governed_marketing.crm.generate import SAMPLE_AS_OF, write_sample_export
    from governed_marketing.runner import RunLocked, run_lock
    from governed_marketing.settings import get_settings

    settings = get_settings()
    crm_dir = settings.path("demo_crm")
    try:
        with run_lock(settings):  # the export it rewrites is one a running pass may be reading
            write_sample_export(crm_dir, contacts=contacts, seed=seed)
            console.print(f"Sample CRM export ({contacts:,} contacts, seed {seed}) in {crm_dir}")
            _run(crm_dir, SAMPLE_AS_OF.isoformat())
    except RunLocked as exc:
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

    `gmp airflow standalone` starts the UI with the scheduler; the metadata DB is migrated and the
    warehouse pool created first.
    """
    from governed_marketing.dbt import ensure_manifest
    from governed_marketing.runner import airflow_environment, prepare_airflow
    from governed_marketing.settings import get_settings

    settings = get_settings()
    settings.resolve_pseudonym_key()
    ensure_manifest(settings)
    prepare_airflow(settings)
    env = {**os.environ, **airflow_environment(settings)}
    console.print(f"AIRFLOW_HOME={env['AIRFLOW_HOME']}  DAGs: {env['AIRFLOW__CORE__DAGS_FOLDER']}")
    airflow = Path(sys.executable).with_name("airflow")
    os.execve(str(airflow), [str(airflow), *ctx.args], env)  # noqa: S606 - replace this process with airflow


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
