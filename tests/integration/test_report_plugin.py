"""The compliance report plugin inside Airflow's own API app, with Airflow's auth manager.

Airflow's real `create_app` loads `plugins/gmp_report_plugin.py` from the plugins folder and mounts
the report app; tokens are minted the way Airflow mints them (`auth_manager.generate_jwt`) and
checked by Airflow's `get_user`. The reports folder holds a latest report, one run's report, and
secrets next to it that no URL may reach.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration

PREFIX = "/compliance-report"
SECRET = "PERSONAL-DATA-OUTSIDE-THE-REPORTS-FOLDER"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A GMP_HOME with a latest report, the report of run `manual__1` of ingest_crm, and secrets around it."""
    home = tmp_path_factory.mktemp("gmp-plugin")
    reports = home / "reports"
    (reports / "data_docs" / "static" / "styles").mkdir(parents=True)
    (reports / "index.html").write_text("<html><body><h1>Compliance report</h1>LATEST-REPORT</body></html>")
    (reports / "report.json").write_text('{"report_version": 1, "marker": "LATEST-JSON"}\n')
    (reports / "data_docs" / "index.html").write_text("<html><head></head><body>LATEST-DATA-DOCS</body></html>")
    (reports / "data_docs" / "static" / "styles" / "gmp_offline.css").write_text("body { color: #202124; }")
    run = reports / "runs" / "ingest_crm" / "manual__1"
    (run / "data_docs").mkdir(parents=True)
    (run / "index.html").write_text("<html><body>RUN-REPORT manual__1</body></html>")
    (run / "data_docs" / "index.html").write_text("<html><body>RUN-DATA-DOCS</body></html>")
    (home / "secret.txt").write_text(SECRET)
    (reports / "index.html.partial").write_text(SECRET)
    (reports / "leak.html").symlink_to(home / "secret.txt")
    return home


