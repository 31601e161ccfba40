"""Cosmos watcher mode for `build_marketing_models`: one `dbt build`, one task per model to watch it.

In a `DbtTaskGroup` Cosmos leaves the root consumers (sensors that read the producer's per-model
results) unordered against the producer, meant to defer while it runs. A consumer that starts first
takes the one warehouse slot, and under `dag.test()` (one task at a time, `gmp run`) it waits inline
for a producer that can never start. Here the roots follow the producer with trigger rule `all_done`:
they read its per-model results once it ended, success or not, so a failed model still fails its own
task (and a retry of that task rebuilds the model alone, Cosmos' fallback).
"""

from __future__ import annotations

from typing import Any

PRODUCER_LABEL = "dbt_producer_watcher"


def consumers_after_producer(group: Any) -> int:
    """Put the producer upstream of every root consumer of a Cosmos watcher task group; how many were wired."""
    producer = next(t for t in group.roots if t.task_id.rsplit(".", 1)[-1] == PRODUCER_LABEL)
    wired = 0
    for root in group.roots:
        if root is producer:
            continue
        producer >> root
        root.trigger_rule = "all_done"
        wired += 1
    return wired
