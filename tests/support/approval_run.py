"""Run generate_campaign_content with dag.test() while a reviewer answers its approval step.

The reviewer is the outside world here: a thread that waits for the Human-in-the-loop request and
answers it the way Airflow's HITL REST endpoint does (response recorded, parked task resumed).

    python -m tests.support.approval_run Approve|Reject AS_OF   (GMP_HOME holds a built warehouse)

Prints one JSON line: the DAG run's state, each task's state, and what the reviewer was shown.
"""

from __future__ import annotations

import json
import sys
import threading
import time


def _reviewer(choice: str, seen: dict) -> None:
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils import timezone
    from airflow.utils.session import create_session

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        with create_session() as session:
            detail = session.query(HITLDetail).filter(HITLDetail.responded_at.is_(None)).first()
            ti = session.get(TaskInstance, detail.ti_id) if detail is not None else None
            if ti is not None and ti.state == "awaiting_input":
                seen.update(subject=detail.subject, body=detail.body, options=list(detail.options))
                detail.responded_by = {"id": "reviewer", "name": "reviewer"}
                detail.responded_at = timezone.utcnow()
                detail.chosen_options = [choice]
                detail.params_input = {}
                session.add(detail)
                handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
                return
        time.sleep(0.5)


def main(choice: str, as_of: str) -> None:
    from governed_marketing.orchestration.pipeline_run import _load_dags, prepare_airflow
    from governed_marketing.settings import get_settings

    settings = get_settings()
    prepare_airflow(settings)
    dag = _load_dags(settings)["generate_campaign_content"]
    seen: dict = {}
    reviewer = threading.Thread(target=_reviewer, args=(choice, seen), daemon=True)
    reviewer.start()
    run = dag.test(run_conf={"as_of": as_of})
    states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in run.get_task_instances()}
    print(json.dumps({"state": str(run.state), "tasks": states, "seen": seen}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
