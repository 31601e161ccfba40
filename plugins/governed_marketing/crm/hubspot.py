"""HubSpot as the CRM source: an incremental pull written as a CRM export in the contract's shape.

The pull is loaded by the same `crm.ingest.ingest_export` as a CSV drop, so the contract, the raw gate
and the quarantine are the same (the HubSpot object id is the `contact_id`, named in a quarantined
row's record). What is pulled (`governance.yml` `hubspot`):

- contacts through the CRM v3 search API, incremental on `lastmodifieddate` from the cursor kept in
  `ops.hubspot_cursor`; a time window whose result count passes the search API's 10,000-results
  ceiling is split in two until each window fits; pages by `after`;
- each page's subscription statuses (communication preferences, one batch read per page, read by a
  worker while the next page is searched), mapped by subscription type to the consent purposes, with
  their legal basis and timestamp: a consent event whose `source` names HubSpot;
- merged contacts: the survivor's `hs_merged_object_ids` map each merged-away id to it
  (`ops.hubspot_merges`; that id's raw rows move to the survivor after the load);
- archived (deleted) contacts we hold: an erasure request on our side (`dsr_requests.csv`, request id
  `hubspot-archived-<id>`), answered by the privacy step like any other, recorded in
  `ops.hubspot_archived`.

Requests honour HubSpot's `X-HubSpot-RateLimit-*` headers (paced to spend the cap, not pass it) and
429s (waited out, then resumed), retry 5xx and connection errors, and stop at once on 401/403
(`HubSpotAuthRejected`). The pull's requests made, retried and rate-limited are recorded in
`ops.hubspot_pulls` and the run's ingest step. Nothing personal is logged.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from governed_marketing.crm import contract
from governed_marketing.errors import CrmExportError

if TYPE_CHECKING:
    from governed_marketing.policy import HubSpot, Policy
    from governed_marketing.warehouse import Warehouse

log = logging.getLogger(__name__)

SEARCH_CEILING = 10_000  # HubSpot's search API: no more than this many results per query
STATUS_PAGES_AHEAD = 2  # pages whose status reads may wait behind the search (memory, not speed)
PORTAL = "default"
ARCHIVED_PREFIX = "hubspot-archived-"
EPOCH = datetime(1970, 1, 1)


class HubSpotAuthRejected(CrmExportError):
    """HubSpot answered 401 or 403: the token is missing, wrong, expired or lacks a scope. A retry repeats it."""

    retryable = False


class HubSpotNotConfigured(CrmExportError):
    """The HubSpot source is chosen but no token is set."""

    retryable = False


class HubSpotUnavailable(RuntimeError):
    """HubSpot kept failing (5xx, connection errors, 429s) after every retry: left to the task's retries."""


@dataclass
class RequestCounts:
    made: int = 0
    retried: int = 0  # 5xx and connection errors, tried again
    rate_limited: int = 0  # 429s waited out
    waited_seconds: float = 0.0  # pacing under the cap and 429 back-off


