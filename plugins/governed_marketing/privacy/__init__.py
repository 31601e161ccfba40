"""Data subject rights, erasure that leaves no trace, retention and the audit trail (GDPR Art. 5, 12-21, 30).

- `dsr`: intake (`gmp dsr submit`, the CRM's dsr_requests.csv), deadlines in calendar months, the ledger.
- `process`: answers every request that is due for work (the `process_privacy_requests` DAG).
- `access`, `erasure`, `rectification`: the rights themselves; `scan` proves what erasure left.
- `suppression`: keyed HMACs of erased and objecting people, dropped at the ingest door.
- `retention`: governance.yml `retention` applied to each store (the `purge_expired_data` DAG).
- `audit`: the append-only, hash-chained audit log.
- `report`: the privacy section of the compliance report.

Nothing here imports Airflow; nothing here logs, prints or stores an identifier outside the stores
that hold personal data by design.
"""

from __future__ import annotations

from typing import Any


def report_section(conn: Any, policy: Any, **kwargs: Any) -> dict:
    """The privacy part of the compliance report (see `privacy.report`)."""
    from governed_marketing.privacy.report import report_section as _section

    return _section(conn, policy, **kwargs)
