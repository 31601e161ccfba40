"""Per-gate results in the warehouse (`ops.gate_results`): the evidence the report and Data Docs read.

One row per gate run. `result_json` holds the GateResult with its scrubbed GX validation result:
counts and rules, never a raw value of a personal column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from governed_marketing.validation.gates import GateResult
from governed_marketing.warehouse import table_exists

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

#: The order gates run in a pass, for the report.
GATE_ORDER = ("raw_crm", "campaign_audience", "vendor_payload", "generated_content")


def record_gate(conn: Warehouse, run_id: str, result: GateResult) -> None:
    """Append one gate result (pass or fail) to ops.gate_results."""
    conn.execute(
        "insert into ops.gate_results values (?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            result.gate,
            result.subject,
            result.success,
            result.rows,
            result.to_json(),
            datetime.now(UTC).replace(tzinfo=None),
        ],
    ).fetchall()


def latest_gate_results(conn: Warehouse, run_ids: list[str] | None = None) -> list[tuple[str, GateResult]]:
    """The latest result of every (gate, subject), as (run_id, result), in pipeline order.

    Args:
        run_ids: only results recorded under these runs (the DAG runs and the load of one pass).
    """
    if not table_exists(conn, "ops", "gate_results"):
        return []
    where = "" if run_ids is None else "where run_id = any(cast(? as varchar[]))"
    rows = conn.execute(
        f"""
        select run_id, result_json from (
            select run_id, result_json,
                row_number() over (partition by gate, subject order by validated_at desc) as rank_
            from ops.gate_results
            {where}
        ) ranked
        where rank_ = 1
        """,
        [] if run_ids is None else [list(run_ids)],
    ).fetchall()
    results = [(run_id, GateResult.from_json(text)) for run_id, text in rows]
    rank = {gate: i for i, gate in enumerate(GATE_ORDER)}
    results.sort(key=lambda entry: (rank.get(entry[1].gate, len(rank)), entry[1].subject))
    return results
