"""A local HubSpot-compatible server for the connector's tests and benchmark (the outside world, faked).

Speaks the parts of the HubSpot API the connector uses, the way HubSpot does: CRM v3 contacts search
(filters on `lastmodifieddate`, `after` paging, at most 200 per page, the 10,000-results ceiling per
query answered with a 400), archived contacts (`GET /crm/v3/objects/contacts?archived=true`), merged
contacts (the survivor carries `hs_merged_object_ids`; the merged-away id leaves search), communication
preferences (v4 batch status read, v3 unsubscribe), and the GDPR delete. Every response carries the
`X-HubSpot-RateLimit-*` headers of a sliding-window cap; over the cap it answers 429 as HubSpot does.
Faults on demand: `fail_next(status, n)`, and `storm` (every other request a 429). Every request is
recorded (method, path, JSON body) so tests can say exactly what left.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

SEARCH_CEILING = 10_000
TOKEN = "pat-test-hubspot-token"


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int


@dataclass
class Portal:
    """The portal's data: contacts (id -> record), their subscription statuses, what was deleted."""

    contacts: dict[str, dict] = field(default_factory=dict)
    #: email -> [{subscriptionId, status, legalBasis, legalBasisExplanation, timestamp, ...}]
    statuses: dict[str, list[dict]] = field(default_factory=dict)
    gdpr_deleted: list[str] = field(default_factory=list)
    next_id: int = 1000

    def add(self, properties: dict[str, str], *, modified: datetime, contact_id: str | None = None) -> str:
        contact_id = contact_id or str(self.next_id)
        self.next_id = max(self.next_id, int(contact_id)) + 1
        created = properties.pop("_created", None) or modified
        self.contacts[contact_id] = {
            "id": contact_id,
            "properties": {
                **properties,
                "hs_object_id": contact_id,
                "createdate": iso_ms(created),
                "lastmodifieddate": iso_ms(modified),
            },
            "createdAt": iso_ms(created),
            "updatedAt": iso_ms(modified),
            "archived": False,
            "modified_ms": epoch_ms(modified),
        }
        return contact_id

    def touch(self, contact_id: str, modified: datetime, **properties: str) -> None:
        record = self.contacts[contact_id]
        record["properties"].update(properties)
        record["properties"]["lastmodifieddate"] = iso_ms(modified)
        record["updatedAt"] = iso_ms(modified)
        record["modified_ms"] = epoch_ms(modified)

    def set_status(self, email: str, subscription_id: str, status: str, *, at: datetime, basis: str) -> None:
        rows = [s for s in self.statuses.get(email, []) if s["subscriptionId"] != subscription_id]
        rows.append(
            {
                "subscriptionId": subscription_id,
                "status": status,
                "legalBasis": basis,
                "legalBasisExplanation": "Opted in on the preferences page",
                "timestamp": iso_ms(at),
                "source": "Subscription preferences page",
                "channel": "EMAIL",
                "subscriberIdString": email,
            }
        )
        self.statuses[email] = rows

    def merge(self, primary: str, merged_away: str, at: datetime) -> None:
        """HubSpot's merge: the survivor lists the merged-away id; that id leaves search."""
        gone = self.contacts.pop(merged_away)
        survivor = self.contacts[primary]["properties"]
        ids = [i for i in (survivor.get("hs_merged_object_ids") or "").split(";") if i]
        survivor["hs_merged_object_ids"] = ";".join([*ids, gone["id"]])
        self.touch(primary, at)

    def archive(self, contact_id: str, at: datetime) -> None:
        record = self.contacts[contact_id]
        record["archived"] = True
        record["archivedAt"] = iso_ms(at)


