"""The CRM side: the export contract, the HubSpot source (and what goes back to it), the ingest into raw tables."""
