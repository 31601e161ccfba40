"""The Airflow edge: what the DAG files wire together, and the only package that imports Airflow.

- `task_bodies`: the DAG tasks' bodies as plain functions (counts in, counts out).
- `failures`: the one list of failures a retry cannot fix; `fail_fast()`, the one translation to a
  failure without retries.
- `report_task`: every DAG's last task, the run's compliance report.
- `operators`, `batch_trigger`: drafting (sync, or deferred on a vendor batch) and human approval.
- `assets`: the assets that chain the DAGs, and the warehouse writers' pool.
- `pipeline_run`: `gmp run`, one pass through the real DAGs; the Airflow configuration of local runs.

The library below (everything else in `governed_marketing`) imports nothing from Airflow.
"""
