"""Distributed smoke test (`make test-celery`): the pipeline DAGs on a real CeleryExecutor deployment.

What it starts, all as separate processes in their own process groups, on an isolated AIRFLOW_HOME
and GMP_HOME in a temporary directory:

  * Airflow metadata in a fresh Postgres database (`gmp_celery_<random>`, dropped at the end),
  * CeleryExecutor with the local Redis as broker (one Redis db, flushed at start and end) and the
    same Postgres database as Celery result backend,
  * `airflow api-server` (free port, SimpleAuthManager with a per-run user and password),
    `airflow scheduler`, `airflow dag-processor`, `airflow triggerer`, `airflow celery worker -c 2`.

Then, only through the REST API: create the 1-slot `warehouse_writer` pool, unpause the pipeline
DAGs, trigger `ingest_crm` on a small generated CRM export, trigger `process_privacy_requests` after
it, and wait for the asset-triggered `build_marketing_models` and `generate_campaign_content` runs.
It checks that every task instance was executed by the Celery worker (its id is in the worker's log)
and that the outbox was written under $GMP_HOME/outbox; that every DAG run rebuilt its compliance
report; and that the api-server's report plugin serves a run's report to the logged-in user and
refuses an anonymous request.

Fails fast on a failed (or retried) task and prints the task's log tail. Everything started is
stopped at the end, also on failure, timeout or Ctrl-C; the database is dropped and the Redis db
flushed. Not a pytest module on purpose (no `test_` prefix): run it with
`uv run --frozen python tests/celery/celery_smoke.py` or `make test-celery`.

Environment (all optional):
  GMP_TEST_POSTGRES_URL       server to create the database on (default postgresql://postgres@127.0.0.1:5432/postgres)
  GMP_CELERY_REDIS_URL        broker, including the db number (default redis://127.0.0.1:6379/5)
  GMP_CELERY_SMOKE_TIMEOUT    total time bound in seconds (default 900)
  GMP_CELERY_SMOKE_KEEP=1     keep the temporary directory (logs, warehouse) even on success
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
GMP = str(BIN / "gmp")

CONTACTS = 300
SEED = 11
WORKER_CONCURRENCY = 2
# The DAGs of `gmp run` (pipeline_run.PIPELINE); purge_expired_data stays paused (it deletes by wall clock).
PIPELINE_DAGS = ("ingest_crm", "process_privacy_requests", "build_marketing_models", "generate_campaign_content")
MARKER = "GMP_CELERY_SMOKE_RUN"  # set on every process we start: finds stray descendants at cleanup

START = time.monotonic()


class SmokeFailed(RuntimeError):
    """The smoke test failed; the message says where."""


def progress(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Deadline
# ---------------------------------------------------------------------------------------------
@dataclass
class Deadline:
    seconds: float

    @property
    def remaining(self) -> float:
        return self.seconds - (time.monotonic() - START)

    def check(self, doing: str) -> None:
        if self.remaining <= 0:
            raise SmokeFailed(f"timed out after {self.seconds:.0f}s (GMP_CELERY_SMOKE_TIMEOUT) while {doing}")


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class Deployment:
    tmp: Path
    env: dict[str, str]
    token: str
    logs: Path
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Service:
        log = self.logs / f"{name}.log"
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                [AIRFLOW, *args],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: Ctrl-C reaches us only, we stop it
            )
        service = Service(name, proc, log)
        self.services.append(service)
        return service

    def check_alive(self) -> None:
        for service in self.services:
            code = service.proc.poll()
            if code is not None:
                raise SmokeFailed(
                    f"`airflow {service.name}` exited with code {code}; last lines of {service.log}:\n"
                    + tail(service.log, 30)
                )

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every process group, SIGKILL what is left after `timeout`, then sweep stray descendants."""
        for service in reversed(self.services):
            signal_group(service.proc.pid, signal.SIGTERM)
        end = time.monotonic() + timeout
        for service in reversed(self.services):
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=max(0.1, end - time.monotonic()))
        for service in self.services:
            if service.proc.poll() is None:
                progress(f"cleanup: `airflow {service.name}` did not stop in {timeout:.0f}s; killing its group")
            signal_group(service.proc.pid, signal.SIGKILL)  # children of a stopped leader too
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.proc.wait(timeout=5)
        strays = marked_processes(self.token)
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if strays:
            progress(f"cleanup: killed {len(strays)} stray process(es) that left their group: {strays}")
        time.sleep(0.2)
        left = marked_processes(self.token)
        if left:
            raise SmokeFailed(f"cleanup: processes still running after SIGKILL: {left}")


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def marked_processes(token: str) -> list[int]:
    """Our processes (and their descendants) by the marker in their environment; never by name."""
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and status.split(") ", 1)[-1][:1] != "Z":
            found.append(int(entry.name))
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"    ({path}: {exc})"
    return "\n".join("    " + render_log_line(line) for line in text[-lines:])