class Pacer:
    """Keeps requests under the cap HubSpot announces (`X-HubSpot-RateLimit-Max` per `-Interval-Milliseconds`).

    A sliding window of our own requests: the next one waits until the window has room. A request holds
    its slot from when it is sent and is stamped again when its answer arrives (HubSpot counted it at
    some moment in between), so our window never frees a slot before HubSpot's does: a request sent when
    ours has room finds room there too, and the budget is spent without the 429 a send-time stamp meets.
    Thread-safe: waiting callers queue for the window one at a time.
    """

    def __init__(
        self, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cap: int | None = None
        self.interval = 10.0
        self.sent: deque[list[float]] = deque()  # one [stamp] per request in the window, oldest sent first
        self.sleep = sleep
        self.clock = clock
        self._queue = threading.Lock()  # one waiter at a time
        self._lock = threading.Lock()  # the window itself

    def observe(self, headers: dict[str, str] | None) -> None:
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        with self._lock:
            if "x-hubspot-ratelimit-max" in lowered:
                self.cap = int(lowered["x-hubspot-ratelimit-max"])
            if "x-hubspot-ratelimit-interval-milliseconds" in lowered:
                self.interval = int(lowered["x-hubspot-ratelimit-interval-milliseconds"]) / 1000

    def wait(self) -> float:
        """Wait for a slot and take it; returns the seconds waited. `acquire` also returns the slot."""
        return self.acquire()[0]

    def acquire(self) -> tuple[float, list[float]]:
        """Wait until the window has room, take a slot (stamped now); pass it to `done` when answered."""
        with self._queue:
            with self._lock:
                pause = self._until_room(self.clock())
            if pause > 0:
                self.sleep(pause)
            with self._lock:
                now = self.clock()
                self._expire(now)
                slot = [now]
                self.sent.append(slot)
        return pause, slot

    def done(self, slot: list[float]) -> None:
        """The answer arrived: the slot counts from now (HubSpot admitted the request before this)."""
        with self._lock:
            slot[0] = self.clock()

    def until_room(self) -> float:
        """Seconds until the window has room for one more request (0.0: it has room now)."""
        with self._lock:
            return self._until_room(self.clock())

    def _until_room(self, now: float) -> float:
        self._expire(now)
        if self.cap is None or len(self.sent) < self.cap:
            return 0.0
        # _expire frees slots oldest-sent first: room comes when the first len - cap + 1 have all expired.
        last = max(slot[0] for slot in itertools.islice(self.sent, len(self.sent) - self.cap + 1))
        return max(0.0, self.interval - (now - last)) + 0.001

    def _expire(self, now: float) -> None:
        while self.sent and now - self.sent[0][0] >= self.interval:
            self.sent.popleft()


class HubSpotClient:
    """The official `hubspot-api-client` SDK with HubSpot's rate-limit and failure rules around each call."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str | None = None,
        max_attempts: int = 12,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        import hubspot

        config: dict[str, Any] = {"access_token": token}
        if base_url:
            config["host"] = base_url.rstrip("/")
        self.sdk = hubspot.Client.create(**config)
        self.contacts = self.sdk.crm.contacts
        self.preferences = self.sdk.communication_preferences
        self.counts = RequestCounts()
        self._counts_lock = threading.Lock()
        self.pacer = Pacer(sleep)
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.search_ceiling = SEARCH_CEILING  # HubSpot's; lowered by tests against a server that lowers it

    def call(self, what: str, method: Callable[..., Any], *args: Any, raw: bool = False, **kwargs: Any) -> Any:
        """One SDK `*_with_http_info` call: paced, 429 waited out, 5xx retried, 401/403 raised at once.

        `raw`: the JSON as dicts, not the SDK's models (its model deserialisation parses every
        timestamp with dateutil: 85% of a pull's CPU, measured; the transport and auth are the SDK's).
        """
        from urllib3.exceptions import HTTPError

        delay = 0.5
        limited = 0  # 429s in a row for this call
        for attempt in range(1, self.max_attempts + 1):
            waited, slot = self.pacer.acquire()
            self._count(made=1, waited_seconds=waited)
            try:
                if raw:
                    response = method(*args, _preload_content=False, **kwargs)
                    data, headers = json.loads(response.data or b"null"), dict(response.headers)
                else:
                    data, _status, headers = method(*args, _return_http_data_only=False, **kwargs)
            except HTTPError:
                self._count(retried=1)
                wait = delay
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status is None:
                    raise
                headers = dict(getattr(exc, "headers", None) or {})
                self.pacer.observe(headers)
                if status in (401, 403):
                    raise HubSpotAuthRejected(
                        f"HubSpot {what}: HTTP {status}: the token was refused; check the private app's token "
                        "(Airflow connection hubspot_default or HUBSPOT_ACCESS_TOKEN) and its scopes "
                        "(crm.objects.contacts.read/write, communication_preferences.read_write)"
                    ) from None
                if status == 429:
                    self._count(rate_limited=1)
                    limited += 1
                    wait = self._rate_limited_wait(headers, limited)
                elif status >= 500 or status == 0:  # 0: the SDK's code for a connection (TLS) failure
                    self._count(retried=1)
                    wait = delay
                else:  # a request we got wrong: retrying repeats it; the body may hold data, so not quoted
                    raise CrmExportError(f"HubSpot {what}: HTTP {status} ({getattr(exc, 'reason', '')})") from None
            else:
                self.pacer.observe(dict(headers or {}))
                return data
            finally:
                self.pacer.done(slot)
            if attempt < self.max_attempts:
                self._count(waited_seconds=wait)
                self.sleep(wait)
                delay = min(delay * 2, 30.0)
        raise HubSpotUnavailable(f"HubSpot {what}: no success after {self.max_attempts} attempts")

    def _count(self, **increments: float) -> None:
        with self._counts_lock:
            for name, value in increments.items():
                setattr(self.counts, name, getattr(self.counts, name) + value)

    def _rate_limited_wait(self, headers: dict[str, str], in_a_row: int) -> float:
        """How long to wait out a 429: its Retry-After when given; else until our window has room, at
        least one request's share of the interval, doubled for each further 429 in a row (another
        client on the same token fills HubSpot's window without our knowing), at most one interval."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            return max(0.0, float(lowered["retry-after"]))
        except (KeyError, ValueError):
            pass
        interval = self.pacer.interval
        share = interval / self.pacer.cap if self.pacer.cap else 1.0
        return min(interval, max(self.pacer.until_room(), share * 2 ** (in_a_row - 1)))

    # ---- the endpoints -------------------------------------------------------------------------

    def search(self, low_ms: int, high_ms: int, properties: list[str], *, limit: int, after: str | None) -> Any:
        from hubspot.crm.contacts import PublicObjectSearchRequest

        request = PublicObjectSearchRequest(
            filter_groups=[
                {
                    "filters": [
                        {"propertyName": "lastmodifieddate", "operator": "GTE", "value": str(low_ms)},
                        {"propertyName": "lastmodifieddate", "operator": "LT", "value": str(high_ms)},
                    ]
                }
            ],
            sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            properties=properties,
            limit=limit,
            after=after,
        )
        return self.call("contacts search", self.contacts.search_api.do_search_with_http_info, request, raw=True)

    def archived_page(self, properties: list[str], *, after: str | None) -> Any:
        kwargs: dict[str, Any] = {"archived": True, "limit": 100, "properties": properties}
        if after:
            kwargs["after"] = after
        return self.call("archived contacts", self.contacts.basic_api.get_page_with_http_info, raw=True, **kwargs)

    def subscription_statuses(self, emails: list[str]) -> dict[str, list[dict]]:
        """Communication preferences v4 batch read (not wrapped by SDK 12): called through its ApiClient."""
        api_client = self.preferences.status_api.api_client
        data = self.call(
            "subscription statuses",
            api_client.call_api,
            "/communication-preferences/v4/statuses/batch/read",
            "POST",
            {},
            [("channel", "EMAIL")],
            {"Accept": "application/json", "Content-Type": "application/json"},
            body={"inputs": emails},
            response_types_map={200: "object"},
            auth_settings=["oauth2"],
        )
        return {row.get("subscriberIdString", ""): row.get("statuses") or [] for row in (data or {}).get("results", [])}

    def gdpr_delete(self, object_id: str) -> None:
        from hubspot.crm.contacts import PublicGdprDeleteInput

        self.call(
            "GDPR delete", self.contacts.basic_api.purge_with_http_info, PublicGdprDeleteInput(object_id=object_id)
        )

    def unsubscribe(self, email: str, subscription_id: str, explanation: str) -> None:
        from hubspot.communication_preferences import PublicUpdateSubscriptionStatusRequest

        request = PublicUpdateSubscriptionStatusRequest(
            email_address=email,
            subscription_id=subscription_id,
            legal_basis="CONSENT_WITH_NOTICE",
            legal_basis_explanation=explanation,
        )
        self.call("unsubscribe", self.preferences.status_api.unsubscribe_with_http_info, request)


