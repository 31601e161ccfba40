"""The DAG tasks' bodies as plain functions: what each task calls, in one or two lines.

Plain Python (no Airflow import), so scripts, benchmarks and tests call the same bodies the DAGs do.
Every body returns counts (never rows) and records them in `ops.pipeline_steps` (`runs.record_step`),
which the summary and the report read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from governed_marketing import warehouse
from governed_marketing.policy import load_policy
from governed_marketing.privacy import audit
from governed_marketing.runs import parse_as_of, record_step
from governed_marketing.settings import get_settings


def ingest(crm_dir: str | Path | None, *, run_id: str) -> dict:
    """Load the CRM export (DAG param, else GMP_CRM_DIR) into the raw tables, and write what dbt needs
    besides them: the governance tables and the keyed pseudonym function (warehouse.governance)."""
    from governed_marketing.crm.contract import check_export

    settings = get_settings()
    source = crm_dir or settings.crm_dir
    if not source:
        raise ValueError("no CRM export given: pass crm_dir in the DAG run conf or set GMP_CRM_DIR")
    check_export(source)  # ExportUnreadable (missing, headers only) before any heavy import or work
    from governed_marketing.crm.ingest import ingest_export
    from governed_marketing.warehouse.governance import prepare_for_dbt

    policy = load_policy()
    with warehouse.session(settings=settings) as conn:
        try:
            result = ingest_export(Path(source), conn=conn, policy=policy, landing_root=settings.path("landing"))
        except Exception as exc:
            record_step(conn, run_id, "ingest", "crm", {"failed": str(exc)})
            raise
        prepare_for_dbt(conn, policy, settings.resolve_pseudonym_key()[0])
        counts = result.counts()
        record_step(conn, run_id, "ingest", "crm", counts)
        audit.record_step(conn, run_id, "ingest", "crm", counts)  # hash-chained, counts only
    return counts


def ingest_drop(crm_dir: str | Path | None, *, run_id: str) -> dict:
    """The DAG's ingest: the export in `crm_dir`, else the drop folder (GMP_CRM_DIR, else
    $GMP_HOME/crm_exports/latest). No export there is ExportUnreadable: a retry cannot make one appear.

    Returns the ingest's counts; `already_loaded` is true when this very export was loaded before.
    """
    from governed_marketing.errors import ExportUnreadable

    source = Path(crm_dir).expanduser() if crm_dir else get_settings().crm_drop_dir
    if not source.is_dir():
        how = "" if crm_dir else " (the scheduled run reads GMP_CRM_DIR, else $GMP_HOME/crm_exports/latest)"
        raise ExportUnreadable(f"{source}: no CRM export there{how}; drop the export's CSV files in it")
    return ingest(source, run_id=run_id)


def ingest_from_source(
    source: str | None,
    crm_dir: str | Path | None,
    *,
    run_id: str,
    hubspot_token: Callable[[], str | None] | None = None,
) -> dict:
    """The DAG's ingest from the chosen source: the `source` param, else governance.yml `ingest.source`.

    `hubspot_token` reads the Airflow connection, asked only when HubSpot is the source.
    """
    if (source or load_policy().ingest.source) == "hubspot":
        return ingest_hubspot(run_id=run_id, token=hubspot_token() if hubspot_token else None)
    return ingest_drop(crm_dir, run_id=run_id)


def ingest_hubspot(*, run_id: str, token: str | None = None, full: bool = False) -> dict:
    """Pull what changed in HubSpot (crm.hubspot), load it as a CRM export through `ingest`, then settle
    merges, deleted contacts and the cursor. Nothing changed: `already_loaded` (no downstream run)."""
    import shutil

    from governed_marketing.crm import hubspot

    settings = get_settings()
    policy = load_policy()
    secret = settings.hubspot_access_token
    client = hubspot.client_for(token or (secret.get_secret_value() if secret else None), settings.hubspot_base_url)
    with warehouse.session(settings=settings) as conn:
        pulled = hubspot.pull(conn, policy, client, out_root=settings.path("crm_exports", "hubspot"), full=full)
    counts: dict[str, Any] = {"load_id": pulled.pull_id, "already_loaded": True, "contacts_read": 0}
    try:
        if pulled.export_dir is not None:
            counts = ingest(pulled.export_dir, run_id=run_id)
    finally:  # loaded: landing/<load_id>/ keeps the copy; failed: the next pull asks again from the cursor
        if pulled.export_dir is not None:
            shutil.rmtree(pulled.export_dir, ignore_errors=True)
    with warehouse.session(settings=settings) as conn:
        hubspot.settle(conn, pulled, run_id=run_id)
        record_step(conn, run_id, "ingest", "hubspot", {"mode": pulled.mode, **pulled.counts})
    return {**counts, "hubspot": {"mode": pulled.mode, **pulled.counts}}


def inform_crm(*, run_id: str, token: str | None = None) -> dict:
    """Send HubSpot what requests completed here ask of it (crm.hubspot_upstream): GDPR deletes, unsubscribes."""
    from governed_marketing.crm import hubspot, hubspot_upstream

    settings = get_settings()
    with warehouse.session(settings=settings) as conn:
        waiting = conn.execute("select count(*) from ops.crm_upstream where status = 'pending'").fetchall()[0][0]
        if not waiting:
            return {"sent": 0, "failed": 0, "waiting": 0}
        secret = settings.hubspot_access_token
        client = hubspot.client_for(token or (secret.get_secret_value() if secret else None), settings.hubspot_base_url)
        counts = hubspot_upstream.send_pending(conn, client, load_policy(), home=settings.home_dir)
        counts["requests"] = client.counts.made
        record_step(conn, run_id, "privacy_requests", "crm_upstream", counts)
        audit.record_step(conn, run_id, "privacy_requests", "crm_upstream", counts)
    return counts


def campaign_ids() -> list[str]:
    return load_policy().campaign_ids()


@dataclass
class GenerationSetup:
    """Who drafts a campaign, read from settings and governance.yml at each step."""

    settings: Any
    policy: Any
    provider: Any  # the ContentProvider (offline templates or the sync OpenAI provider)
    transport: str  # offline | sync | batch

    @property
    def vendor(self) -> str:
        return self.provider.name

    @property
    def model(self) -> str:
        return self.provider.model


def _generation_setup(campaign_id: str) -> GenerationSetup:
    from governed_marketing.generation.providers import build_provider

    settings = get_settings()
    policy = load_policy()
    vendor_allowed = "openai" in policy.purpose_of(campaign_id).vendors
    # The provider is chosen as for sync; batch mode then sends the same requests as a vendor batch.
    provider = build_provider(settings, policy, vendor_allowed=vendor_allowed)
    transport = "offline" if provider.name == "offline" else ("batch" if settings.llm_mode == "batch" else "sync")
    return GenerationSetup(settings, policy, provider, transport)


def _stage(step: str, campaign_id: str, *, run_id: str, as_of: str | datetime | None, work: Callable, **kwargs) -> dict:
    """Run one generation stage in a warehouse session; record its counts (or its failure reason).

    `work(campaign_id, conn=, policy=, as_of=, run_id=, **kwargs)` is a generation.* stage function.
    """
    settings = get_settings()
    with warehouse.session(settings=settings) as conn:
        try:
            outcome = work(
                campaign_id, conn=conn, policy=load_policy(), as_of=parse_as_of(as_of), run_id=run_id, **kwargs
            )
        except Exception as exc:
            record_step(conn, run_id, step, campaign_id, {"failed": str(exc)})
            raise
        counts = outcome if isinstance(outcome, dict) else outcome.counts()
        record_step(conn, run_id, step, campaign_id, counts)
        audit.record_step(conn, run_id, step, campaign_id, counts)  # hash-chained, counts only
    return counts


def prepare_generation(campaign_id: str, *, run_id: str, as_of: str | datetime | None) -> dict:
    """Audience gate, ledger intent and budget check for one campaign (see generation.campaign)."""
    from governed_marketing.generation.campaign import prepare_campaign

    setup = _generation_setup(campaign_id)
    return _stage(
        "generate.prepare",
        campaign_id,
        run_id=run_id,
        as_of=as_of,
        work=prepare_campaign,
        provider=setup.vendor,
        model=setup.model,
        transport=setup.transport,
    )


def draft_generation(campaign_id: str, *, run_id: str, as_of: str | datetime | None) -> dict:
    """Draft the units still to do: in this process (offline, sync) or as a vendor batch.

    Returns counts; in batch mode they include `batch_ids` to wait for (possibly re-attached ones).
    """
    from governed_marketing.generation.batch_flow import submit_campaign_batch
    from governed_marketing.generation.sync_flow import draft_sync

    setup = _generation_setup(campaign_id)
    if setup.transport == "batch":  # re-attach to batches in flight, submit what is still to do
        return _stage(
            "generate.draft",
            campaign_id,
            run_id=run_id,
            as_of=as_of,
            work=submit_campaign_batch,
            provider=setup.vendor,
            model=setup.model,
        )
    return _stage(
        "generate.draft",
        campaign_id,
        run_id=run_id,
        as_of=as_of,
        work=draft_sync,
        provider=setup.provider,
        transport=setup.transport,
    )


def collect_batches(campaign_id: str, batch_ids: list[str], *, run_id: str, as_of: str | datetime | None) -> dict:
    """Batch mode: read finished batches into the ledger; resubmit what is missing (new batch ids)."""
    from governed_marketing.generation.batch_flow import collect_campaign_batches

    setup = _generation_setup(campaign_id)
    return _stage(
        "generate.collect",
        campaign_id,
        run_id=run_id,
        as_of=as_of,
        work=lambda cid, **kw: collect_campaign_batches(cid, batch_ids, **kw),
        provider=setup.vendor,
        model=setup.model,
    )


def publish_generation(campaign_id: str, *, run_id: str, as_of: str | datetime | None) -> dict:
    """Consent re-check, names merged locally, content gate, outbox."""
    from governed_marketing.generation.publish import publish_campaign

    setup = _generation_setup(campaign_id)
    return _stage(
        "generate",
        campaign_id,
        run_id=run_id,
        as_of=as_of,
        work=publish_campaign,
        provider=setup.vendor,
        model=setup.model,
        transport=setup.transport,
        outbox_root=setup.settings.path("outbox"),
    )


def approval_preview(campaign_id: str) -> dict:
    """What a human approver sees: counts and the drafts (placeholders, no names), never recipients."""
    from governed_marketing.generation.approval import preview

    setup = _generation_setup(campaign_id)
    with warehouse.session(read_only=True, settings=setup.settings) as conn:
        return preview(conn, setup.policy, campaign_id, model=setup.model)


def generate(campaign_id: str, *, run_id: str, as_of: str | datetime | None) -> dict:
    """All three stages in one call (prepare, draft in this process, publish): for scripts and benchmarks.

    Batch mode needs the deferring DAG task; here it drafts synchronously.
    """
    from governed_marketing.generation.run import run_campaign

    setup = _generation_setup(campaign_id)
    return _stage(
        "generate",
        campaign_id,
        run_id=run_id,
        as_of=as_of,
        work=run_campaign,
        provider=setup.provider,
        outbox_root=setup.settings.path("outbox"),
        transport="offline" if setup.transport == "offline" else "sync",
    )


def deliver(campaign_id: str, *, run_id: str, as_of: str | datetime | None, relay: Any) -> dict:
    """Send one campaign's outbox by SMTP (delivery.sender); {"deliver": "off"} without a relay or policy."""
    from governed_marketing.delivery.sender import deliver_campaign
    from governed_marketing.delivery.unsubscribe import SPOOL_DIR, apply_pending

    settings = get_settings()
    policy = load_policy()
    if relay is None or policy.delivery is None or campaign_id not in policy.delivery.campaigns:
        return {"deliver": "off"}
    key = settings.resolve_pseudonym_key()[0]
    spool = settings.home_dir / SPOOL_DIR
    return _stage(
        "deliver",
        campaign_id,
        run_id=run_id,
        as_of=as_of,
        work=deliver_campaign,
        relay=relay,
        outbox_root=settings.path("outbox"),
        delivery_key=settings.resolve_delivery_key(),
        pseudonym_key=key,
        apply_unsubscribes=lambda conn: apply_pending(conn, spool, policy=policy, pseudonym_key=key),
    )
