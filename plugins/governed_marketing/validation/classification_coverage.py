"""Coverage of the column classification: every column classified, no direct identifier reaches a vendor.

`validation.classification` reads the classes for the gates' result formats; this module proves they
are complete.

Reads dbt's manifest (declared columns, their `meta.pii`, lineage, exposures) and, when given,
its catalog (the columns the warehouse really holds), so a column added to SQL but not declared
is caught too. The dbt project's on-run-start hook enforces the same classes at build time; this
report adds coverage figures, lineage and the exposure's declared columns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from governed_marketing.validation.classification import PII_CLASSES

CHECKED_TYPES = ("model", "seed", "snapshot", "source")


@dataclass
class ClassificationReport:
    columns: int = 0
    classified: int = 0
    problems: list[str] = field(default_factory=list)
    by_class: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PII_CLASSES, 0))

    @property
    def share_classified(self) -> float:
        return self.classified / self.columns if self.columns else 1.0

    @property
    def ok(self) -> bool:
        return not self.problems


def _nodes(manifest: dict) -> dict[str, dict]:
    nodes = {k: v for k, v in manifest["nodes"].items() if v["resource_type"] in CHECKED_TYPES}
    nodes.update(manifest.get("sources", {}))
    return nodes


def _is_vendor_payload(node: dict) -> bool:
    return "vendor_payload" in (node.get("config", {}).get("tags") or []) or bool(
        (node.get("meta") or {}).get("vendor_payload")
    )


def _ancestors(manifest: dict, unique_id: str) -> set[str]:
    parents = manifest.get("parent_map", {})
    seen: set[str] = set()
    stack = list(parents.get(unique_id, []))
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(parents.get(current, []))
    return seen


def check_classification(manifest: dict, catalog: dict | None = None) -> ClassificationReport:
    """Every column classified; no direct column (declared or inherited by name) in a vendor payload."""
    report = ClassificationReport()
    nodes = _nodes(manifest)
    catalog_nodes = {**(catalog or {}).get("nodes", {}), **(catalog or {}).get("sources", {})}
    for unique_id, node in sorted(nodes.items()):
        declared = {name.lower(): column for name, column in node.get("columns", {}).items()}
        actual = {name.lower() for name in catalog_nodes.get(unique_id, {}).get("columns", {})}
        for name in sorted(set(declared) | actual):
            report.columns += 1
            pii = (declared.get(name, {}).get("meta") or {}).get("pii")
            if name not in declared:
                report.problems.append(f"{unique_id}.{name}: in the warehouse but not declared (no meta.pii)")
            elif pii not in PII_CLASSES:
                report.problems.append(f"{unique_id}.{name}: meta.pii is {pii or 'missing'}")
            else:
                report.classified += 1
                report.by_class[pii] += 1
        if _is_vendor_payload(node):
            direct_upstream = {
                column_name.lower(): ancestor
                for ancestor in _ancestors(manifest, unique_id)
                if ancestor in nodes
                for column_name, column in nodes[ancestor].get("columns", {}).items()
                if (column.get("meta") or {}).get("pii") == "direct"
            }
            for name in sorted(set(declared) | actual):
                pii = (declared.get(name, {}).get("meta") or {}).get("pii")
                if pii == "direct":
                    report.problems.append(f"{unique_id}.{name}: direct identifier in a vendor payload model")
                elif name in direct_upstream:
                    report.problems.append(
                        f"{unique_id}.{name}: the direct column of {direct_upstream[name]} reaches a vendor payload"
                    )
    for unique_id, exposure in sorted(manifest.get("exposures", {}).items()):
        sent = (exposure.get("meta") or {}).get("columns_sent") or []
        upstream = [nodes[n] for n in exposure.get("depends_on", {}).get("nodes", []) if n in nodes]
        columns = {name.lower(): c for node in upstream for name, c in node.get("columns", {}).items()}
        for name in sent:
            if name.lower() not in columns:
                report.problems.append(f"{unique_id}: sends {name}, which no upstream model declares")
            elif (columns[name.lower()].get("meta") or {}).get("pii") == "direct":
                report.problems.append(f"{unique_id}: sends the direct identifier {name}")
    return report


def check_project(target_dir: Path) -> ClassificationReport:
    """Check `target/manifest.json` (and `catalog.json` when `dbt docs generate` has written it)."""
    manifest = json.loads((target_dir / "manifest.json").read_text())
    catalog_path = target_dir / "catalog.json"
    catalog = json.loads(catalog_path.read_text()) if catalog_path.exists() else None
    return check_classification(manifest, catalog)
