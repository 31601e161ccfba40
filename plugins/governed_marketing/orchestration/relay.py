"""The SMTP relay of the deliver_campaign DAG: Airflow's `smtp_default` connection, else GMP_SMTP_URL.

Connection fields: host, port, login, password; `extra` may say {"security": "starttls" | "tls" |
"none"} (default: tls on port 465, else starttls). Neither configured: None, and delivery is off.
"""

from __future__ import annotations

from governed_marketing.delivery.sender import Relay
from governed_marketing.settings import get_settings

CONN_ID = "smtp_default"


def smtp_relay(conn_id: str = CONN_ID) -> Relay | None:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        url = get_settings().smtp_url
        return Relay.from_url(url.get_secret_value()) if url is not None and url.get_secret_value() else None
    port = int(conn.port or 587)
    security = (conn.extra_dejson or {}).get("security") or ("tls" if port == 465 else "starttls")
    if security not in ("none", "starttls", "tls"):
        raise ValueError(f"Airflow connection {conn_id}: extra.security {security!r} is not none, starttls or tls")
    return Relay(host=conn.host, port=port, security=security, user=conn.login or None, password=conn.password)