def render_log_line(line: str) -> str:
    """Task logs are JSON lines in Airflow 3: show level, event and the exception, not the raw JSON."""
    try:
        record = json.loads(line)
    except ValueError:
        return line[:500]
    if not isinstance(record, dict):
        return line[:500]
    text = f"{record.get('level', '')} {record.get('event', '')}".strip()
    for detail in record.get("error_detail") or []:
        if isinstance(detail, dict):
            text += f" | {detail.get('exc_type')}: {detail.get('exc_value')}"
            frames = detail.get("frames") or []
            if frames and isinstance(frames[-1], dict):
                text += f" (at {frames[-1].get('filename')}:{frames[-1].get('lineno')})"
    return text[:800]


# ---------------------------------------------------------------------------------------------
# Postgres and Redis
# ---------------------------------------------------------------------------------------------
def postgres_server() -> tuple[str, dict]:
    """The maintenance URL from GMP_TEST_POSTGRES_URL (database replaced by `postgres`)."""
    url = os.environ.get("GMP_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    maintenance = urlunsplit((scheme, parts.netloc, "/postgres", "", ""))
    return maintenance, {"netloc": parts.netloc}


def database_url(netloc: str, database: str, scheme: str = "postgresql") -> str:
    return urlunsplit((scheme, netloc, f"/{database}", "", ""))


def pg_admin(maintenance_url: str, statement: str) -> None:
    import psycopg2

    conn = psycopg2.connect(maintenance_url, connect_timeout=5)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def redis_flush(url: str) -> int:
    """Flush the broker's db (only that one); return how many keys it held."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        keys = client.dbsize()
        client.flushdb()
        return keys
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# REST API
# ---------------------------------------------------------------------------------------------
class Api:
    def __init__(self, base_url: str) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30)

    def login(self, username: str, password: str) -> None:
        # SimpleAuthManager: POST /auth/token with the user's credentials returns a JWT.
        response = self.client.post("/auth/token", json={"username": username, "password": password})
        response.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def call(self, method: str, path: str, **kwargs) -> dict:
        # A read is retried when the api-server is too busy to answer in time (seen at load 19: a GET of a run's
        # state timed out after 30 s and failed the smoke test); a write is not, as it may have been applied.
        attempts = 3 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self.client.request(method, path, **kwargs)
                break
            except httpx.TimeoutException:
                if attempt == attempts:
                    raise
                progress(f"  {method} {path}: no answer in {self.client.timeout.read:.0f} s; asking again")
        if response.status_code >= 400:
            raise SmokeFailed(f"{method} {path} -> HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else {}

    def close(self) -> None:
        self.client.close()


# ---------------------------------------------------------------------------------------------
# The smoke test
# ---------------------------------------------------------------------------------------------
TERMINAL = {"success", "failed"}
BAD_TI_STATES = {"failed", "upstream_failed", "up_for_retry"}


def build_env(tmp: Path, *, token: str, db_url: str, result_backend: str, broker: str, api_port: int) -> dict:
    from governed_marketing.orchestration.pipeline_run import airflow_environment
    from governed_marketing.settings import Settings

    gmp_home = tmp / "gmp"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "GMP_", "OPENAI_", "PYTEST", "DBT_"))
    }
    # The same Airflow configuration as `gmp run` (pipeline_run.airflow_environment), on Postgres + Celery.
    env.update(airflow_environment(Settings(home=gmp_home, project_root=PROJECT_ROOT)))
    airflow_home = Path(env["AIRFLOW_HOME"])
    api_url = f"http://127.0.0.1:{api_port}"
    env.update(
        {
            MARKER: token,
            "GMP_HOME": str(gmp_home),
            "GMP_PROJECT_ROOT": str(PROJECT_ROOT),
            "GMP_PSEUDONYM_KEY": secrets.token_hex(32),
            "GMP_LLM_PROVIDER": "offline",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "smoke:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "AIRFLOW__API__BASE_URL": api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "DO_NOT_TRACK": "1",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "SCARF_ANALYTICS": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def wait_for(what: str, deadline: Deadline, deployment: Deployment, probe, interval: float = 1.0):
    while True:
        deadline.check(f"waiting for {what}")
        deployment.check_alive()
        result = probe()
        if result:
            return result
        time.sleep(interval)


def run_smoke(deployment: Deployment, deadline: Deadline, *, api_port: int, password: str) -> None:
    env = deployment.env
    gmp_home = Path(env["GMP_HOME"])
    airflow_home = Path(env["AIRFLOW_HOME"])
    crm_dir = deployment.tmp / "crm"

    from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF, write_sample_export

    write_sample_export(crm_dir, contacts=CONTACTS, seed=SEED)
    as_of = SAMPLE_AS_OF.isoformat()
    progress(f"CRM export: {CONTACTS} contacts, seed {SEED}, as-of {as_of} in {crm_dir}")

    # The dbt manifest Cosmos renders build_marketing_models from (parsed only when stale), and the
    # metadata schema, side by side.
    parse = subprocess.Popen(
        [GMP, "dbt-parse"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    migrate_log = deployment.logs / "db-migrate.log"
    with migrate_log.open("wb") as sink:
        migrate = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=max(1.0, deadline.remaining),
            check=False,
            start_new_session=True,
        )
    if migrate.returncode != 0:
        raise SmokeFailed(f"`airflow db migrate` failed ({migrate.returncode}):\n{tail(migrate_log, 30)}")
    progress("airflow db migrate: done")
    parse_out, _ = parse.communicate(timeout=max(1.0, deadline.remaining))
    if parse.returncode != 0:
        raise SmokeFailed(f"`gmp dbt-parse` failed ({parse.returncode}):\n{parse_out[-3000:]}")
    progress("dbt manifest: ready")

    (airflow_home / "passwords.json").write_text(json.dumps({"smoke": password}) + "\n")
    deployment.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1")
    deployment.start("scheduler", "scheduler", "--skip-serve-logs")
    deployment.start("dag-processor", "dag-processor")
    deployment.start("triggerer", "triggerer", "--skip-serve-logs")
    worker = deployment.start(
        "celery-worker",
        "celery", "worker", "--concurrency", str(WORKER_CONCURRENCY), "--skip-serve-logs",
        "--without-gossip", "--without-mingle", "--celery-hostname", f"gmp-smoke-{deployment.token}@%h",
    )  # fmt: skip
    progress("started api-server, scheduler, dag-processor, triggerer, celery worker")

    api = Api(f"http://127.0.0.1:{api_port}")
    try:

        def healthy():
            try:
                return api.client.get("/api/v2/monitor/health").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the api-server", deadline, deployment, healthy, interval=0.5)
        api.login("smoke", password)
        progress(f"api-server up on :{api_port}; JWT from POST /auth/token")

        api.call(
            "POST", "/api/v2/pools",
            json={"name": "warehouse_writer", "slots": 1, "include_deferred": False,
                  "description": "One writer at a time on the DuckDB warehouse"},
        )  # fmt: skip
        progress("pool warehouse_writer: 1 slot")

        def worker_ready():
            return "ready." in worker.log.read_text(errors="replace")

        def dags_parsed():
            errors = api.call("GET", "/api/v2/importErrors")
            if errors.get("total_entries"):
                first = errors["import_errors"][0]
                raise SmokeFailed(f"DAG import error in {first['filename']}:\n{first['stack_trace'][-2000:]}")
            known = {dag["dag_id"] for dag in api.call("GET", "/api/v2/dags", params={"limit": 100})["dags"]}
            return set(PIPELINE_DAGS) <= known

        wait_for("the dag-processor to parse dags/", deadline, deployment, dags_parsed)
        progress("DAGs parsed: " + ", ".join(PIPELINE_DAGS))
        wait_for("the celery worker", deadline, deployment, worker_ready, interval=0.5)
        progress("celery worker ready")

        for dag_id in ("build_marketing_models", "generate_campaign_content"):
            api.call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        ingest_run = trigger(api, "ingest_crm", {"crm_dir": str(crm_dir), "as_of": as_of}, deployment.token)
        api.call("PATCH", "/api/v2/dags/ingest_crm", json={"is_paused": False})
        progress(f"unpaused; triggered ingest_crm run {ingest_run}")

        runs: dict[str, str | None] = {"ingest_crm": ingest_run}
        wait_runs(api, deadline, deployment, airflow_home, runs, since="")

        since = api.call("GET", f"/api/v2/dags/ingest_crm/dagRuns/{ingest_run}")["start_date"]
        privacy_run = trigger(api, "process_privacy_requests", {"as_of": as_of}, deployment.token)
        api.call("PATCH", "/api/v2/dags/process_privacy_requests", json={"is_paused": False})
        progress(f"triggered process_privacy_requests run {privacy_run}")
        # The asset-triggered runs are found as they appear (run id None until then).
        downstream = {"process_privacy_requests": privacy_run, "build_marketing_models": None}
        downstream["generate_campaign_content"] = None
        wait_runs(api, deadline, deployment, airflow_home, downstream, since=since)
        runs.update(downstream)

        verify_celery(api, runs, worker.log)
        outbox = sorted((gmp_home / "outbox").rglob("*.jsonl"))
        if not outbox:
            raise SmokeFailed(f"no outbox file under {gmp_home / 'outbox'}")
        messages = sum(1 for path in outbox for line in path.read_text(encoding="utf-8").splitlines() if line)
        if not messages:
            raise SmokeFailed(f"outbox files are empty: {[str(p) for p in outbox]}")
        shown = ", ".join(str(p.relative_to(gmp_home)) for p in outbox)
        progress(f"outbox: {messages} messages in {shown}")
        verify_report_in_airflow(api, runs, gmp_home)
    finally:
        api.close()


def trigger(api: Api, dag_id: str, conf: dict, token: str) -> str:
    """Trigger a run on the DAG's next scheduled logical date, so that unpausing it adds no scheduled run.

    (The scheduler skips creating a run whose logical date already has one.)
    """
    dag = api.call("GET", f"/api/v2/dags/{dag_id}")
    body = {"dag_run_id": f"smoke__{token}", "conf": conf, "logical_date": dag.get("next_dagrun_logical_date")}
    if dag.get("next_dagrun_data_interval_start") and dag.get("next_dagrun_data_interval_end"):
        body["data_interval_start"] = dag["next_dagrun_data_interval_start"]
        body["data_interval_end"] = dag["next_dagrun_data_interval_end"]
    return api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]


def asset_triggered_run(api: Api, dag_id: str, since: str) -> str | None:
    runs = api.call(
        "GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"run_type": "asset_triggered", "order_by": "run_after"}
    )["dag_runs"]
    runs = [run for run in runs if (run.get("run_after") or "") >= since]
    return runs[0]["dag_run_id"] if runs else None


def task_instances(api: Api, dag_id: str, run_id: str) -> list[dict]:
    return api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})[
        "task_instances"
    ]


def wait_runs(
    api: Api, deadline: Deadline, deployment: Deployment, airflow_home: Path, runs: dict, *, since: str
) -> None:
    """Poll every run in `runs` (dag_id -> run_id, None: the next asset-triggered run) until all succeeded.

    Fails fast on a failed run or a failed / retried task, with the task's log tail.
    """
    began = time.monotonic()
    last: dict[str, str] = {}
    finished: set[str] = set()
    while True:
        pending = [dag_id for dag_id in runs if dag_id not in finished]
        if not pending:
            return
        deadline.check("waiting for " + ", ".join(f"{d} ({last.get(d, 'not started')})" for d in pending))
        deployment.check_alive()
        for dag_id in pending:
            if runs[dag_id] is None:
                runs[dag_id] = asset_triggered_run(api, dag_id, since)
                if runs[dag_id] is None:
                    continue
                progress(f"{dag_id}: asset-triggered run {runs[dag_id]}")
            run_id = runs[dag_id]
            state = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            tis = task_instances(api, dag_id, run_id)
            bad = [ti for ti in tis if ti["state"] in BAD_TI_STATES]
            if state == "failed" or bad:
                raise SmokeFailed(failure_report(airflow_home, dag_id, run_id, state, bad or tis))
            done = sum(1 for ti in tis if ti["state"] == "success")
            summary = f"{state}, {done}/{len(tis)} tasks done"
            if summary != last.get(dag_id):
                progress(f"  {dag_id}: {summary}")
                last[dag_id] = summary
            if state == "success":
                finished.add(dag_id)
                progress(f"{dag_id}: success ({time.monotonic() - began:.1f}s after the wait began)")
        time.sleep(2)


def failure_report(airflow_home: Path, dag_id: str, run_id: str, state: str, tis: list[dict]) -> str:
    lines = [f"{dag_id} run {run_id} is {state}; failed tasks:"]
    for ti in tis:
        if ti["state"] not in BAD_TI_STATES:
            continue
        mapped = f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""
        lines.append(f"  {ti['task_id']}{mapped}: {ti['state']} (try {ti.get('try_number')})")
        pattern = airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
        if mapped:
            pattern = pattern / f"map_index={ti['map_index']}"
        logs = sorted(glob.glob(str(pattern / "attempt=*.log")))
        if logs:
            lines.append(f"  last lines of {logs[-1]}:")
            lines.append(tail(Path(logs[-1]), 25))
        else:
            lines.append(f"  (no log under {pattern})")
    return "\n".join(lines)


def verify_celery(api: Api, runs: dict[str, str], worker_log: Path) -> None:
    """Every task instance ran through the Celery worker: its id is in a workload the worker executed."""
    log_text = worker_log.read_text(errors="replace")
    executed = [line for line in log_text.splitlines() if "Executing workload in Celery" in line]
    total = 0
    for dag_id, run_id in runs.items():
        for ti in task_instances(api, dag_id, run_id):
            total += 1
            if ti["state"] != "success":
                raise SmokeFailed(f"{dag_id}.{ti['task_id']} is {ti['state']} in a successful run")
            if not any(ti["id"] in line for line in executed):
                raise SmokeFailed(
                    f"{dag_id}.{ti['task_id']} (ti {ti['id']}, hostname {ti.get('hostname')}, queue "
                    f"{ti.get('queue')}) is not in the celery worker's log {worker_log}"
                )
    progress(f"celery: all {total} task instances executed by the celery worker ({len(executed)} workloads)")


def verify_report_in_airflow(api: Api, runs: dict[str, str], gmp_home: Path) -> None:
    """Every DAG run rebuilt the report, and the api-server's plugin serves it to a logged-in user only."""
    from urllib.parse import quote

    from governed_marketing.report.paths import run_dir_name

    for dag_id, run_id in runs.items():
        own = gmp_home / "reports" / "runs" / dag_id / run_dir_name(run_id) / "report.json"
        if not own.is_file():
            raise SmokeFailed(f"{dag_id} run {run_id} left no report at {own}")
    with httpx.Client(base_url=api.client.base_url, timeout=30) as anonymous:
        refused = anonymous.get("/compliance-report/")
    if refused.status_code not in (401, 403):
        raise SmokeFailed(f"an anonymous GET /compliance-report/ got HTTP {refused.status_code}, not 401/403")
    dag_id = "generate_campaign_content"
    run_id = runs[dag_id]
    path = f"/compliance-report/runs/{dag_id}/{quote(run_id, safe='')}/report.json"
    served = api.client.get(path)
    own = gmp_home / "reports" / "runs" / dag_id / run_dir_name(run_id) / "report.json"
    if served.status_code != 200 or served.content != own.read_bytes():
        raise SmokeFailed(f"GET {path} -> HTTP {served.status_code}: not the run's own report {own}")
    progress(f"report: {len(runs)} DAG runs left their report; the plugin served {path} (anonymous: 401/403)")


def preflight() -> None:
    import importlib.util

    # Airflow 3 opens an async metadata engine next to the sync one; on Postgres its driver is asyncpg
    # (apache-airflow[postgres] / apache-airflow-providers-postgres bring it). Without it nothing starts.
    if importlib.util.find_spec("asyncpg") is None:
        raise SmokeFailed(
            "the asyncpg driver is not installed: Airflow 3 needs it for its async metadata engine on Postgres "
            "(`ModuleNotFoundError: No module named 'asyncpg'` in airflow/settings.py configure_orm). "
            "Add asyncpg (or apache-airflow-providers-postgres) to pyproject.toml."
        )


def main() -> int:
    deadline = Deadline(float(os.environ.get("GMP_CELERY_SMOKE_TIMEOUT", "900")))
    keep = os.environ.get("GMP_CELERY_SMOKE_KEEP") == "1"
    token = secrets.token_hex(4)
    maintenance_url, server = postgres_server()
    database = f"gmp_celery_{token}"
    broker = os.environ.get("GMP_CELERY_REDIS_URL") or "redis://127.0.0.1:6379/5"
    tmp = Path(tempfile.mkdtemp(prefix="gmp-celery-"))
    logs = tmp / "service-logs"
    logs.mkdir()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    deployment: Deployment | None = None
    db_created = broker_used = False
    ok = False
    try:
        preflight()
        try:
            kept = redis_flush(broker)
            broker_used = True
        except Exception as exc:
            raise SmokeFailed(f"Redis at {broker} does not answer: {exc}") from None
        if kept:
            progress(f"warning: {broker} held {kept} keys; flushed (only this db)")
        try:
            pg_admin(maintenance_url, f'create database "{database}"')
            db_created = True
        except Exception as exc:
            raise SmokeFailed(f"could not create database {database} on {maintenance_url}: {exc}") from None
        progress(f"Postgres database {database}; broker {broker}; temp dir {tmp}")

        api_port = free_port()
        env = build_env(
            tmp,
            token=token,
            db_url=database_url(server["netloc"], database, "postgresql+psycopg2"),
            result_backend=database_url(server["netloc"], database, "db+postgresql+psycopg2"),
            broker=broker,
            api_port=api_port,
        )
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        deployment = Deployment(tmp=tmp, env=env, token=token, logs=logs)
        run_smoke(deployment, deadline, api_port=api_port, password=secrets.token_urlsafe(16))
        ok = True
    except SmokeFailed as failure:
        print(f"\nCELERY SMOKE TEST FAILED: {failure}", file=sys.stderr, flush=True)
    except KeyboardInterrupt as interrupt:
        print(f"\ninterrupted ({str(interrupt) or 'Ctrl-C'}); cleaning up", file=sys.stderr, flush=True)
    except Exception:
        import traceback

        traceback.print_exc()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ok = (
            cleanup(deployment, maintenance_url, database if db_created else None, broker if broker_used else None)
            and ok
        )
        if ok and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp} (service logs in {logs}, task logs in {tmp}/gmp/airflow/logs)", flush=True)
    progress(f"celery smoke test {'passed' if ok else 'FAILED'}")
    return 0 if ok else 1


def cleanup(deployment: Deployment | None, maintenance_url: str, database: str | None, broker: str | None) -> bool:
    clean = True
    if deployment is not None:
        try:
            deployment.stop()
            api_port = int(deployment.env["AIRFLOW__API__PORT"])
            if port_open(api_port):
                print(f"cleanup: port {api_port} still listening", file=sys.stderr)
                clean = False
            progress(f"cleanup: stopped {len(deployment.services)} services; none of our processes left")
        except Exception as exc:
            print(f"cleanup: {exc}", file=sys.stderr)
            clean = False
    if database:
        try:
            pg_admin(maintenance_url, f'drop database if exists "{database}" with (force)')
            progress(f"cleanup: dropped database {database}")
        except Exception as exc:
            print(f"cleanup: could not drop database {database}: {exc}", file=sys.stderr)
            clean = False
    if broker:
        try:
            redis_flush(broker)
            progress(f"cleanup: flushed {broker}")
        except Exception as exc:
            print(f"cleanup: could not flush {broker}: {exc}", file=sys.stderr)
            clean = False
    return clean


if __name__ == "__main__":
    sys.exit(main())
