"""Run one DAG with dag.test() in this process's GMP_HOME and print what happened as one JSON line.

    python -m tests.support.dag_run DAG_ID [RUN_CONF_JSON]

The line holds the run's id and state, each task's state and try number, how many asset events
the metadata database holds (an export already loaded must add none), and the wall and CPU seconds
of dag.test() itself (benchmarks).
"""

from __future__ import annotations

import json
import sys
import time


def main(dag_id: str, conf: dict) -> None:
    from governed_marketing.orchestration.pipeline_run import _load_dags, prepare_airflow
    from governed_marketing.settings import get_settings

    settings = get_settings()
    prepare_airflow(settings)  # before anything else imports Airflow: it reads its configuration once
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    dag = _load_dags(settings)[dag_id]
    wall, cpu = time.perf_counter(), time.process_time()
    run = dag.test(run_conf=conf)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tasks = {ti.task_id: {"state": str(ti.state), "try_number": ti.try_number} for ti in run.get_task_instances()}
    with create_session() as session:
        events = session.query(AssetEvent).count()
    print(
        json.dumps(
            {
                "run_id": run.run_id,
                "state": str(run.state),
                "tasks": tasks,
                "asset_events": events,
                "seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