@pytest.fixture(scope="module")
def airflow(home: Path) -> Iterator[tuple[TestClient, object]]:
    """Airflow's API app (core) with this repo's plugins folder and the simple auth manager."""
    saved = dict(os.environ)
    os.environ.update(
        {
            "GMP_HOME": str(home),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "reviewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        }
    )
    from airflow import plugins_manager
    from airflow import settings as airflow_settings
    from airflow.api_fastapi import app as api_app
    from airflow.utils.db import upgradedb
    from governed_marketing.settings import reset_settings

    reset_settings()
    if airflow_settings.Session is None:
        airflow_settings.configure_orm()
    upgradedb()
    saved_plugins_folder = airflow_settings.PLUGINS_FOLDER
    caches = (plugins_manager._get_plugins, plugins_manager.get_fastapi_plugins, plugins_manager._get_ui_plugins)

    airflow_settings.PLUGINS_FOLDER = str(PROJECT_ROOT / "plugins")
    for cached in caches:
        cached.cache_clear()
    api_app.purge_cached_app()
    try:
        app = api_app.create_app(apps="core")
        with TestClient(app, base_url="http://testserver") as client:
            yield client, api_app.get_auth_manager()
    finally:
        airflow_settings.PLUGINS_FOLDER = saved_plugins_folder
        for cached in caches:
            cached.cache_clear()
        api_app.purge_cached_app()
        os.environ.clear()
        os.environ.update(saved)
        reset_settings()


def token(auth_manager, role: str | None, username: str = "reviewer") -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return auth_manager.generate_jwt(SimpleAuthManagerUser(username=username, role=role))


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.mark.parametrize(
    "path",
    ["/", "/report.json", "/data_docs/index.html", "/runs/ingest_crm/manual__1/", "/no/such/page.html"],
)
def test_an_anonymous_request_is_refused(airflow, path):
    client, _ = airflow
    response = client.get(PREFIX + path)
    assert response.status_code == 401
    assert "LATEST" not in response.text and "RUN-" not in response.text


def test_a_token_not_signed_by_airflow_is_refused(airflow):
    client, _ = airflow
    forged = jwt.encode({"sub": "reviewer", "role": "admin"}, "not-airflows-secret-" * 4, algorithm="HS512")
    response = client.get(PREFIX + "/", headers=bearer(forged))
    assert response.status_code in (401, 403)
    assert "LATEST" not in response.text


def test_a_user_the_auth_manager_does_not_let_read_dag_runs_is_forbidden(airflow):
    client, auth_manager = airflow
    no_role = token(auth_manager, None, username="nobody")
    assert client.get(PREFIX + "/", headers=bearer(no_role)).status_code == 403
    assert client.get(PREFIX + "/runs/ingest_crm/manual__1/", headers=bearer(no_role)).status_code == 403


def test_an_authenticated_viewer_reads_the_latest_report_json_and_data_docs(airflow):
    client, auth_manager = airflow
    headers = bearer(token(auth_manager, "viewer"))
    page = client.get(PREFIX + "/", headers=headers)
    assert page.status_code == 200 and "LATEST-REPORT" in page.text
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'none'" in csp
    assert client.get(PREFIX + "/report.json", headers=headers).json()["marker"] == "LATEST-JSON"
    assert "LATEST-DATA-DOCS" in client.get(PREFIX + "/data_docs/", headers=headers).text
    css = client.get(PREFIX + "/data_docs/static/styles/gmp_offline.css", headers=headers)
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_the_ui_session_cookie_is_accepted_like_airflows_own_routes(airflow):
    client, auth_manager = airflow
    response = client.get(PREFIX + "/", cookies={"_token": token(auth_manager, "viewer")})
    assert response.status_code == 200 and "LATEST-REPORT" in response.text


def test_a_dag_run_has_its_own_report(airflow):
    client, auth_manager = airflow
    headers = bearer(token(auth_manager, "viewer"))
    run = client.get(PREFIX + "/runs/ingest_crm/manual__1/", headers=headers)
    assert run.status_code == 200 and "RUN-REPORT manual__1" in run.text
    docs = client.get(PREFIX + "/runs/ingest_crm/manual__1/data_docs/index.html", headers=headers)
    assert "RUN-DATA-DOCS" in docs.text
    bare = client.get(PREFIX + "/runs/ingest_crm/manual__1", headers=headers, follow_redirects=False)
    assert bare.status_code == 307 and bare.headers["location"] == "manual__1/"


def test_a_run_without_a_report_yet_shows_the_latest_with_a_notice(airflow):
    client, auth_manager = airflow
    headers = bearer(token(auth_manager, "viewer"))
    run_id = "scheduled__2026-12-07T00:00:00+00:00"
    page = client.get(f"{PREFIX}/runs/ingest_crm/{run_id.replace('+', '%2B')}/", headers=headers)
    assert page.status_code == 200
    assert "LATEST-REPORT" in page.text
    assert f"No report for run {run_id} of ingest_crm yet" in page.text
    docs = client.get(f"{PREFIX}/runs/ingest_crm/{run_id.replace('+', '%2B')}/data_docs/index.html", headers=headers)
    assert "LATEST-DATA-DOCS" in docs.text


@pytest.mark.parametrize(
    "path",
    [
        "/..%2Fsecret.txt",
        "/data_docs/..%2F..%2Fsecret.txt",
        "/%2E%2E/secret.txt",
        "/leak.html",  # a symlink inside the folder pointing out of it
        "/index.html.partial",  # not a report file type
        "/runs/..%2F..%2F/x/secret.txt",
        "/runs/ingest_crm/..%2F..%2F..%2F/secret.txt",
        "/runs/ingest_crm/manual__1/..%2F..%2F..%2F..%2Fsecret.txt",
        "/runs/ingest_crm/manual__1/%2Fetc%2Fpasswd",
    ],
)
def test_no_path_leaves_the_reports_folder(airflow, path):
    client, auth_manager = airflow
    response = client.get(PREFIX + path, headers=bearer(token(auth_manager, "admin", username="admin")))
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert SECRET not in response.text and "root:" not in response.text


def test_the_runs_folder_is_not_listed_through_the_latest_route(airflow):
    """`/runs/...` under the latest route would skip the per-DAG check: it is not served there."""
    client, auth_manager = airflow
    headers = bearer(token(auth_manager, "viewer"))
    assert client.get(PREFIX + "/runs", headers=headers).status_code == 404
    assert client.get(PREFIX + "/runs/ingest_crm", headers=headers).status_code == 404


def test_the_plugin_adds_a_nav_entry_and_a_dag_run_view(airflow):
    client, auth_manager = airflow
    plugins = client.get("/api/v2/plugins", headers=bearer(token(auth_manager, "admin", username="admin"))).json()
    (ours,) = [p for p in plugins["plugins"] if p["name"] == "governed_marketing_report"]
    views = {view["destination"]: view for view in ours["external_views"]}
    assert views["nav"]["href"] == "compliance-report/" and views["nav"]["name"] == "Compliance report"
    assert views["dag_run"]["href"] == "compliance-report/runs/{DAG_ID}/{RUN_ID}/"
    assert [app["url_prefix"] for app in ours["fastapi_apps"]] == [PREFIX, "/unsubscribe"]


def test_loading_the_plugin_imports_neither_the_report_nor_the_api(tmp_path):
    """Every task process loads the plugins folder (for macros): the app is built on the first request only."""
    import subprocess
    import sys

    probe = (
        "import sys, gmp_report_plugin; "
        "print(sorted(m for m in ('fastapi', 'governed_marketing.report', 'airflow.api_fastapi.core_api.security') "
        "if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "plugins")}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_unsubscribe_endpoint_is_mounted_without_airflow_auth(airflow, home):
    """Recipients are anonymous: the token is the credential. GET confirms only; a forged token is refused."""
    from governed_marketing.delivery import tokens
    from governed_marketing.settings import get_settings

    client, _ = airflow
    valid = tokens.unsubscribe_token(get_settings().resolve_delivery_key(), "a" * 32)
    page = client.get(f"/unsubscribe/{valid}")
    assert page.status_code == 200 and 'method="post"' in page.text
    assert not (home / "unsubscribe_spool").exists()  # a GET (a link scanner) records nothing
    assert client.post(f"/unsubscribe/{valid[:-2]}00").status_code == 400
    answer = client.post(f"/unsubscribe/{valid}", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 200 and "unsubscribed" in answer.text
    assert client.get(PREFIX + "/").status_code == 401  # the report still needs Airflow auth
