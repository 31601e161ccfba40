"""Data subject rights, erasure that leaves no trace, retention and the audit trail (GDPR Art. 5, 12-21, 30).

- `dsr`: intake (`gmp dsr submit`, the CRM's dsr_requests.csv), deadlines in calendar months, the ledger.
- `process`: answers every request that is due for work (the `process_privacy_requests` DAG).
- `access`, `erasure`, `rectification`: the rights themselves; `scan` proves what erasure left.
- `suppression`: keyed HMACs of erased and objecting people, dropped at the ingest door.
- `retention`: governance.yml `retention` applied to each store (the `purge_expired_data` DAG).
- `audit`: the append-only, hash-chained audit log.
- `report`: the privacy section of the compliance report.

Nothing here logs, prints or stores an identifier outside the stores
that hold personal data by design.
"""
