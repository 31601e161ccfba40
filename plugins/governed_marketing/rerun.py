"""A `gmp run` where nothing changed keeps the models and content of the last complete pass.

The scheduler already works this way: an export already loaded is a skipped ingest with no asset
event, so neither the models nor the content DAG run. `gmp run` runs its DAGs in a row instead, so
it asks the same question itself, after the ingest and the privacy requests: is everything the
models and the content are made from the same as at the end of the last complete pass? That is the
loaded exports, the privacy requests and the suppression list, the retention runs, the policy, the
dbt project, the prompts, the code, the settings, an explicit as-of, and the outbox files. If so,
the pass keeps what is there (`gmp run --rebuild` runs every DAG anyway).

Time alone changes nothing here, as with the scheduler: a consent that expires between two passes
over the same export is caught at send time (`deliver_campaign` checks consent, suppression,
restriction and objection again per message), and the next pass with something new rebuilds.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from governed_marketing.runs import record_step
from governed_marketing.settings import Settings, openai_key_present

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

#: Where the last complete pass is recorded (ops.pipeline_steps; one row, replaced by each pass).
_RUN_ID, _STEP, _SUBJECT = "gmp-run", "pass.complete", "latest"
#: What the models and the content are built from, under the project root (`*` files, recursively).
_PROJECT_INPUTS = ("dbt_project/models", "dbt_project/macros", "dbt_project/seeds", "prompts", "expectations")
_PROJECT_FILES = ("dbt_project/dbt_project.yml", "dbt_project/profiles.yml")
_CODE = ("plugins/governed_marketing", "dags")
#: The warehouse state the models read: a change in any of these makes a rebuild.
_STATE_SQL = """
select
    (select count(*) || ':' || coalesce(cast(max(loaded_at) as varchar), '') from ops.crm_loads),
    (select count(*) || ':' || coalesce(cast(max(updated_at) as varchar), '') from ops.dsr_requests),
    (select count(*) || ':' || coalesce(cast(max(added_at) as varchar), '') from ops.suppression),
    (select count(*) || ':' || coalesce(cast(max(run_at) as varchar), '') from ops.retention_runs)
"""


def inputs_fingerprint(conn: Warehouse, settings: Settings, *, as_of: str | None) -> str:
    """A digest of everything the models and the content are made from (no personal data: counts and times)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(conn.execute(_STATE_SQL).fetchone(), default=str).encode())
    digest.update(json.dumps({"as_of": as_of, "openai_key": openai_key_present()}).encode())
    digest.update(settings.model_dump_json(exclude={"home", "project_root"}).encode())  # secrets dump as "**********"
    root = settings.project_root
    files = [settings.policy_path, *(root / name for name in _PROJECT_FILES)]
    for folder in (*_PROJECT_INPUTS, *_CODE):
        files += sorted(p for p in (root / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in files:
        if path.is_file():
            digest.update(f"{path.relative_to(root) if path.is_relative_to(root) else path}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    outbox = settings.home_dir / "outbox"
    for path in sorted(outbox.rglob("*.jsonl")) if outbox.is_dir() else []:
        stat = path.stat()
        digest.update(f"{path.relative_to(outbox)}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def record_complete_pass(conn: Warehouse, fingerprint: str, dag_runs: dict[str, str]) -> None:
    """After a pass whose models and content DAGs succeeded: what it was built from, and its DAG runs."""
    record_step(conn, _RUN_ID, _STEP, _SUBJECT, {"fingerprint": fingerprint, "dag_runs": dag_runs})


def forget_complete_pass(conn: Warehouse) -> None:
    """Before the models or content DAG runs: a pass that fails or is stopped halfway keeps nothing."""
    conn.execute(
        "delete from ops.pipeline_steps where run_id = ? and step = ? and subject = ?", [_RUN_ID, _STEP, _SUBJECT]
    )


def kept_pass(conn: Warehouse, fingerprint: str) -> dict[str, str] | None:
    """The DAG runs of the last complete pass if it was built from exactly these inputs, else None."""
    row = conn.execute(
        "select counts_json from ops.pipeline_steps where run_id = ? and step = ? and subject = ?",
        [_RUN_ID, _STEP, _SUBJECT],
    ).fetchone()
    if row is None:
        return None
    last = json.loads(row[0])
    return last["dag_runs"] if last.get("fingerprint") == fingerprint else None
