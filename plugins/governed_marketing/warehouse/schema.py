"""Every table of the `raw` and `ops` schemas, created in one place, once per open of the warehouse.

`ensure(conn)` runs when `warehouse.session()` or `warehouse.connect()` opens a warehouse for
writing. It compares the hash of this module's DDL with the one stored in ops.warehouse_schema and
does nothing when they match, so opening costs one query, not twenty `create table if not exists`
on every recorded step. The `governance` schema is not here: it is derived from governance.yml
(warehouse.governance). The SQL is accepted by DuckDB and Postgres alike.
"""

from __future__ import annotations

import hashlib

from governed_marketing.warehouse.base import Warehouse

SCHEMAS = ("raw", "ops")

#: the CRM export's raw layer, the quarantine and the load ledger (crm.ingest)
RAW_LAYER_DDL = """
create table if not exists raw.crm_contacts (
    contact_id varchar primary key,
    email varchar not null,
    email_normalized varchar not null,
    first_name varchar, last_name varchar, phone varchar,
    birth_date date,
    country varchar, language varchar, city varchar, lifecycle_stage varchar,
    interests varchar, notes varchar,
    created_at timestamp, updated_at timestamp not null,
    load_id varchar not null
);
create table if not exists raw.crm_consent_events (
    event_id varchar primary key,
    contact_id varchar not null,
    purpose varchar not null,
    action varchar not null,
    source varchar, notice_version varchar,
    occurred_at timestamp not null,
    load_id varchar not null
);
create table if not exists raw.crm_activity (
    event_id varchar primary key,
    contact_id varchar not null,
    event_type varchar not null,
    product_category varchar,
    amount decimal(12, 2),
    occurred_at timestamp not null,
    load_id varchar not null
);
create table if not exists raw.crm_dsr_requests (
    request_id varchar primary key,
    email_normalized varchar not null,
    request_type varchar not null,
    details varchar,
    received_at timestamp not null,
    channel varchar not null,
    load_id varchar not null
);
create table if not exists raw.quarantine (
    load_id varchar not null,
    file_name varchar not null,
    line_number bigint not null,
    reason varchar not null,
    raw_record varchar,
    quarantined_at timestamp not null,
    primary key (load_id, file_name, line_number)
);
create table if not exists ops.crm_loads (
    load_id varchar primary key,
    export_sha256 varchar not null unique,
    source_dir_name varchar,
    loaded_at timestamp not null,
    files_json varchar not null
);
"""

#: what each pipeline step did, counts only (pipeline.record_step)
OPS_PIPELINE_STEPS_DDL = """
create table if not exists ops.pipeline_steps (
    run_id varchar not null,
    step varchar not null,
    subject varchar not null,
    counts_json varchar not null,
    recorded_at timestamp not null,
    primary key (run_id, step, subject)
);
"""

#: every gate result, pass or fail (validation.evidence)
OPS_GATE_RESULTS_DDL = """
create table if not exists ops.gate_results (
    run_id varchar not null,
    gate varchar not null,
    subject varchar not null,
    success boolean not null,
    rows bigint not null,
    result_json varchar not null,
    validated_at timestamp not null
);
"""

#: the audience re-check's pseudonyms while GX reads them in the database (validation.audience)
OPS_AUDIENCE_RECHECK_DDL = """
create table if not exists ops.audience_recheck (
    run_id varchar not null,
    campaign_id varchar not null,
    recipient_pseudonym varchar not null,
    primary key (run_id, campaign_id, recipient_pseudonym)
);
"""

