"""Reading a dbtRunner result the same way in every test that runs dbt."""

from __future__ import annotations

from collections import Counter


def failures(result) -> list[str]:
    """Every node that did not pass, as `unique_id: status message` (or the invocation's exception)."""
    if result.exception is not None:
        return [repr(result.exception)]
    return [
        f"{r.node.unique_id}: {r.status} {r.message or ''}".strip()
        for r in result.result.results
        if str(r.status) not in {"pass", "success", "no-op"}
    ]


def nodes_by_type(result) -> Counter:
    """How many nodes of each resource type (model, test, unit_test...) the invocation ran."""
    return Counter(str(r.node.resource_type) for r in result.result.results)
