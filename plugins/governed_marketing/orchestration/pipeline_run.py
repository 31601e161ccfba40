"""`gmp run`: one full pass through the real Airflow DAGs with `dag.test()`, in order.

Airflow runs on a SQLite metadata database under $GMP_HOME/airflow, with this repo's dags/ as
its DAG folder. Each DAG runs to completion before the next starts; a failed DAG stops the pass
and the failure is reported in one line (the failed task and its recorded reason).

One pass at a time per GMP_HOME: `run_lock` holds $GMP_HOME/run.lock (flock) with the holder's PID,
command and start time in it, so a second pass stops at once and says who holds it (two passes on
one Airflow SQLite file and one DuckDB file only fail later, and less clearly). SIGTERM stops the
pass promptly (see `governed_marketing.stopping`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from governed_marketing.settings import Settings, get_settings, restrict_process_umask

log = logging.getLogger(__name__)

PIPELINE = ("ingest_crm", "process_privacy_requests", "build_marketing_models", "generate_campaign_content")
#: Kept from the last complete pass when nothing they are made from changed (see governed_marketing.rerun).
KEPT_WHEN_UNCHANGED = ("build_marketing_models", "generate_campaign_content")
#: Runs after PIPELINE when an SMTP relay is configured (`delivery_configured`); otherwise "deliver: off".
DELIVER = "deliver_campaign"
#: Every DAG of the project: `gmp airflow standalone` unpauses them.
ALL_DAGS = (*PIPELINE, DELIVER, "purge_expired_data", "assess_compliance")


def delivery_configured(settings: Settings) -> bool:
    """An SMTP relay to send through: Airflow's smtp_default (as an env connection) or GMP_SMTP_URL."""
    return bool(
        os.environ.get("AIRFLOW_CONN_SMTP_DEFAULT") or (settings.smtp_url and settings.smtp_url.get_secret_value())
    )


class PipelineFailed(RuntimeError):
    """A DAG of the pass failed; the message is the one-line reason.

    `report_built` is true when the failed DAG's own `rebuild_report` task wrote the report (with
    the reason), so the caller need not build it again.
    """

    def __init__(self, message: str, *, report_built: bool = False) -> None:
        super().__init__(message)
        self.report_built = report_built


class RunLocked(RuntimeError):
    """Another process holds $GMP_HOME/run.lock; the message names it in one line."""


_held: dict[str, int] = {}  # lock path -> nesting depth in this process (`gmp demo` runs `gmp run`'s code)


@contextmanager
def run_lock(settings: Settings, command: str | None = None) -> Iterator[Path]:
    """Hold $GMP_HOME/run.lock for a command that writes; raise RunLocked at once if another process does.

    The lock is an flock, so it is released by the kernel when the holder dies (no stale lock after a
    crash or SIGKILL); the file keeps the holder's PID, command and start time for the message.
    """
    path = settings.path() / "run.lock"  # GMP_HOME created owner-only, whoever takes the lock first
    key = str(path)
    if _held.get(key):
        _held[key] += 1
        try:
            yield path
        finally:
            _held[key] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "(holder unknown)"
            raise RunLocked(
                f"another gmp command is writing to {settings.home_dir} ({holder}); wait for it to finish "
                f"or stop it (lock: {path})"
            ) from None
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        what = command or shlex.join(["gmp", *sys.argv[1:]])
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, `{what}`, since {started}\n".encode(), 0)
        _held[key] = 1
        try:
            yield path
        finally:
            _held.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclass
class PipelineRun:
    as_of: str
    log_file: Path
    dag_runs: dict[str, str] = field(default_factory=dict)  # dag_id -> run_id
    #: dag_id -> run_id of the last complete pass, for the DAGs this pass kept instead of running.
    kept: dict[str, str] = field(default_factory=dict)


