"""Secrets Airflow holds for the tasks: read here, passed to the library, never logged."""

from __future__ import annotations

#: The Airflow connection holding the HubSpot private app's token (in its password).
HUBSPOT_CONNECTION = "hubspot_default"


def hubspot_token() -> str | None:
    """The token in the Airflow connection `hubspot_default`, or None (then HUBSPOT_ACCESS_TOKEN is used)."""
    from airflow.sdk import BaseHook

    try:
        connection = BaseHook.get_connection(HUBSPOT_CONNECTION)
    except Exception:  # noqa: BLE001 - not defined: the environment variable is the fallback
        return None
    return connection.password or None
