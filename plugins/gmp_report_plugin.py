"""Airflow plugin: the compliance report inside the Airflow UI, for authenticated Airflow users only.

Mounts `governed_marketing.report.server` in the api-server at `/compliance-report/` and adds two
external views: "Compliance report" in the navigation (the latest report) and a "Compliance report"
tab on every DAG run (that run's report). Airflow does not protect plugin endpoints by itself: every
request is authenticated with Airflow's own `get_user` (the JWT of the UI's `_token` cookie or an
`Authorization: Bearer` header) and authorized by the configured auth manager as reading DAG runs.

It also mounts the one-click unsubscribe endpoint (`governed_marketing.delivery.unsubscribe`) at
`/unsubscribe/`, deliberately WITHOUT Airflow auth: recipients are anonymous, the HMAC token in the
URL is the credential, and an invalid token changes nothing.

Every Airflow process loads the plugins folder (each task does, for macros), so this module imports
nothing but `AirflowPlugin`: the app is built on the api-server's first request to it.
"""

import asyncio
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/compliance-report"
UNSUBSCRIBE_PREFIX = "/unsubscribe"


def build_app() -> Any:
    """The report app with Airflow's authentication and the auth manager's DAG-run permission."""
    from dataclasses import dataclass

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends
    from governed_marketing.report.server import create_app
    from governed_marketing.settings import get_settings

    @dataclass
    class AirflowReader:
        """An Airflow user; may read a report when the auth manager lets them read the DAG's runs."""

        user: BaseUser

        def may_read(self, dag_id: str | None) -> bool:
            from airflow.models.dag import DagModel

            team = DagModel.get_team_name(dag_id) if dag_id else None
            return get_auth_manager().is_authorized_dag(
                method="GET",
                access_entity=DagAccessEntity.RUN,
                details=DagDetails(id=dag_id, team_name=team),
                user=self.user,
            )

    async def airflow_reader(user: BaseUser = Depends(get_user)) -> AirflowReader:  # noqa: B008 - FastAPI's idiom
        """401 without a token, 403 with an invalid one (Airflow's `get_user`); otherwise the user."""
        return AirflowReader(user)

    return create_app(lambda: get_settings().path("reports"), airflow_reader)


def build_unsubscribe_app() -> Any:
    """The unsubscribe endpoint: no Airflow auth (see the module docstring)."""
    from governed_marketing.delivery.unsubscribe import apply_with_settings, create_app
    from governed_marketing.settings import get_settings

    return create_app(
        lambda: get_settings().home_dir, lambda: get_settings().resolve_delivery_key(), apply_with_settings
    )


class LazyReportApp:
    """An ASGI app that builds the real one (in a worker thread) on its first request."""

    def __init__(self, build: Any = None) -> None:
        self._build = build or build_app
        self._app: Any = None
        self._lock: asyncio.Lock | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if self._app is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._app is None:
                    self._app = await asyncio.to_thread(self._build)
        await self._app(scope, receive, send)


class ComplianceReportPlugin(AirflowPlugin):
    name = "governed_marketing_report"
    fastapi_apps = [
        {"app": LazyReportApp(), "url_prefix": URL_PREFIX, "name": "Compliance report"},
        {"app": LazyReportApp(build_unsubscribe_app), "url_prefix": UNSUBSCRIBE_PREFIX, "name": "Unsubscribe"},
    ]
    # Relative hrefs: the UI resolves them against its base URL, so a proxy prefix keeps working.
    external_views = [
        {
            "name": "Compliance report",
            "href": "compliance-report/",
            "destination": "nav",
            "url_route": "compliance-report",
            "nav_top_level": True,
        },
        {
            "name": "Compliance report",
            "href": "compliance-report/runs/{DAG_ID}/{RUN_ID}/",
            "destination": "dag_run",
            "url_route": "compliance-report-run",
        },
    ]
