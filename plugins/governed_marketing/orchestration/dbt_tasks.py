"""What a per-model Cosmos task (one in-process `dbt build` each) costs beyond the build, and the cuts.

Issue #11 (`python -m tests.benchmarks.dbt_mode`, 24 model tasks): the DAG's CPU under dag.test() went
from 72 s to 36 s at 2,000 contacts, 61 s to 41 s at 100,000, with these three cuts (profiled first):

- dbt writes `manifest.json` (twice: after parsing and after the run), `run_results.json` and
  `graph.gpickle` into Cosmos' temporary project copy, which is deleted when the task ends. Nothing
  reads them: Cosmos reports the result from dbtRunner's return value, keeps `partial_parse.msgpack`
  (written whatever `--write-json` says) and renders the DAG from `dbt_project/target/manifest.json`.
  Only Cosmos' OpenLineage events are built from `run_results.json`; without it Cosmos logs that it
  cannot and goes on (no OpenLineage provider is installed here to send them);
- dbt lists the relations of every schema it knows before the run (`populate_adapter_cache`), for a task
  that builds one model. `--cache-selected-only` lists the selected model's schemas; a relation
  elsewhere (the on-run-start policy check reads `governance.purpose_fields`) is looked up when asked;
- Cosmos calls `gc.collect()` after each dbt call (it releases dbt adapters' semaphores,
  astronomer-cosmos#2334). A full collection walks every object the worker holds: Airflow, Cosmos,
  the DAG, the dbt modules. Freezing the heap before the call (`gc.freeze`) leaves that collection
  only what this dbt call made, which is where the semaphores are; the heap is unfrozen after the task.
"""

from __future__ import annotations

import gc
from typing import Any

#: dbt global flags for every per-model task: no JSON artifacts nobody reads, a relation cache of the
#: selected model's schemas only.
DBT_GLOBAL_FLAGS: tuple[str, ...] = ("--no-write-json", "--cache-selected-only")


def freeze_heap(context: Any = None) -> None:
    """pre_execute: what the worker holds before dbt runs is left out of Cosmos' gc.collect().

    No collection first: that would walk the whole heap once more. Garbage frozen here is collected
    after unfreeze_heap, or goes with the task's process (Airflow runs each try in its own process).
    """
    gc.freeze()


def unfreeze_heap(context: Any = None, result: Any = None) -> None:
    """post_execute: the heap is collectable again (dag.test() runs every task in one process).

    Not called when the task fails; the next task's unfreeze_heap then thaws what both froze.
    """
    gc.unfreeze()