def client_for(token: str | None, base_url: str | None, **kwargs: Any) -> HubSpotClient:
    if not token:
        raise HubSpotNotConfigured(
            "ingest.source is hubspot but no token is set: add the Airflow connection hubspot_default "
            "(password = the private app's token) or set HUBSPOT_ACCESS_TOKEN"
        )
    return HubSpotClient(token, base_url=base_url, **kwargs)


# ---- the pull --------------------------------------------------------------------------------


@dataclass
class Pull:
    """One pull: where its export was written (None when nothing changed) and its counts (no data)."""

    pull_id: str
    mode: str  # full | incremental
    export_dir: Path | None
    cursor_from: str | None
    cursor_to: datetime | None
    merges: dict[str, str] = field(default_factory=dict)
    archived: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # object id -> (request id, when)
    counts: dict[str, Any] = field(default_factory=dict)


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def _ms(moment: datetime) -> int:
    return int((moment - EPOCH).total_seconds() * 1000)


def _windows(client: HubSpotClient, low: int, high: int, properties: list[str], limit: int) -> Iterator[Any]:
    """Every page of contacts modified in [low, high), oldest first; a window over the ceiling is halved."""
    pending = [(low, high)]
    while pending:
        start, end = pending.pop()
        page = client.search(start, end, properties, limit=limit, after=None)
        total = page.get("total") or 0
        if total > client.search_ceiling and end - start > 1:
            middle = (start + end) // 2
            pending += [(middle, end), (start, middle)]  # the older half first
            continue
        if total > client.search_ceiling:
            raise CrmExportError(
                f"HubSpot search: {total} contacts share lastmodifieddate {start} ms, over the search "
                f"ceiling of {client.search_ceiling}; pull them in smaller batches in HubSpot"
            )
        yield page
        while _next_after(page):
            page = client.search(start, end, properties, limit=limit, after=_next_after(page))
            yield page


