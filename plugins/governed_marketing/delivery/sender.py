"""Send one campaign's outbox through an SMTP relay: last-moment checks, the cap, the ledger.

Per run, the newest outbox file of the campaign is read a batch at a time (BATCH_CHUNKS chunks),
so memory holds one batch whatever the campaign's size. Per batch: recipients not yet in
ops.delivery_ledger are `planned` (one set-based insert); consent, the suppression list,
restriction and objection are checked again for the batch just before it is sent
(consent.still_eligible, the same last-moment check generation uses); verified unsubscribe clicks
waiting in the spool are applied before each chunk. Each chunk is marked `sending` and committed
before any DATA (see ledger: at most once), then sent over `delivery.connections` connections under
`delivery.per_minute_cap`. A 4xx is `deferred` and retried after back-off (doubling; each retry is
one more pass over the outbox), a 5xx is `bounced` and counted, never retried; a message still
deferred `delivery.give_up_deferred_after_hours` after it was planned is `undeliverable`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

from governed_marketing.crm.contract import is_valid_email
from governed_marketing.delivery import ledger, tokens
from governed_marketing.delivery.message import render_message
from governed_marketing.policy import Policy
from governed_marketing.privacy.suppression import contact_ref

if TYPE_CHECKING:
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Messages marked `sending` per connection before their DATA: the most a crash can leave in doubt.
CHUNK_PER_CONNECTION = 50
#: Chunks per batch of the outbox read, planned and re-checked at once: the sender's memory holds
#: one batch (about 2,000 rows with 2 connections), whatever the campaign's size.
BATCH_CHUNKS = 20


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
    undeliverable: int = 0
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


#: The keys the sender reads from an outbox row (publish writes them).
OUTBOX_KEYS = ("contact_id", "email", "subject", "body")


def iter_outbox(path: Path, size: int) -> Iterator[list[dict]]:
    """The outbox file in batches of `size` rows, read line by line: memory holds one batch."""
    batch: list[dict] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}: line {number} is not JSON ({type(exc).__name__})") from None
            missing = [key for key in OUTBOX_KEYS if not isinstance(row, dict) or key not in row]
            if missing:
                raise ValueError(f"{path}: line {number} has no {', '.join(missing)}")
            if not is_valid_email(row["email"]):  # before any row is marked `sending`: nothing left in doubt
                raise ValueError(f"{path}: line {number}: the email is not an address the CRM contract accepts")
            batch.append(row)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


def eligible_contacts(
    conn: Warehouse, policy: Policy, campaign_id: str, as_of: datetime, contact_ids: list[str]
) -> dict[str, str]:
    """{contact_id: email} of these recipients still allowed now (consent, requests, suppression)."""
    from governed_marketing.consent import still_eligible

    if not contact_ids:
        return {}
    allowed = still_eligible(conn, policy=policy, campaign_id=campaign_id, as_of=as_of, contact_ids=contact_ids)
    rows = conn.execute(
        "select r.recipient_pseudonym, c.contact_id, c.email_normalized from marts.campaign_recipients r "
        "join raw.crm_contacts c on c.contact_id = r.contact_id "
        "where r.campaign_id = ? and r.contact_id = any(cast(? as varchar[]))",
        [campaign_id, list(contact_ids)],
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
    campaign = delivery.campaigns[campaign_id]
    sender_address = campaign.sender.rpartition("<")[2].rstrip(">").strip()
    cap = PerMinuteCap(delivery.per_minute_cap)
    connections = Connections(relay)
    chunk = CHUNK_PER_CONNECTION * delivery.connections
    give_up_before = ledger.now() - timedelta(hours=delivery.give_up_deferred_after_hours)

    def keyed(rows: list[dict]) -> dict[str, dict]:
        """{recipient_ref: row} of one batch, with the ledger's keys (a duplicate row: the last wins)."""
        by_ref: dict[str, dict] = {}
        for row in rows:
            version = f"{row.get('prompt_version', '')}/{row.get('model', '')}"
            row["recipient_ref"] = contact_ref(pseudonym_key, row["contact_id"])
            row["content_version"] = version
            row["message_key"] = tokens.message_key(delivery_key, campaign_id, row["contact_id"], version)
            by_ref[row["recipient_ref"]] = row
        return by_ref

    def send_chunk(pool: ThreadPoolExecutor, part: list[str], by_ref: dict[str, dict], keys: dict[str, str]) -> int:
        """Send one chunk (already marked `sending`); record the answers; return how many are left to retry."""

        def work(refs: list[str]) -> list[Attempt]:  # in the worker threads: rendering is the CPU
            done = []
            for ref in refs:
                row, key = by_ref[ref], keys[ref]  # the key planned first: the Message-ID never changes
                data = render_message(
                    row,
                    campaign=campaign,
                    delivery=delivery,
                    message_key=key,
                    token=tokens.unsubscribe_token(delivery_key, key),
                )
                cap.wait()
                done.append(send_one(connections, sender_address, row["email"], data, ref))
            return done

        shares = [part[i :: delivery.connections] for i in range(delivery.connections)]
        attempts = [a for done in pool.map(work, [s for s in shares if s]) for a in done]
        for status in ("sent", "deferred", "bounced", "planned"):
            group = [a for a in attempts if a.outcome == status]
            for reply in sorted({a.reply for a in group}, key=str):
                refs_ = [a.recipient_ref for a in group if a.reply == reply]
                ledger.mark(conn, campaign_id, refs_, status, reply=reply, attempted=status != "planned")
        deferred = [a.recipient_ref for a in attempts if a.outcome == "deferred"]
        given_up = ledger.give_up(conn, campaign_id, planned_before=give_up_before, refs=deferred)
        outcome.undeliverable += given_up
        outcome.sent += sum(a.outcome == "sent" for a in attempts)
        outcome.bounced += sum(a.outcome == "bounced" for a in attempts)
        outcome.in_doubt += sum(a.outcome == "in_doubt" for a in attempts)
        return len(deferred) - given_up + sum(a.outcome == "planned" for a in attempts)

    def pass_over(pool: ThreadPoolExecutor, *, first: bool) -> int:
        """One pass over the outbox, a batch at a time: plan, check, send what the ledger says is
        still to send. Returns how many messages are left deferred (4xx, or no connection)."""
        left = 0
        for rows in iter_outbox(path, chunk * BATCH_CHUNKS):
            by_ref = keyed(rows)
            if first:
                outcome.messages += len(rows)
                frame = pd.DataFrame(
                    {k: [r[k] for r in by_ref.values()] for k in ("recipient_ref", "message_key", "content_version")}
                )
                outcome.planned += ledger.plan(conn, campaign_id, frame, run_id=run_id)
            state = ledger.states(conn, campaign_id, list(by_ref))
            status = {ref: state[ref][0] if ref in state else "gone" for ref in by_ref}  # gone: erased since
            todo = [ref for ref in by_ref if status[ref] in ledger.SENDABLE]
            if first:
                in_doubt = sum(1 for ref in by_ref if status[ref] == "sending")
                outcome.in_doubt += in_doubt
                outcome.already_done += len(by_ref) - len(todo) - in_doubt
            if not todo:
                continue
            outcome.unsubscribes_applied += len(list(apply_unsubscribes(conn)))
            # The last-moment check, for this batch just before its chunks leave.
            allowed = eligible_contacts(conn, policy, campaign_id, as_of, [by_ref[r]["contact_id"] for r in todo])
            for start in range(0, len(todo), chunk):
                for contact_id in apply_unsubscribes(conn):  # a click since the last chunk: honoured now
                    outcome.unsubscribes_applied += 1
                    allowed.pop(contact_id, None)
                part = todo[start : start + chunk]
                ok = [r for r in part if allowed.get(by_ref[r]["contact_id"]) == by_ref[r]["email"]]
                kept = set(ok)
                blocked = [r for r in part if r not in kept]
                ledger.mark(conn, campaign_id, blocked, "suppressed", run_id=run_id)
                outcome.suppressed_at_send += len(blocked)
                ledger.mark(conn, campaign_id, ok, "sending", run_id=run_id)  # committed before any DATA
                if ok:
                    left += send_chunk(pool, ok, by_ref, {r: state[r][2] for r in ok})
        return left

    try:
        with ThreadPoolExecutor(max_workers=delivery.connections, thread_name_prefix="smtp") as pool:
            left = pass_over(pool, first=True)
            for attempt in range(1, delivery.retry.attempts):
                if not left:
                    break
                sleep(delivery.retry.backoff_seconds * 2 ** (attempt - 1))
                outcome.retries += left
                left = pass_over(pool, first=False)
    finally:
        connections.close()
    outcome.deferred = left
    # Deferred rows this outbox no longer holds (an earlier content version) are given up by age too.
    outcome.undeliverable += ledger.give_up(conn, campaign_id, planned_before=give_up_before)
    log.info(
        "delivery %s via %s: %d sent, %d deferred, %d bounced, %d undeliverable, %d suppressed at send, %d in doubt",
        campaign_id,
        relay.describe(),
        outcome.sent,
        outcome.deferred,
        outcome.bounced,
        outcome.undeliverable,
        outcome.suppressed_at_send,
        outcome.in_doubt,
    )
    return outcome