#: one row per unit sent or to send to the vendor (generation.ledger)
OPS_GENERATION_LEDGER_DDL = """
create table if not exists ops.generation_ledger (
    campaign_id varchar not null,
    unit_id varchar not null,
    prompt_version varchar not null,
    model varchar not null,
    custom_id varchar not null unique,
    unit_kind varchar not null,
    provider varchar not null,
    transport varchar not null,
    status varchar not null,
    attempts integer not null default 0,
    vendor_batch_id varchar,
    vendor_request_id varchar,
    estimated_input_tokens bigint,
    estimated_output_tokens bigint,
    estimated_cost_usd double precision,
    input_tokens bigint not null default 0,
    output_tokens bigint not null default 0,
    cost_usd double precision not null default 0,
    last_error_kind varchar,
    last_error varchar,
    run_id varchar,
    planned_at timestamp not null,
    submitted_at timestamp,
    finished_at timestamp,
    primary key (campaign_id, unit_id, prompt_version, model)
);
"""

#: the accepted drafts (generation.ledger)
OPS_GENERATED_CONTENT_DDL = """
create table if not exists ops.generated_content (
    campaign_id varchar not null,
    unit_id varchar not null,
    prompt_version varchar not null,
    provider varchar not null,
    model varchar not null,
    language varchar not null,
    subject varchar not null,
    preheader varchar,
    body varchar not null,
    input_tokens bigint not null,
    output_tokens bigint not null,
    vendor_request_id varchar,
    generated_at timestamp not null,
    primary key (campaign_id, unit_id, prompt_version, model)
);
"""

#: data subject requests and their deadlines (privacy.dsr)
OPS_DSR_REQUESTS_DDL = """
create table if not exists ops.dsr_requests (
    request_id varchar primary key,
    request_type varchar not null,
    channel varchar not null,
    subject_ref varchar not null,
    received_at timestamp not null,
    due_date date not null,
    extended_due_date date,
    extension_reason varchar,
    status varchar not null,
    closed_at timestamp,
    outcome_json varchar,
    updated_at timestamp not null
);
"""

#: keyed HMACs of erased or objecting people, and what the ingest door dropped (privacy.suppression)
OPS_SUPPRESSION_DDL = """
create table if not exists ops.suppression (
    subject_hmac varchar not null,
    identifier varchar not null,
    reason varchar not null,
    request_id varchar,
    added_at timestamp not null,
    primary key (subject_hmac, identifier)
);
create table if not exists ops.suppression_door (
    load_id varchar not null,
    file_name varchar not null,
    rows_dropped bigint not null,
    recorded_at timestamp not null,
    primary key (load_id, file_name)
);
"""

#: the hash-chained audit log and its anchors (privacy.audit)
OPS_AUDIT_LOG_DDL = """
create table if not exists ops.audit_log (
    seq bigint primary key,
    recorded_at timestamp not null,
    actor varchar not null,
    action varchar not null,
    purpose varchar not null,
    counts_json varchar not null,
    prev_hash varchar not null,
    hash varchar not null
);
create table if not exists ops.audit_anchor (
    seq bigint primary key,
    hash varchar not null,
    anchored_at timestamp not null
);
"""

#: what each retention purge selected and removed (privacy.retention)
OPS_RETENTION_RUNS_DDL = """
create table if not exists ops.retention_runs (
    run_at timestamp not null,
    actor varchar not null,
    rule varchar not null,
    store varchar not null,
    period varchar not null,
    cutoff timestamp not null,
    dry_run boolean not null,
    counts_json varchar not null
);
"""

#: the HubSpot source (crm.hubspot, crm.hubspot_upstream): the incremental cursor, each pull's request
#: counts, merged-away ids, archived contacts handled, and what was sent back upstream (erasure, objection).
OPS_HUBSPOT_DDL = """
create table if not exists ops.hubspot_cursor (
    portal varchar primary key,
    last_modified timestamp not null,
    pulled_at timestamp not null
);
create table if not exists ops.hubspot_pulls (
    pull_id varchar primary key,
    run_id varchar,
    mode varchar not null,
    started_at timestamp not null,
    counts_json varchar not null
);
create table if not exists ops.hubspot_merges (
    merged_id varchar primary key,
    surviving_id varchar not null,
    handled_at timestamp not null
);
create table if not exists ops.hubspot_archived (
    object_id varchar primary key,
    request_id varchar not null,
    archived_at timestamp,
    handled_at timestamp not null
);
create table if not exists ops.crm_upstream (
    request_id varchar not null,
    action varchar not null,
    identifier varchar,
    status varchar not null,
    attempts integer not null,
    last_error varchar,
    queued_at timestamp not null,
    sent_at timestamp,
    primary key (request_id, action)
);
"""