def _next_after(page: dict) -> str | None:
    return ((page.get("paging") or {}).get("next") or {}).get("after")


def pull(
    conn: Warehouse,
    policy: Policy,
    client: HubSpotClient,
    *,
    out_root: Path,
    now: datetime | None = None,
    full: bool = False,
) -> Pull:
    """Pull what changed since the cursor (everything on the first pull, or with `full`) into a CRM export.

    Raises:
        HubSpotAuthRejected: 401/403, at once.
        HubSpotUnavailable: HubSpot kept failing after every retry.
    """
    config = policy.hubspot
    assert config is not None  # noqa: S101 - the policy validates ingest.source: hubspot needs the block
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    cursor = conn.execute("select last_modified from ops.hubspot_cursor where portal = ?", [PORTAL]).fetchall()
    since = None if full or not cursor else cursor[0][0]
    pull_id = f"hubspot_{now.strftime('%Y%m%dT%H%M%S%f')}"
    properties = sorted({*config.properties, "hs_merged_object_ids"})
    contacts: dict[str, dict[str, Any]] = {}
    events: dict[str, dict[str, Any]] = {}
    merges: dict[str, str] = {}
    tallies = {"windows": 0, "statuses_not_consent": 0, "statuses_unmapped": 0, "pages": 0}
    newest: datetime | None = None
    low = _ms(since) + 1 if since else 0  # strictly after the cursor: what was loaded is not pulled again
    # A page's statuses are read by one worker while the next page is searched: two requests on the wire
    # (HubSpot's round trip, not the cap, bounds a one-at-a-time pull), taken in page order, so the export
    # is the same as one at a time; the pacer keeps both under the cap.
    statuses_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubspot-statuses")
    reading: deque[tuple[Future[dict[str, list[dict]]], dict[str, str]]] = deque()

    def take_statuses() -> None:
        future, emails = reading.popleft()
        for email, rows in future.result().items():
            contact_id = emails.get(contract.normalize_email(email))
            if contact_id:
                for row in rows:
                    event = _consent_event(contact_id, row, config, tallies)
                    if event:
                        events[event["event_id"]] = event

    try:
        for page in _windows(client, low, _ms(now) + 1, properties, config.page_size):
            tallies["pages"] += 1
            tallies["windows"] += _next_after(page) is None
            emails: dict[str, str] = {}
            for record in page.get("results") or []:
                object_id = str(record["id"])
                props = record.get("properties") or {}
                modified = _parse(props.get("lastmodifieddate") or record.get("updatedAt"))
                if modified is not None:
                    newest = max(newest, modified) if newest else modified
                contacts[object_id] = _contact_row(object_id, record, props, config)
                email = contract.normalize_email(props.get("email"))
                if email:
                    emails[email] = object_id
                for merged in (props.get("hs_merged_object_ids") or "").split(";"):
                    if merged.strip() and merged.strip() != object_id:
                        merges[merged.strip()] = object_id
            if emails:
                reading.append((statuses_reader.submit(client.subscription_statuses, sorted(emails)), emails))
            while len(reading) > STATUS_PAGES_AHEAD or (reading and reading[0][0].done()):
                take_statuses()
        while reading:
            take_statuses()
    finally:  # on a failure, status reads not yet started are not sent
        statuses_reader.shutdown(wait=True, cancel_futures=True)
    archived = _archived(conn, client, config)
    counts: dict[str, Any] = {
        "contacts_pulled": len(contacts),
        "consent_events_pulled": len(events),
        "merged_ids": len(merges),
        "archived_to_erase": len(archived),
        **tallies,
    }
    result = Pull(
        pull_id=pull_id,
        mode="full" if since is None else "incremental",
        export_dir=None,
        cursor_from=since.isoformat() if since else None,
        cursor_to=newest or since,
        merges=merges,
        archived={object_id: (request_id, when) for object_id, (request_id, when, _) in archived.items()},
        counts=counts,
    )
    if contacts or archived:
        result.export_dir = _write_export(out_root / pull_id, contacts, events, archived)
    result.counts["requests"] = asdict(client.counts)
    return result


