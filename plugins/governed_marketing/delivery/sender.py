"""Send one campaign's outbox through an SMTP relay: last-moment checks, the cap, the ledger.

Per run: the newest outbox file of the campaign is read; every recipient not yet in
ops.delivery_ledger is `planned`; consent, the suppression list, restriction and objection are
checked again (consent.still_eligible, the same last-moment check generation uses); verified
unsubscribe clicks waiting in the spool are applied before each chunk. Each chunk is marked
`sending` and committed before any DATA (see ledger: at most once), then sent over
`delivery.connections` connections under `delivery.per_minute_cap`. A 4xx is `deferred` and
retried after back-off (doubling), a 5xx is `bounced` and counted, never retried.
"""

from __future__ import annotations

import contextlib
import json
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

from governed_marketing.delivery import ledger, tokens
from governed_marketing.delivery.message import render_message
from governed_marketing.policy import Policy
from governed_marketing.privacy.suppression import contact_ref

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Messages marked `sending` per connection before their DATA: the most a crash can leave in doubt.
CHUNK_PER_CONNECTION = 50


@dataclass(frozen=True)
class Relay:
    """An SMTP relay (any ESP's SMTP endpoint). `describe()` never shows the password."""

    host: str
    port: int = 587
    security: Literal["none", "starttls", "tls"] = "starttls"
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> Relay:
        """smtp://user:pass@host:587?security=starttls (smtps:// means implicit TLS, port 465)."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("GMP_SMTP_URL must look like smtp://user:password@host:587?security=starttls")
        query = parse_qs(parts.query)
        security = query.get("security", ["tls" if parts.scheme == "smtps" else "starttls"])[0]
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"GMP_SMTP_URL: security={security!r} is not one of none, starttls, tls")
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if security == "tls" else 587),
            security=security,  # type: ignore[arg-type]
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.security}{', login' if self.user else ''})"

    def connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            client.ehlo()
            if self.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
        if self.user:
            client.login(self.user, self.password or "")
        return client


class PerMinuteCap:
    """Paces sends over all connections so that no 60-second window holds more than `per_minute`.

    A token bucket: `burst` (one second's worth) of slots missed while a chunk's ledger writes ran
    are made up afterwards, and the steady pace is `per_minute - burst` a minute, so steady pace plus
    burst never exceed the cap in any minute. None: no cap.
    """

    def __init__(
        self,
        per_minute: int | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.burst = max(1, (per_minute or 0) // 60)
        self.interval = 60.0 / max(1, per_minute - self.burst) if per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next = -float("inf")
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            slot = max(now - self.burst * self.interval, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


@dataclass
class Attempt:
    recipient_ref: str
    outcome: Literal["sent", "deferred", "bounced", "planned", "in_doubt"]
    reply: str | None = None


def _reply(code: int, text: bytes | str | None) -> str:
    """The relay's answer, code and first words only: a 5xx text may quote the address, so it is cut."""
    words = (text.decode("utf-8", "replace") if isinstance(text, bytes) else (text or "")).split()
    return f"{code} {' '.join(w for w in words[:4] if '@' not in w)}".strip()


class Connections:
    """One SMTP connection per worker thread, opened on first use and reopened after a failure."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._local = threading.local()
        self._all: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    def get(self) -> smtplib.SMTP:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self.relay.connect()
            self._local.client = client
            with self._lock:
                self._all.append(client)
        return client

    def drop(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            with contextlib.suppress(OSError):
                client.close()

    def close(self) -> None:
        for client in self._all:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.quit()


def send_one(connections: Connections, sender: str, recipient: str, data: bytes, ref: str) -> Attempt:
    """MAIL, RCPT, DATA by hand, so we know whether a failure came before DATA (not sent) or during it."""
    try:
        client = connections.get()
        code, text = client.mail(sender)
        if code != 250:
            client.rset()
            return Attempt(ref, "deferred" if 400 <= code < 500 else "bounced", _reply(code, text))
        code, text = client.rcpt(recipient)
        if code not in (250, 251):
            client.rset()
            return Attempt(ref, "deferred" if 400 <= code < 500 else "bounced", _reply(code, text))
    except (smtplib.SMTPException, OSError) as exc:
        connections.drop()  # nothing was handed over: the message is still to send
        return Attempt(ref, "planned", type(exc).__name__)
    try:
        code, text = client.data(data)
    except smtplib.SMTPDataError as exc:
        return Attempt(
            ref, "deferred" if 400 <= exc.smtp_code < 500 else "bounced", _reply(exc.smtp_code, exc.smtp_error)
        )
    except (smtplib.SMTPException, OSError) as exc:
        connections.drop()  # during DATA: the relay may have it. At most once: left in doubt.
        return Attempt(ref, "in_doubt", type(exc).__name__)
    if code != 250:  # the relay refused the message it received: not delivered
        return Attempt(ref, "deferred" if 400 <= code < 500 else "bounced", _reply(code, text))
    return Attempt(ref, "sent", _reply(code, text))


@dataclass
class DeliveryOutcome:
    campaign_id: str
    messages: int = 0
    planned: int = 0
    sent: int = 0
    deferred: int = 0
    bounced: int = 0
    suppressed_at_send: int = 0
    already_done: int = 0
    in_doubt: int = 0
    retries: int = 0
    unsubscribes_applied: int = 0

    def counts(self) -> dict[str, int | str]:
        return dict(self.__dict__)


def latest_outbox(outbox_root: Path, campaign_id: str) -> Path | None:
    files = sorted((outbox_root / campaign_id).glob("*.jsonl"), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return files[-1] if files else None


def read_outbox(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def eligible_contacts(conn: Warehouse, policy: Policy, campaign_id: str, as_of: datetime) -> dict[str, str]:
    """{contact_id: email} of the campaign's recipients still allowed now (consent, requests, suppression)."""
    from governed_marketing.consent import still_eligible

    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=as_of)
    rows = conn.execute(
        "select r.recipient_pseudonym, c.contact_id, c.email_normalized from marts.campaign_recipients r "
        "join raw.crm_contacts c on c.contact_id = r.contact_id where r.campaign_id = ?",
        [campaign_id],
    ).fetchall()
    return {contact_id: email for pseudonym, contact_id, email in rows if pseudonym in allowed}


