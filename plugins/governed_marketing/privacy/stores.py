"""Where a person's data lives in the warehouse, found from metadata rather than from a hand-kept list.

Every dbt model, snapshot, seed and source that holds people names the column that identifies
them in `meta.subject_column` (email, contact_id or recipient_pseudonym); the manifest lists them
all, so a model added tomorrow is erased, exported and purged without anyone editing this code.
A table the manifest does not know (an ad-hoc copy, a model without the meta) is still found when
it carries one of those columns by name, and is reported as such.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse


#: subject column name -> how it identifies a person.
SUBJECT_KINDS = {
    "email": "email",
    "email_normalized": "email",
    "contact_id": "contact_id",
    "recipient_pseudonym": "pseudonym",
}
#: Stores the privacy code handles itself (identity rewritten, not deleted; or no identity by design).
SPECIAL = {
    ("raw", "crm_dsr_requests"),  # requests are kept, the email replaced by the subject's HMAC
    ("raw", "quarantine"),  # raw_record JSON, matched field by field
    ("ops", "dsr_requests"),
    ("ops", "suppression"),
    ("ops", "suppression_door"),
    ("ops", "audit_log"),
    ("ops", "audit_anchor"),
    ("ops", "retention_runs"),
}
_STORING = {"table", "incremental", "snapshot", "seed", "source"}


@dataclass(frozen=True)
class Relation:
    schema: str
    name: str
    subject_column: str
    kind: str  # email | contact_id | pseudonym
    origin: str  # "dbt model int_x", "dbt source crm.crm_contacts", "column name"
    has_contact_id: bool = False

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        return f'"{self.schema}"."{self.name}"'


@dataclass(frozen=True)
class Unstored:
    """A model that holds people but stores no rows (a view, an ephemeral model)."""

    name: str
    materialized: str


def _columns(conn: Warehouse) -> dict[tuple[str, str], set[str]]:
    rows = conn.execute(
        """
        select c.table_schema, c.table_name, c.column_name
        from information_schema.columns c
        join information_schema.tables t using (table_catalog, table_schema, table_name)
        where t.table_type = 'BASE TABLE' and c.table_catalog = current_database()
          and c.table_schema not in ('pg_catalog', 'information_schema', 'gmp_private')
        """
    ).fetchall()
    columns: dict[tuple[str, str], set[str]] = {}
    for schema, table, column in rows:
        columns.setdefault((schema, table), set()).add(column)
    return columns


def manifest_nodes(manifest_path: Path | None) -> list[dict]:
    """Models, snapshots, seeds and sources from dbt's manifest (empty when there is none)."""
    if manifest_path is None or not Path(manifest_path).is_file():
        return []
    stat = Path(manifest_path).stat()
    return list(_parsed_nodes(str(Path(manifest_path).resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4)
def _parsed_nodes(path: str, mtime_ns: int, size: int) -> tuple[dict, ...]:
    """The manifest parsed once per process and file version (a pass of thousands of requests asks per table)."""
    del mtime_ns, size  # the cache key: a rebuilt manifest is parsed again
    manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    nodes = [n for n in manifest.get("nodes", {}).values() if n.get("resource_type") in ("model", "snapshot", "seed")]
    return tuple(nodes + list(manifest.get("sources", {}).values()))


def personal_relations(conn: Warehouse, manifest_path: Path | None) -> tuple[list[Relation], list[Unstored], list[str]]:
    """Tables holding people, models that hold people without storing rows, and notes for the receipt."""
    columns = _columns(conn)
    relations: dict[tuple[str, str], Relation] = {}
    unstored: list[Unstored] = []
    notes: list[str] = []
    for node in manifest_nodes(manifest_path):
        meta = {**(node.get("config", {}).get("meta") or {}), **(node.get("meta") or {})}
        subject = meta.get("subject_column")
        if not subject:
            continue
        is_source = node.get("resource_type") == "source"
        materialized = "source" if is_source else (node.get("config", {}).get("materialized") or "view")
        label = (
            f"dbt source {node.get('source_name')}.{node['name']}"
            if is_source
            else f"dbt {node['resource_type']} {node['name']}"
        )
        if materialized not in _STORING:
            unstored.append(Unstored(node["name"], materialized))
            continue
        schema = node.get("schema")
        name = node.get("identifier") if is_source else (node.get("alias") or node["name"])
        key = (schema, name)
        if key in SPECIAL:
            continue
        if key not in columns:
            notes.append(f"{label}: relation {schema}.{name} not built in this warehouse")
            continue
        kind = SUBJECT_KINDS.get(subject)
        if kind is None or subject not in columns[key]:
            notes.append(f"{label}: meta.subject_column {subject!r} is not a known identity column of {schema}.{name}")
            continue
        relations[key] = Relation(schema, name, subject, kind, label, has_contact_id="contact_id" in columns[key])
    for key, names in sorted(columns.items()):
        if key in relations or key in SPECIAL or key[0] in ("governance", "temp"):
            continue
        for column in ("email_normalized", "email", "contact_id", "recipient_pseudonym"):
            if column in names:
                relations[key] = Relation(
                    key[0],
                    key[1],
                    column,
                    SUBJECT_KINDS[column],
                    "column name (not in the dbt manifest)",
                    has_contact_id="contact_id" in names,
                )
                notes.append(f"{key[0]}.{key[1]}: found by its column {column!r}; add meta.subject_column to its model")
                break
    return sorted(relations.values(), key=lambda r: r.qualified), unstored, notes
