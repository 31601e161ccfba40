"""Column classification (`meta.pii: direct|quasi|none`) from the dbt manifest, for result formats.

The analyst classifies every column in the dbt YAML; the gates read that classification so that a
validation result never stores a raw value of a `direct` or `quasi` column. A column nobody
classified counts as `direct`: unknown data is treated as the most sensitive.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path

PII_CLASSES = ("direct", "quasi", "none")
PERSONAL = frozenset({"direct", "quasi"})
UNCLASSIFIED = "direct"


def is_personal(column_class: str | None) -> bool:
    return (column_class or UNCLASSIFIED) != "none"


@cache
def _manifest_classes(path: Path, mtime_ns: int) -> dict[str, dict[str, str]]:
    manifest = json.loads(path.read_text(encoding="utf-8"))
    classes: dict[str, dict[str, str]] = {}
    for node in manifest.get("nodes", {}).values():
        if node.get("resource_type") in ("model", "snapshot", "seed"):
            classes[node["name"]] = _columns(node)
    for source in manifest.get("sources", {}).values():
        classes[f"{source['source_name']}.{source['name']}"] = _columns(source)
    return classes


def _columns(node: dict) -> dict[str, str]:
    found = {}
    for name, column in (node.get("columns") or {}).items():
        pii = (column.get("meta") or {}).get("pii")
        found[name] = pii if pii in PII_CLASSES else UNCLASSIFIED
    return found


def manifest_classes(manifest: Path | None = None) -> dict[str, dict[str, str]]:
    """Every model's and source table's column classes, keyed `model` or `source.table`.

    Reads `dbt_project/target/manifest.json`, writing it with `dbt parse` first when it is missing.
    """
    if manifest is None:
        from governed_marketing.dbt import ensure_manifest, manifest_path

        manifest = manifest_path()
        if not manifest.exists():
            manifest = ensure_manifest()
    return _manifest_classes(manifest, manifest.stat().st_mtime_ns)


def column_classes(asset: str, *, extra: Mapping[str, str] | None = None, manifest: Path | None = None) -> dict:
    """The classes of one dbt model or source table (`crm.crm_contacts`), plus computed check columns."""
    classes = dict(manifest_classes(manifest).get(asset, {}))
    classes.update(extra or {})
    return classes