class HubSpotServer:
    """`with HubSpotServer(portal) as server:` then `server.url`; `server.requests` lists what came in."""

    def __init__(self, portal: Portal | None = None, *, cap: int = 1000, interval_ms: int = 10_000) -> None:
        self.portal = portal or Portal()
        self.cap = cap
        self.interval_ms = interval_ms
        self.requests: list[Recorded] = []
        self.search_ceiling = SEARCH_CEILING
        self._order_state: tuple[int, int] | None = None
        self._order: tuple[list[dict], list[int]] = ([], [])
        self.storm = False
        self._faults: deque[tuple[int, str]] = deque()
        self._window: deque[float] = deque()
        self._lock = threading.Lock()
        self._storm_flip = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubSpotServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, status: int, count: int = 1, path: str = "") -> None:
        """The next `count` requests whose path starts with `path` get this status (5xx, 401, 403, 429)."""
        for _ in range(count):
            self._faults.append((status, path))

    def calls(self, path_prefix: str, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    # ---- the protocol -----------------------------------------------------------------------------

    def _rate_headers(self, now: float) -> dict[str, str]:
        remaining = max(0, self.cap - len(self._window))
        return {
            "X-HubSpot-RateLimit-Max": str(self.cap),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.interval_ms),
        }

    def _admit(self, path: str) -> tuple[int | None, dict[str, str]]:
        """(status to answer instead, headers): the cap, the storm, injected faults."""
        with self._lock:
            now = time.monotonic()
            while self._window and now - self._window[0] >= self.interval_ms / 1000:
                self._window.popleft()
            for index, (status, prefix) in enumerate(self._faults):
                if path.startswith(prefix):
                    del self._faults[index]
                    return status, self._rate_headers(now)
            if self.storm:
                self._storm_flip = not self._storm_flip
                if self._storm_flip:
                    return 429, {**self._rate_headers(now), "Retry-After": "0"}
            if len(self._window) >= self.cap:
                return 429, self._rate_headers(now)
            self._window.append(now)
            return None, self._rate_headers(now)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                query = parse_qs(parsed.query)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, payload, headers = 401, {"status": "error", "category": "INVALID_AUTHENTICATION"}, {}
                else:
                    forced, headers = server._admit(parsed.path)
                    if forced is not None:
                        status, payload = forced, _error_payload(forced)
                    else:
                        status, payload = server._route(method, parsed.path, query, body)
                with server._lock:
                    server.requests.append(Recorded(method, parsed.path, query, body, status))
                self._send(status, payload, headers)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        return Handler

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        portal = self.portal
        if method == "POST" and path == "/crm/v3/objects/contacts/search":
            return self._search(body or {})
        if method == "GET" and path == "/crm/v3/objects/contacts":
            return self._list(query)
        if method == "POST" and path == "/communication-preferences/v4/statuses/batch/read":
            results = [
                {"subscriberIdString": email, "statuses": portal.statuses.get(email, [])}
                for email in (body or {}).get("inputs", [])
            ]
            return 200, {"status": "COMPLETE", "results": results}
        if method == "POST" and path == "/crm/v3/objects/contacts/gdpr-delete":
            object_id = str((body or {}).get("objectId"))
            with self._lock:
                portal.gdpr_deleted.append(object_id)
                portal.contacts.pop(object_id, None)
            return 204, None
        if method == "POST" and path == "/communication-preferences/v3/unsubscribe":
            email, subscription = body["emailAddress"], str(body["subscriptionId"])
            with self._lock:
                portal.set_status(
                    email, subscription, "NOT_SUBSCRIBED", at=datetime.now(UTC), basis=body.get("legalBasis") or ""
                )
            return 200, {
                "id": subscription,
                "name": subscription,
                "description": "",
                "status": "NOT_SUBSCRIBED",
                "sourceOfStatus": "PORTAL_WIDE_STATUS",
            }
        return 404, {"status": "error", "message": f"no route {method} {path}", "category": "OBJECT_NOT_FOUND"}

    def _search(self, body: dict) -> tuple[int, Any]:
        limit = min(int(body.get("limit") or 10), 200)
        after = int(body.get("after") or 0)
        ceiling = self.search_ceiling
        if after >= ceiling:
            return 400, {
                "status": "error",
                "message": "There was a problem with the request.",
                "category": "VALIDATION_ERROR",
            }
        bounds = []
        for group in body.get("filterGroups") or []:
            for item in group.get("filters") or []:
                if item["propertyName"] == "lastmodifieddate":
                    bounds.append((item["operator"], int(item["value"])))
        checks = {
            "GT": lambda v, b: v > b,
            "GTE": lambda v, b: v >= b,
            "LT": lambda v, b: v < b,
            "LTE": lambda v, b: v <= b,
        }
        with self._lock:
            ordered, keys = self._ordered()
            low = max([b + (op == "GT") for op, b in bounds if op in ("GT", "GTE")], default=None)
            high = min([b + (op == "LTE") for op, b in bounds if op in ("LT", "LTE")], default=None)
            start = 0 if low is None else bisect.bisect_left(keys, low)
            stop = len(keys) if high is None else bisect.bisect_left(keys, high)
            matching = [
                c
                for c in ordered[start:stop]
                if not c["archived"] and all(checks[op](c["modified_ms"], bound) for op, bound in bounds)
            ]
        wanted = body.get("properties") or []
        end = min(after + limit, ceiling)
        results = [_public(c, wanted) for c in matching[after:end]]
        payload: dict[str, Any] = {"total": len(matching), "results": results}
        if end < len(matching):
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return 200, payload

    def _ordered(self) -> tuple[list[dict], list[int]]:
        """The contacts by (lastmodifieddate, id), rebuilt only when the portal changed (fast at 100k)."""
        state = (len(self.portal.contacts), sum(c["modified_ms"] for c in self.portal.contacts.values()))
        if self._order_state != state:
            ordered = sorted(self.portal.contacts.values(), key=lambda c: (c["modified_ms"], int(c["id"])))
            self._order = (ordered, [c["modified_ms"] for c in ordered])
            self._order_state = state
        return self._order

    def _list(self, query: dict) -> tuple[int, Any]:
        archived = (query.get("archived") or ["false"])[0].lower() == "true"
        limit = min(int((query.get("limit") or ["10"])[0]), 100)
        after = int((query.get("after") or ["0"])[0] or 0)
        wanted = (query.get("properties") or [""])[0].split(",")
        with self._lock:
            rows = sorted(
                (c for c in self.portal.contacts.values() if c["archived"] == archived), key=lambda c: int(c["id"])
            )
        page = rows[after : after + limit]
        results = [{**_public(c, wanted), **({"archivedAt": c["archivedAt"]} if archived else {})} for c in page]
        payload: dict[str, Any] = {"results": results}
        if after + limit < len(rows):
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return 200, payload


def _public(record: dict, wanted: list[str]) -> dict:
    properties = record["properties"]
    keep = {name: properties.get(name) for name in wanted if name}
    for always in ("hs_object_id", "createdate", "lastmodifieddate"):
        keep[always] = properties.get(always)
    return {
        "id": record["id"],
        "properties": keep,
        "createdAt": record["createdAt"],
        "updatedAt": record["updatedAt"],
        "archived": record["archived"],
    }


def _error_payload(status: int) -> dict:
    if status == 429:
        return {
            "status": "error",
            "message": "You have reached your ten_secondly_rolling limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "TEN_SECONDLY_ROLLING",
        }
    if status in (401, 403):
        return {"status": "error", "message": "Authentication credentials not found.", "category": "INVALID_AUTH"}
    return {"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"}