@contextmanager
def captured_output(log_file: Path) -> Iterator[None]:
    """Send everything Airflow, Cosmos and dbt print (fd 1 and 2) to the run's log file.

    The terminal shows our progress and summary; the task logs stay available for the engineer.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with log_file.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def airflow_environment(settings: Settings) -> dict[str, str]:
    """The Airflow configuration for local runs: everything under $GMP_HOME/airflow."""
    airflow_home = settings.path("airflow")
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.dags_dir),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        # Cosmos keeps dbt's partial_parse.msgpack between tasks and runs: each task parses only what changed.
        "AIRFLOW__COSMOS__ENABLE_CACHE": "True",
        "AIRFLOW__COSMOS__CACHE_DIR": str(airflow_home / "cosmos_cache"),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "governed_marketing",
        "AIRFLOW__OPENLINEAGE__DISABLED": "True",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING"),
        # `gmp airflow standalone` serves the UI and API on loopback only: the metadata DB and task logs
        # it shows are about people. Set AIRFLOW__API__HOST explicitly to listen elsewhere.
        "AIRFLOW__API__HOST": os.environ.get("AIRFLOW__API__HOST", "127.0.0.1"),
        # Task logs are Airflow's own files (it chmods them 0664/0775 by default, whatever the umask).
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "DO_NOT_TRACK": "1",
        "SCARF_ANALYTICS": "false",
        "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"(airflow|governed_marketing)\..*",
        "GMP_HOME": str(settings.home_dir),
    }


def standalone_environment(settings: Settings) -> dict[str, str]:
    """`gmp airflow standalone` on a small machine (2 cores): the DAGs start unpaused, so an asset event
    from ingest_crm runs the models; few processes; one login that is written down.

    Each value can be overridden from the environment.
    """
    airflow_home = settings.path("airflow")
    defaults = {
        # An asset event that reaches a paused DAG runs nothing: the chain would stop after the ingest.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__PARSING_PROCESSES": "1",
        # Airflow 3's simple auth manager: user `admin`, its password generated into this file at first start.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
            airflow_home / "simple_auth_manager_passwords.json.generated"
        ),
    }
    return {name: os.environ.get(name, value) for name, value in defaults.items()}


def unpause_dags(dag_ids: tuple[str, ...] = ALL_DAGS) -> list[str]:
    """Unpause the project's DAGs already known to the metadata DB (created paused by an earlier start)."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        paused = session.query(DagModel).filter(DagModel.dag_id.in_(dag_ids), DagModel.is_paused.is_(True)).all()
        for model in paused:
            model.is_paused = False
        return sorted(m.dag_id for m in paused)


def prepare_airflow(settings: Settings) -> None:
    """Set the environment, migrate the metadata DB and create the warehouse pool (idempotent)."""
    os.environ.update(airflow_environment(settings))
    from airflow import settings as airflow_settings
    from airflow.utils.db import upgradedb

    if airflow_settings.Session is None:
        airflow_settings.configure_orm()
    upgradedb()
    from airflow.models.pool import Pool

    from governed_marketing.orchestration.assets import WAREHOUSE_POOL

    Pool.create_or_update_pool(
        WAREHOUSE_POOL,
        slots=1,
        description="One writer at a time on the DuckDB warehouse",
        include_deferred=False,
    )


def _load_dags(settings: Settings) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(settings.dags_dir))
    if bag.import_errors:
        path, error = next(iter(bag.import_errors.items()))
        raise PipelineFailed(f"{path}: DAG import error: {error.strip().splitlines()[-1]}")
    return bag.dags


def _failure_reason(settings: Settings, dag_run) -> str:
    """One line: the failed task and the reason the step recorded (or the task's state)."""
    from governed_marketing.orchestration.report_task import REPORT_TASK_ID

    failed = [
        ti.task_id
        for ti in dag_run.get_task_instances()
        if ti.state in ("failed", "upstream_failed") and ti.task_id != REPORT_TASK_ID
    ]
    reason = None
    from governed_marketing import warehouse

    try:
        with warehouse.session(settings=settings) as conn:
            rows = conn.execute(
                "select subject, counts_json from ops.pipeline_steps where run_id = ?", [dag_run.run_id]
            ).fetchall()
        for subject, counts in rows:
            recorded = json.loads(counts)
            if "failed" in recorded:
                reason = f"{subject}: {recorded['failed']}"
    except Exception:  # noqa: BLE001 - the warehouse may not exist yet; fall back to task names
        reason = None
    tasks = ", ".join(sorted(failed)[:3]) or "unknown task"
    return f"{dag_run.dag_id} failed at {tasks}" + (f" - {reason}" if reason else "")


def _report_ran(dag_run) -> bool:
    """Did the run's last task write its report (it fails after writing when the run failed)?"""
    from governed_marketing.orchestration.report_task import REPORT_TASK_ID
    from governed_marketing.report.build import run_report_dir

    ran = any(ti.task_id == REPORT_TASK_ID and ti.state in ("success", "failed") for ti in dag_run.get_task_instances())
    return ran and (run_report_dir(get_settings(), dag_run.dag_id, dag_run.run_id) / "index.html").is_file()


def _task_state(dag_run, task_id: str) -> str | None:
    return next((ti.state for ti in dag_run.get_task_instances() if ti.task_id == task_id), None)


def _kept_pass(settings: Settings, as_of: str | None) -> dict[str, str]:
    """The models and content DAG runs of the last complete pass, if nothing they are made from changed."""
    from governed_marketing import rerun, warehouse

    with warehouse.session(settings=settings) as conn:
        kept = rerun.kept_pass(conn, rerun.inputs_fingerprint(conn, settings, as_of=as_of))
    return {dag_id: kept[dag_id] for dag_id in KEPT_WHEN_UNCHANGED} if kept else {}