def _contact_row(object_id: str, record: dict, props: dict[str, str | None], config: HubSpot) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(contract.CONTACTS.columns, "")
    for prop, column in config.properties.items():
        row[column] = props.get(prop) or ""
    if row["lifecycle_stage"]:
        row["lifecycle_stage"] = config.lifecycle_stages.get(row["lifecycle_stage"].strip().lower(), "")
    row["contact_id"] = object_id
    row["created_at"] = props.get("createdate") or record.get("createdAt") or ""
    row["updated_at"] = props.get("lastmodifieddate") or record.get("updatedAt") or ""
    return row


def _consent_event(contact_id: str, status: dict, config: HubSpot, tallies: dict[str, int]) -> dict | None:
    purpose = config.subscription_types.get(str(status.get("subscriptionId")))
    if purpose is None:
        tallies["statuses_unmapped"] += 1
        return None
    state = str(status.get("status") or "").upper()
    basis = str(status.get("legalBasis") or "")
    if state == "SUBSCRIBED" and basis not in config.consent_legal_bases:
        tallies["statuses_not_consent"] += 1  # subscribed on another basis: no consent to prove
        return None
    stamp = _parse(status.get("timestamp"))
    return {
        "event_id": f"hubspot-{contact_id}-{status.get('subscriptionId')}-{_ms(stamp) if stamp else 'unknown'}",
        "contact_id": contact_id,
        "purpose": purpose,
        "action": "grant" if state == "SUBSCRIBED" else "withdraw",
        "source": f"hubspot:{basis or 'no legal basis'}",
        "notice_version": config.notice_version or "",
        "occurred_at": status.get("timestamp") or "",
    }


