"""The compliance report inside a real `airflow api-server`: who can read it, and what a reviewer sees.

A `gmp run` on the sample export (offline provider) fills a fresh GMP_HOME and the metadata DB of
its AIRFLOW_HOME with the report and real DAG runs; then `airflow api-server` starts on them (its own
process group, like `tests/celery/celery_smoke.py`) with the simple auth manager and one user,
`reviewer`, with the *viewer* role and a known password. Then:

* over HTTP: an anonymous request to the plugin is refused, a token from `POST /auth/token` reads
  the report, its JSON and its Data Docs;
* in headless Chromium (Debian's `chromium`, skipped where it is missing; `.ci/run` installs it),
  driven over the DevTools protocol: log in through Airflow's login page, open the "Compliance
  report" view and the "Compliance report" tab of the `ingest_crm` run, and save screenshots to
  `$GMP_HOME/screenshots/report_in_airflow.png` and `report_in_airflow_dag_run.png` (copies in
  `test-artifacts/`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from base64 import b64decode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
USER = "reviewer"
STARTUP_SECONDS = 240
PIPELINE_SECONDS = 900
HTTP_TIMEOUT = 60  # the first request to the plugin builds its app; a loaded CI box is slow


@dataclass
class ApiServer:
    url: str
    password: str
    gmp_home: Path
    log: Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group we started, SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
            return


def _environment(tmp: Path, port: int) -> dict[str, str]:
    from governed_marketing.orchestration.pipeline_run import airflow_environment
    from governed_marketing.settings import Settings

    gmp_home = tmp / "gmp"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "GMP_", "OPENAI_", "PYTEST"))}
    env.update(airflow_environment(Settings(home=gmp_home, project_root=PROJECT_ROOT)))
    airflow_home = Path(env["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "GMP_HOME": str(gmp_home),
            "GMP_PROJECT_ROOT": str(PROJECT_ROOT),
            "GMP_PSEUDONYM_KEY": secrets.token_hex(32),
            "GMP_LLM_PROVIDER": "offline",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory, sample_export) -> Iterator[ApiServer]:
    """`airflow api-server` on a free port after a `gmp run`, `reviewer` with a known password."""
    from governed_marketing.sample_data.crm_export import SAMPLE_AS_OF

    tmp = tmp_path_factory.mktemp("airflow-report")
    port = _free_port()
    env = _environment(tmp, port)
    gmp_home = Path(env["GMP_HOME"])
    password = secrets.token_urlsafe(12)
    (Path(env["AIRFLOW_HOME"]) / "passwords.json").write_text(json.dumps({USER: password}) + "\n")
    logs = tmp / "logs"
    logs.mkdir()

    def run(name: str, *args: str) -> subprocess.Popen:
        with (logs / f"{name}.log").open("wb") as sink:
            return subprocess.Popen(
                list(args), cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    pipeline = run("gmp-run", str(BIN / "gmp"), "run", "--crm", str(sample_export), "--as-of", SAMPLE_AS_OF.isoformat())
    started: list[subprocess.Popen] = [pipeline]
    try:
        assert pipeline.wait(timeout=PIPELINE_SECONDS) == 0, _tail(logs / "gmp-run.log")
        api = run("api-server", str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port))
        started.append(api)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert api.poll() is None, "api-server exited:\n" + _tail(logs / "api-server.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "api-server not healthy:\n" + _tail(logs / "api-server.log")
            time.sleep(0.5)
        yield ApiServer(url=url, password=password, gmp_home=gmp_home, log=logs / "api-server.log")
    finally:
        for proc in reversed(started):
            _stop(proc)


def get(server: ApiServer, path: str, **kwargs) -> httpx.Response:
    return httpx.get(server.url + path, timeout=HTTP_TIMEOUT, **kwargs)


def login(server: ApiServer) -> dict[str, str]:
    response = httpx.post(
        f"{server.url}/auth/token", json={"username": USER, "password": server.password}, timeout=HTTP_TIMEOUT
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_the_api_server_refuses_an_anonymous_reader(server):
    for path in ("/compliance-report/", "/compliance-report/report.json", "/compliance-report/data_docs/index.html"):
        response = get(server, path)
        assert response.status_code in (401, 403), (path, response.status_code)
        assert "Records of processing" not in response.text
    wrong = httpx.post(
        f"{server.url}/auth/token", json={"username": USER, "password": "not-the-password"}, timeout=HTTP_TIMEOUT
    )
    assert wrong.status_code in (401, 403)


def test_a_logged_in_viewer_reads_the_report_its_json_and_data_docs(server):
    headers = login(server)
    page = get(server, "/compliance-report/", headers=headers)
    assert page.status_code == 200, page.text[:300]
    assert "<h1>Compliance report</h1>" in page.text and "Records of processing (Art. 30)" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    data = get(server, "/compliance-report/report.json", headers=headers).json()
    assert data == json.loads((server.gmp_home / "reports" / "report.json").read_text(encoding="utf-8"))
    docs = get(server, "/compliance-report/data_docs/index.html", headers=headers)
    assert docs.status_code == 200 and "Data Docs" in docs.text
    assert not re.search(r"""(?:src|href)=["'](?:https?:)?//""", docs.text)
    run = httpx.get(
        f"{server.url}/compliance-report/runs/ingest_crm/manual__not_yet/", headers=headers, timeout=HTTP_TIMEOUT
    )
    assert run.status_code == 200 and "No report for run manual__not_yet of ingest_crm yet" in run.text