#: SMTP delivery (governed_marketing.delivery): one row per campaign and recipient, so a recipient
#: gets a campaign at most once; the recipient is a keyed HMAC (privacy.suppression.contact_ref), never
#: the contact id or email. `message_key` is the Message-ID's opaque local part and the unsubscribe
#: token's subject. One-click and mailto unsubscribes: when the click came, when the person was suppressed.
OPS_DELIVERY_DDL = """
create table if not exists ops.delivery_ledger (
    campaign_id varchar not null,
    recipient_ref varchar not null,
    message_key varchar not null unique,
    content_version varchar not null,
    status varchar not null,
    attempts integer not null,
    last_reply varchar,
    planned_at timestamp not null,
    updated_at timestamp not null,
    sent_at timestamp,
    run_id varchar,
    primary key (campaign_id, recipient_ref)
);
create table if not exists ops.unsubscribes (
    message_key varchar primary key,
    campaign_id varchar,
    source varchar not null,
    clicked_at timestamp not null,
    suppressed_at timestamp,
    request_id varchar
);
"""

#: Columns added to ops.generation_ledger after the first release: added to an older warehouse.
GENERATION_LEDGER_ADDED_COLUMNS = (
    ("in_doubt_attempts", "integer default 0"),
    ("in_doubt_cost_usd", "double precision default 0"),
    ("shared_request_of", "varchar"),
)

DDL = "".join(
    (
        RAW_LAYER_DDL,
        OPS_PIPELINE_STEPS_DDL,
        OPS_GATE_RESULTS_DDL,
        OPS_AUDIENCE_RECHECK_DDL,
        OPS_GENERATION_LEDGER_DDL,
        OPS_GENERATED_CONTENT_DDL,
        OPS_DSR_REQUESTS_DDL,
        OPS_SUPPRESSION_DDL,
        OPS_AUDIT_LOG_DDL,
        OPS_RETENTION_RUNS_DDL,
        OPS_HUBSPOT_DDL,
        OPS_DELIVERY_DDL,
    )
)
#: Changes whenever the DDL above changes, so an older warehouse is brought up to date on open.
SCHEMA_SHA256 = hashlib.sha256((DDL + repr(GENERATION_LEDGER_ADDED_COLUMNS)).encode()).hexdigest()


def ensure(conn: Warehouse) -> None:
    """Create what is missing of raw.* and ops.* (a no-op when this DDL was applied already)."""
    if _applied_sha256(conn) == SCHEMA_SHA256:
        return
    for schema in SCHEMAS:
        conn.execute(f"create schema if not exists {schema}").fetchall()
    conn.execute(DDL)
    _add_generation_ledger_columns(conn)
    conn.execute("create table if not exists ops.warehouse_schema (sha256 varchar not null)").fetchall()
    conn.execute("delete from ops.warehouse_schema").fetchall()
    conn.execute("insert into ops.warehouse_schema (sha256) values (?)", [SCHEMA_SHA256]).fetchall()


def _applied_sha256(conn: Warehouse) -> str | None:
    exists = conn.execute(
        "select count(*) from information_schema.tables where table_schema = 'ops' and table_name = 'warehouse_schema'"
    ).fetchall()[0][0]
    if not exists:
        return None
    rows = conn.execute("select sha256 from ops.warehouse_schema").fetchall()
    return rows[0][0] if rows else None


def _add_generation_ledger_columns(conn: Warehouse) -> None:
    present = {
        row[0]
        for row in conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'ops' and table_name = 'generation_ledger'"
        ).fetchall()
    }
    for name, kind in GENERATION_LEDGER_ADDED_COLUMNS:
        if name not in present:
            conn.execute(f"alter table ops.generation_ledger add column {name} {kind}").fetchall()