def deliver_campaign(
    campaign_id: str,
    *,
    conn: Warehouse,
    policy: Policy,
    relay: Relay,
    outbox_root: Path,
    delivery_key: bytes,
    pseudonym_key: bytes,
    as_of: datetime,
    run_id: str,
    apply_unsubscribes: Callable[[Warehouse], Iterable[str]] = lambda conn: (),
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryOutcome:
    """Send what the ledger says is still to send of this campaign's newest outbox file.

    `apply_unsubscribes(conn)` applies the verified clicks waiting in the spool and returns the
    contact ids it suppressed; it runs before every chunk.
    """
    outcome = DeliveryOutcome(campaign_id)
    delivery = policy.delivery
    if delivery is None or campaign_id not in delivery.campaigns:
        return outcome
    path = latest_outbox(outbox_root, campaign_id)
    if path is None:
        return outcome
    rows = read_outbox(path)
    outcome.messages = len(rows)
    by_ref: dict[str, dict] = {}
    for row in rows:
        version = f"{row.get('prompt_version', '')}/{row.get('model', '')}"
        row["recipient_ref"] = contact_ref(pseudonym_key, row["contact_id"])
        row["content_version"] = version
        row["message_key"] = tokens.message_key(delivery_key, campaign_id, row["contact_id"], version)
        by_ref[row["recipient_ref"]] = row
    outcome.planned = ledger.plan(conn, campaign_id, pd.DataFrame(list(by_ref.values())), run_id=run_id)
    outcome.unsubscribes_applied += len(list(apply_unsubscribes(conn)))

    state = ledger.states(conn, campaign_id)
    todo = [ref for ref in by_ref if state[ref][0] in ledger.SENDABLE]
    outcome.in_doubt = sum(1 for ref in by_ref if state[ref][0] == "sending")
    outcome.already_done = len(by_ref) - len(todo) - outcome.in_doubt
    campaign = delivery.campaigns[campaign_id]
    sender_address = campaign.sender.rpartition("<")[2].rstrip(">").strip()
    cap = PerMinuteCap(delivery.per_minute_cap)
    connections = Connections(relay)

    def build(ref: str) -> tuple[str, bytes]:
        row = by_ref[ref]
        key = state[ref][2]  # the key planned first: the Message-ID never changes for this recipient
        data = render_message(
            row,
            campaign=campaign,
            delivery=delivery,
            message_key=key,
            token=tokens.unsubscribe_token(delivery_key, key),
        )
        return row["email"], data

    def work(refs: list[str]) -> list[Attempt]:
        done = []
        for ref in refs:
            recipient, data = build(ref)
            cap.wait()
            done.append(send_one(connections, sender_address, recipient, data, ref))
        return done

    def pass_over(refs: list[str]) -> list[str]:
        """Send these recipients' messages in chunks; return the ones deferred."""
        deferred: list[str] = []
        chunk = CHUNK_PER_CONNECTION * delivery.connections
        with ThreadPoolExecutor(max_workers=delivery.connections, thread_name_prefix="smtp") as pool:
            allowed = eligible_contacts(conn, policy, campaign_id, as_of)
            for start in range(0, len(refs), chunk):
                for contact_id in apply_unsubscribes(conn):  # a click since the last chunk: honoured now
                    outcome.unsubscribes_applied += 1
                    allowed.pop(contact_id, None)
                part = refs[start : start + chunk]
                ok = [r for r in part if allowed.get(by_ref[r]["contact_id"]) == by_ref[r]["email"]]
                kept = set(ok)
                blocked = [r for r in part if r not in kept]
                ledger.mark(conn, campaign_id, blocked, "suppressed", run_id=run_id)
                outcome.suppressed_at_send += len(blocked)
                ledger.mark(conn, campaign_id, ok, "sending", run_id=run_id)  # committed before any DATA
                shares = [ok[i :: delivery.connections] for i in range(delivery.connections)]
                attempts = [a for done in pool.map(work, [s for s in shares if s]) for a in done]
                for status in ("sent", "deferred", "bounced", "planned"):
                    group = [a for a in attempts if a.outcome == status]
                    for reply in sorted({a.reply for a in group}, key=str):
                        refs_ = [a.recipient_ref for a in group if a.reply == reply]
                        ledger.mark(conn, campaign_id, refs_, status, reply=reply, attempted=status != "planned")
                outcome.sent += sum(a.outcome == "sent" for a in attempts)
                outcome.bounced += sum(a.outcome == "bounced" for a in attempts)
                outcome.in_doubt += sum(a.outcome == "in_doubt" for a in attempts)
                deferred += [a.recipient_ref for a in attempts if a.outcome in ("deferred", "planned")]
        return deferred

    try:
        deferred = pass_over(todo)
        for attempt in range(1, delivery.retry.attempts):
            if not deferred:
                break
            sleep(delivery.retry.backoff_seconds * 2 ** (attempt - 1))
            outcome.retries += len(deferred)
            deferred = pass_over(deferred)
    finally:
        connections.close()
    outcome.deferred = len(deferred)
    log.info(
        "delivery %s via %s: %d sent, %d deferred, %d bounced, %d suppressed at send, %d in doubt",
        campaign_id,
        relay.describe(),
        outcome.sent,
        outcome.deferred,
        outcome.bounced,
        outcome.suppressed_at_send,
        outcome.in_doubt,
    )
    return outcome
