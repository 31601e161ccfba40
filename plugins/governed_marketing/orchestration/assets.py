"""Airflow assets that chain the DAGs (ingest -> models -> content), and the pool of warehouse writers."""

from __future__ import annotations

from airflow.sdk import Asset

RAW_CRM = Asset("gmp://warehouse/raw/crm", extra={"layer": "raw"})
CAMPAIGN_AUDIENCES = Asset("gmp://warehouse/marts/campaign_audience", extra={"layer": "marts"})
OUTBOX = Asset("gmp://outbox", extra={"layer": "outbox"})

#: One writer at a time on the DuckDB file (DuckDB admits one writing process): every task that writes
#: uses this pool.
WAREHOUSE_POOL = "warehouse_writer"