def _archived(conn: Warehouse, client: HubSpotClient, config: HubSpot) -> dict[str, tuple[str, str | None, str]]:
    """Archived contacts we hold and have not handled yet: object id -> (request id, archived at, email)."""
    held = {row[0] for row in conn.execute("select contact_id from raw.crm_contacts").fetchall()}
    handled = {row[0] for row in conn.execute("select object_id from ops.hubspot_archived").fetchall()}
    found: dict[str, tuple[str, str | None, str]] = {}
    after = None
    while True:
        page = client.archived_page(["email"], after=after)
        for record in page.get("results") or []:
            object_id = str(record["id"])
            if object_id in held and object_id not in handled:
                email = contract.normalize_email((record.get("properties") or {}).get("email"))
                found[object_id] = (f"{ARCHIVED_PREFIX}{object_id}", record.get("archivedAt"), email)
        after = _next_after(page)
        if not after:
            return found


def _write_export(
    directory: Path,
    contacts: dict[str, dict],
    events: dict[str, dict],
    archived: dict[str, tuple[str, str | None, str]],
) -> Path:
    """The pull as a CRM export (contract columns, UTF-8 CSV), written owner-only, renamed into place."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, mode=0o700)
    requests = [
        {
            "request_id": request_id,
            "email": email,
            "request_type": "erasure",
            "details": json.dumps({"origin": "hubspot", "reason": "contact deleted in HubSpot"}),
            "received_at": when or datetime.now(UTC).replace(tzinfo=None).isoformat(),
        }
        for request_id, when, email in archived.values()
        if email
    ]
    for spec, rows in (
        (contract.CONTACTS, contacts.values()),
        (contract.CONSENT_EVENTS, events.values()),
        (contract.ACTIVITY, []),
        (contract.DSR_REQUESTS, requests),
    ):
        with (partial / spec.name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=spec.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


# ---- after the load --------------------------------------------------------------------------


def settle(conn: Warehouse, pulled: Pull, *, run_id: str | None, now: datetime | None = None) -> dict[str, int]:
    """After the pull was loaded: merged-away ids move to their survivor, the archived are recorded,
    the cursor advances, the pull is recorded. One transaction: a failed load leaves the cursor where it was."""
    now = (now or datetime.now(UTC)).replace(tzinfo=None)
    moved = 0
    conn.execute("begin transaction")
    try:
        for merged, survivor in sorted(pulled.merges.items()):
            known = conn.execute("select count(*) from ops.hubspot_merges where merged_id = ?", [merged]).fetchall()
            if known[0][0]:
                continue
            for table in ("crm_consent_events", "crm_activity"):
                conn.execute(f"update raw.{table} set contact_id = ? where contact_id = ?", [survivor, merged])  # noqa: S608
            held = conn.execute("select count(*) from raw.crm_contacts where contact_id = ?", [merged]).fetchall()
            moved += held[0][0]
            conn.execute("delete from raw.crm_contacts where contact_id = ?", [merged])
            conn.execute("insert into ops.hubspot_merges values (?, ?, ?)", [merged, survivor, now])
        for object_id, (request_id, when) in sorted(pulled.archived.items()):
            conn.execute(
                "insert into ops.hubspot_archived values (?, ?, ?, ?) on conflict do nothing",
                [object_id, request_id, _parse(when), now],
            )
        if pulled.cursor_to is not None:
            conn.execute(
                "insert into ops.hubspot_cursor values (?, ?, ?) on conflict (portal) do update set "
                "last_modified = excluded.last_modified, pulled_at = excluded.pulled_at",
                [PORTAL, pulled.cursor_to, now],
            )
        pulled.counts["merged_contacts_moved"] = moved
        conn.execute(
            "insert into ops.hubspot_pulls values (?, ?, ?, ?, ?) on conflict do nothing",
            [pulled.pull_id, run_id, pulled.mode, now, json.dumps(pulled.counts, default=str)],
        )
        conn.execute("commit")
    except Exception:
        conn.execute("rollback")
        raise
    return {"merged_contacts_moved": moved}