def _forget_complete_pass(settings: Settings) -> None:
    from governed_marketing import rerun, warehouse

    with warehouse.session(settings=settings) as conn:
        rerun.forget_complete_pass(conn)


def _record_complete_pass(settings: Settings, as_of: str | None, run: PipelineRun) -> None:
    from governed_marketing import rerun, warehouse

    with warehouse.session(settings=settings) as conn:
        fingerprint = rerun.inputs_fingerprint(conn, settings, as_of=as_of)
        rerun.record_complete_pass(conn, fingerprint, {d: run.dag_runs[d] for d in KEPT_WHEN_UNCHANGED})


def run_pipeline(
    crm_dir: Path | None,
    *,
    as_of: str | None,
    settings: Settings | None = None,
    on_step: Callable[[str, str], None] | None = None,
    source: str | None = None,
    rebuild: bool = False,
) -> PipelineRun:
    """Run ingest -> models -> content through `dag.test()`; raise PipelineFailed on the first failure.

    When the export was already loaded and nothing else the models and content are made from changed
    since the last complete pass (`governed_marketing.rerun`), their DAGs are kept, not run, as the
    scheduler does; `rebuild` runs them anyway.

    Raises:
        RunLocked: another process is running a command that writes to this GMP_HOME.
        RunInterrupted: SIGTERM stopped the pass (what was in flight is recorded in the ledger).
    """

    from governed_marketing import stopping

    restrict_process_umask()  # the lock, warehouse, airflow.db, logs and outbox this pass writes: owner-only
    settings = settings or get_settings()
    with run_lock(settings), stopping.sigterm_stops_the_run():
        try:
            return _run_pipeline(
                crm_dir, as_of=as_of, settings=settings, on_step=on_step, source=source, rebuild=rebuild
            )
        except KeyboardInterrupt:
            if not stopping.stop_requested():
                raise
            raise stopping.RunInterrupted(
                f"stopped by {stopping.stop_reason()}; units that were with the vendor are recorded as in doubt "
                "in ops.generation_ledger and are sent again, under the same Idempotency-Key, by the next run"
            ) from None


def _run_pipeline(
    crm_dir: Path | None,
    *,
    as_of: str | None,
    settings: Settings,
    on_step: Callable[[str, str], None] | None = None,
    source: str | None = None,
    rebuild: bool = False,
) -> PipelineRun:
    from governed_marketing import stopping
    from governed_marketing.dbt import ensure_manifest
    from governed_marketing.runs import parse_as_of

    moment = parse_as_of(as_of).isoformat()
    notify = on_step or (lambda dag_id, state: None)
    settings.resolve_pseudonym_key()
    log_file = settings.path("logs") / f"gmp-run-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.log"
    run = PipelineRun(as_of=moment, log_file=log_file)
    with captured_output(log_file):
        ensure_manifest(settings)
        prepare_airflow(settings)
        dags = _load_dags(settings)
    confs = {
        "ingest_crm": {
            "crm_dir": str(Path(crm_dir).resolve()) if crm_dir else None,
            "as_of": moment,
            "source": source,  # None: governance.yml ingest.source
        },
        "process_privacy_requests": {"as_of": moment},
        "build_marketing_models": {"as_of": moment},
        "generate_campaign_content": {"as_of": moment},
        DELIVER: {"as_of": moment},
    }
    export_skipped = False
    for dag_id in (*PIPELINE, DELIVER) if delivery_configured(settings) else PIPELINE:
        if stopping.stop_requested():
            raise KeyboardInterrupt
        if dag_id in run.kept:
            notify(dag_id, "kept")
            continue
        if dag_id == KEPT_WHEN_UNCHANGED[0]:
            _forget_complete_pass(settings)
        notify(dag_id, "running")
        with captured_output(log_file):
            dag_run = dags[dag_id].test(run_conf=confs[dag_id])
        run.dag_runs[dag_id] = dag_run.run_id
        if stopping.stop_requested():
            raise KeyboardInterrupt
        if dag_run.state != "success":
            notify(dag_id, "failed")
            raise PipelineFailed(
                f"{_failure_reason(settings, dag_run)} (task logs: {log_file})",
                report_built=_report_ran(dag_run),
            )
        notify(dag_id, "success")
        if dag_id == "ingest_crm":
            export_skipped = _task_state(dag_run, "load_export") == "skipped"
        elif dag_id == "process_privacy_requests" and export_skipped and not rebuild:
            run.kept = _kept_pass(settings, as_of)
        elif dag_id == KEPT_WHEN_UNCHANGED[-1]:
            _record_complete_pass(settings, as_of, run)
    return run
