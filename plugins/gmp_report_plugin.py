"""Airflow plugin: the compliance report inside the Airflow UI, for authenticated Airflow users only.

Mounts `governed_marketing.report.server` in the api-server at `/compliance-report/` and adds two
external views: "Compliance report" in the navigation (the latest report) and a "Compliance report"
tab on every DAG run (that run's report). Airflow does not protect plugin endpoints by itself: every
request is authenticated with Airflow's own `get_user` (the JWT of the UI's `_token` cookie or an
`Authorization: Bearer` header) and authorized by the configured auth manager as reading DAG runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.core_api.security import GetUserDep
from airflow.plugins_manager import AirflowPlugin
from governed_marketing.report.server import create_app

URL_PREFIX = "/compliance-report"


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


async def airflow_reader(user: GetUserDep) -> AirflowReader:
    """401 without a token, 403 with an invalid one (Airflow's `get_user`); otherwise the user."""
    return AirflowReader(user)


def _reports_dir():
    from governed_marketing.settings import get_settings

    return get_settings().path("reports")


class ComplianceReportPlugin(AirflowPlugin):
    name = "governed_marketing_report"
    fastapi_apps = [
        {"app": create_app(_reports_dir, airflow_reader), "url_prefix": URL_PREFIX, "name": "Compliance report"}
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