def ingest_run_id(server: ApiServer, headers: dict[str, str]) -> str:
    runs = get(server, "/api/v2/dags/ingest_crm/dagRuns", headers=headers).json()["dag_runs"]
    assert runs, "gmp run left no ingest_crm run in the metadata DB"
    return runs[-1]["dag_run_id"]


def test_a_dag_run_of_the_pipeline_opens_a_report(server):
    headers = login(server)
    run_id = ingest_run_id(server, headers)
    page = httpx.get(
        f"{server.url}/compliance-report/runs/ingest_crm/{quote(run_id, safe='')}/",
        headers=headers,
        timeout=HTTP_TIMEOUT,
    )
    assert page.status_code == 200 and "<h1>Compliance report</h1>" in page.text


def test_airflow_lists_the_report_views(server):
    plugins = get(server, "/api/v2/plugins", headers=login(server)).json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "governed_marketing_report"]
    assert {v["destination"] for v in ours["external_views"]} == {"nav", "dag_run"}


# ---------------------------------------------------------------------------------------------
# The browser: Chromium over the DevTools protocol (no driver package needed)
# ---------------------------------------------------------------------------------------------
class DevTools:
    """The few DevTools protocol calls the test needs, on one page."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, (method, message["error"])
                return message["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(AssertionError):
                value = self.evaluate(expression)
                if value:
                    return value
            time.sleep(0.5)
        location = self.evaluate("location.href")
        text = self.evaluate("document.body ? document.body.innerText.slice(0, 500) : ''")
        raise AssertionError(f"timed out waiting for {what}; at {location}: {text!r}")

    def type_into(self, selector: str, text: str) -> None:
        assert self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                             "if (!e) return false; e.focus(); return true; })()"), selector  # fmt: skip
        self.call("Input.insertText", text=text)

    def close(self) -> None:
        self.ws.close()


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[DevTools]:
    proc = subprocess.Popen(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--window-size=1400,1000",
            "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line or proc.poll() is None, "chromium exited before DevTools listened"
            if match := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
                port = int(match.group(1))
        assert port, "chromium did not open DevTools"
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        try:
            tools.call("Page.enable")
            tools.call("Runtime.enable")
            yield tools
        finally:
            tools.close()
    finally:
        _stop(proc)


@pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package `chromium`; .ci/run installs it)"
)
def test_a_reviewer_logs_in_and_reads_the_report_inside_the_airflow_ui(server, tmp_path):
    with chromium(tmp_path / "profile") as browser:
        browser.call("Page.navigate", url=f"{server.url}/compliance-report/")
        browser.wait_for("document.readyState === 'complete'", "the anonymous request")
        assert "Records of processing" not in browser.evaluate("document.body.innerText")

        browser.call("Page.navigate", url=f"{server.url}/plugin/compliance-report")
        browser.wait_for("!!document.querySelector('input[name=username]')", "Airflow's login page")
        browser.type_into("input[name=username]", USER)
        browser.type_into("input[name=password]", server.password)
        browser.evaluate("document.querySelector('button[type=submit]').click()")
        browser.wait_for("!location.pathname.startsWith('/auth/')", "the login to finish")
        if "/plugin/compliance-report" not in browser.evaluate("location.pathname"):
            browser.call("Page.navigate", url=f"{server.url}/plugin/compliance-report")

        inside = (
            "(() => { const f = document.querySelector('iframe'); const d = f && f.contentDocument;"
            " return d && d.body ? d.body.innerText : ''; })()"
        )
        text = browser.wait_for(f"(() => {{ const t = {inside}; return t.includes('Run summary') ? t : ''; }})()",
                                "the report inside the Airflow UI")  # fmt: skip
        assert "Compliance report" in text and "Records of processing (Art. 30)" in text
        # The report is the "Compliance report" view of Airflow's own UI (its React root around the iframe).
        assert browser.evaluate("location.pathname").startswith("/plugin/compliance-report")
        assert browser.evaluate("!!document.querySelector('#root iframe[title=\"Compliance report\"]')")
        assert browser.evaluate("document.querySelector('#root').innerText.length > 0"), "the Airflow UI is empty"
        time.sleep(1)  # fonts and the funnel chart settle
        save_screenshot(browser, "report_in_airflow.png")

        # The same report as a tab of a DAG run (its own report, or the latest with a notice).
        run_id = ingest_run_id(server, login(server))
        tab = f"{server.url}/dags/ingest_crm/runs/{quote(run_id, safe='')}/plugin/compliance-report-run"
        browser.call("Page.navigate", url=tab)
        text = browser.wait_for(f"(() => {{ const t = {inside}; return t.includes('Run summary') ? t : ''; }})()",
                                "the report tab of the ingest_crm run")  # fmt: skip
        assert "Records of processing (Art. 30)" in text
        src = browser.evaluate("document.querySelector('iframe').contentWindow.location.pathname")
        assert src == f"/compliance-report/runs/ingest_crm/{quote(run_id, safe='')}/", src
        time.sleep(1)
        save_screenshot(browser, "report_in_airflow_dag_run.png")


def save_screenshot(browser: DevTools, name: str) -> None:
    shot = b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    for target in (Path(os.environ["GMP_HOME"]) / "screenshots" / name, PROJECT_ROOT / "test-artifacts" / name):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shot)
