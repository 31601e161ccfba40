"""The CRM export: its contract, a sample generator and the ingest into raw tables."""
