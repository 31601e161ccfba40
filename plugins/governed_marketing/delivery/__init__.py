"""SMTP delivery of the outbox, with RFC 8058 one-click unsubscribe that is a GDPR objection at once.

- `tokens`: the keyed HMACs of Message-IDs and unsubscribe tokens (no email, contact id or pseudonym).
- `message`: one outbox row as a MIME message (plain text + escaped HTML, List-Unsubscribe headers).
- `ledger`: ops.delivery_ledger, the at-most-once record of who got which campaign.
- `sender`: the SMTP connections, the per-minute cap, 4xx back-off, 5xx bounces.
- `unsubscribe`: the spool of verified clicks, applied as objections; the FastAPI endpoint.
- `mailbox`: the mailto path, read from a local mailbox folder by the privacy DAG.
"""
