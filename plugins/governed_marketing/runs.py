"""A pipeline run's as-of time and the counts each of its steps records in `ops.pipeline_steps`.

Below every step (ingest, generation, privacy requests), so each can date its work and leave counts
for the summary and the report without importing the DAG-facing task bodies.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime


def parse_as_of(value: str | datetime | None) -> datetime:
    """The run's as-of time as naive UTC; a zone-less ISO string is UTC; None is now."""
    if value is None or value == "":
        return datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"as_of {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def record_step(conn, run_id: str, step: str, subject: str, counts: dict) -> None:
    """Upsert one step's counts (the table is ensured by warehouse.schema when the warehouse opens)."""
    conn.execute(
        "insert into ops.pipeline_steps (run_id, step, subject, counts_json, recorded_at) values (?, ?, ?, ?, ?)"
        " on conflict (run_id, step, subject) do update set counts_json = excluded.counts_json,"
        " recorded_at = excluded.recorded_at",
        [
            run_id,
            step,
            subject,
            json.dumps(counts, sort_keys=True, default=str),
            datetime.now(UTC).replace(tzinfo=None),
        ],
    ).fetchall()
