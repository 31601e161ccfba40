"""A local HubSpot-compatible server for the connector's tests and benchmark (the outside world, faked).

Speaks the parts of the HubSpot API the connector uses, the way HubSpot does: CRM v3 contacts search
(filters on `lastmodifieddate`, `after` paging, at most 200 per page, the 10,000-results ceiling per
query answered with a 400), archived contacts (`GET /crm/v3/objects/contacts?archived=true`), merged
contacts (the survivor carries `hs_merged_object_ids`; the merged-away id leaves search), communication
preferences (v4 batch status read, v3 unsubscribe), and the GDPR delete. Every response carries the
`X-HubSpot-RateLimit-*` headers of a sliding-window cap; over the cap it answers 429 as HubSpot does.
Faults on demand: `fail_next(status, n)`, and `storm` (every other request a 429). Every request is
recorded (method, path, JSON body) so tests can say exactly what left.

`HubSpotServer` runs in the test's process (threads); `ServerProcess` runs one over `bulk_portal` in a
process of its own (the benchmark: the server's work must not share the client's GIL), reached for its
counts and contact changes through `/_local/*` paths that are neither capped nor recorded.
"""

from __future__ import annotations

import argparse
import bisect
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

SEARCH_CEILING = 10_000
TOKEN = "pat-test-hubspot-token"
LOCAL = "/_local"  # the test's control paths (ServerProcess), outside HubSpot's API


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
    #: Bumped by every change to who is searchable or when they were modified: the search index's key.
    version: int = 0

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
        self.version += 1
        return contact_id

    def touch(self, contact_id: str, modified: datetime, **properties: str) -> None:
        record = self.contacts[contact_id]
        record["properties"].update(properties)
        record["properties"]["lastmodifieddate"] = iso_ms(modified)
        record["updatedAt"] = iso_ms(modified)
        record["modified_ms"] = epoch_ms(modified)
        self.version += 1

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
        self.version += 1
        survivor = self.contacts[primary]["properties"]
        ids = [i for i in (survivor.get("hs_merged_object_ids") or "").split(";") if i]
        survivor["hs_merged_object_ids"] = ";".join([*ids, gone["id"]])
        self.touch(primary, at)

    def archive(self, contact_id: str, at: datetime) -> None:
        record = self.contacts[contact_id]
        record["archived"] = True
        record["archivedAt"] = iso_ms(at)
        self.version += 1

    def forget(self, contact_id: str) -> None:
        """The GDPR delete: the contact is gone for good."""
        self.gdpr_deleted.append(contact_id)
        self.contacts.pop(contact_id, None)
        self.version += 1


class HubSpotServer:
    """`with HubSpotServer(portal) as server:` then `server.url`; `server.requests` lists what came in."""

    def __init__(
        self, portal: Portal | None = None, *, cap: int = 1000, interval_ms: int = 10_000, latency_ms: int = 0
    ) -> None:
        self.portal = portal or Portal()
        self.cap = cap
        self.interval_ms = interval_ms
        self.latency_ms = latency_ms  # added to every API answer: a far HubSpot's round trip
        self.requests: list[Recorded] = []
        self.search_ceiling = SEARCH_CEILING
        self._index_state: tuple[int, int] | None = None
        self._index_cache: tuple[list[dict], list[int], list[dict]] = ([], [], [])
        self.storm = False
        self._faults: deque[tuple[int, str]] = deque()
        self._window: deque[float] = deque()
        self._lock = threading.Lock()
        self._storm_flip = False
        self._in_flight = 0
        self.peak_in_flight = 0  # the most API requests answered at once
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
            wbufsize = -1  # a buffered writer: headers and body leave in one write, flushed per response

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
                if parsed.path.startswith(LOCAL):  # the test's own control: not HubSpot, not capped or recorded
                    self._send(*server._local(method, parsed.path, body), {})
                    return
                with server._lock:
                    server._in_flight += 1
                    server.peak_in_flight = max(server.peak_in_flight, server._in_flight)
                try:
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
                    if server.latency_ms:
                        time.sleep(server.latency_ms / 1000)
                    self._send(status, payload, headers)
                finally:
                    with server._lock:
                        server._in_flight -= 1

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        return Handler

    def _local(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """The control a test in another process needs: counts of what came in, and contact changes."""
        if method == "GET" and path == f"{LOCAL}/stats":
            with self._lock:
                statuses = [r.status for r in self.requests]
            return 200, {
                "received": len(statuses),
                "rate_limited": statuses.count(429),
                "cpu_seconds": round(time.process_time(), 3),  # this process's: meaningful in ServerProcess
            }
        if method == "POST" and path == f"{LOCAL}/touch":
            moment = datetime.fromtimestamp(body["modified_ms"] / 1000, UTC)
            with self._lock:
                for contact_id in body["ids"]:
                    self.portal.touch(contact_id, moment, **body.get("properties", {}))
            return 200, {"touched": len(body["ids"])}
        return 404, {"status": "error", "message": f"no route {method} {path}"}

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
                portal.forget(object_id)
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
        """One page of the live contacts in the filtered lastmodifieddate range, oldest first: two
        bisections in the index and a slice, so a page costs the same at 100 or 100,000 contacts."""
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
        # [low, high) in ms: GT b is GTE b+1, LTE b is LT b+1.
        low = max([b + (op == "GT") for op, b in bounds if op in ("GT", "GTE")], default=None)
        high = min([b + (op == "LTE") for op, b in bounds if op in ("LT", "LTE")], default=None)
        with self._lock:
            live, keys, _ = self._index()
            start = 0 if low is None else bisect.bisect_left(keys, low)
            stop = len(keys) if high is None else bisect.bisect_left(keys, high)
            stop = max(start, stop)
            end = min(after + limit, ceiling, stop - start)
            page = live[start + after : start + end] if after < end else []
            results = [_public(c, body.get("properties") or []) for c in page]
        total = stop - start
        payload: dict[str, Any] = {"total": total, "results": results}
        if min(after + limit, ceiling) < total:  # past the ceiling, the next page is HubSpot's 400
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return 200, payload

    def _index(self) -> tuple[list[dict], list[int], list[dict]]:
        """(live contacts by (lastmodifieddate, id), their modified ms, archived contacts by id); rebuilt
        only when the portal changed (`Portal.version`), under the lock."""
        state = (self.portal.version, len(self.portal.contacts))
        if self._index_state != state:
            contacts = self.portal.contacts.values()
            live = sorted((c for c in contacts if not c["archived"]), key=lambda c: (c["modified_ms"], int(c["id"])))
            archived = sorted((c for c in contacts if c["archived"]), key=lambda c: int(c["id"]))
            self._index_cache = (live, [c["modified_ms"] for c in live], archived)
            self._index_state = state
        return self._index_cache

    def _list(self, query: dict) -> tuple[int, Any]:
        archived = (query.get("archived") or ["false"])[0].lower() == "true"
        limit = min(int((query.get("limit") or ["10"])[0]), 100)
        after = int((query.get("after") or ["0"])[0] or 0)
        wanted = (query.get("properties") or [""])[0].split(",")
        with self._lock:
            live, _, gone = self._index()
            rows = gone if archived else sorted(live, key=lambda c: int(c["id"]))
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


# ---- in a process of its own (the benchmark) -------------------------------------------------------


def bulk_portal(contacts: int, start: datetime) -> Portal:
    """`contacts` contacts modified a minute apart from `start` (ids from 100000), each subscribed to 101."""
    portal = Portal()
    for i in range(contacts):
        email = f"bench{i}@hubspot-bench.example"
        portal.add(
            {"email": email, "firstname": "Ann", "lastname": "Lee", "country": "DE", "hs_language": "de"},
            modified=start + timedelta(seconds=i * 60),
            contact_id=str(100_000 + i),
        )
        portal.set_status(email, "101", "SUBSCRIBED", at=start, basis="CONSENT_WITH_NOTICE")
    return portal


class ServerProcess:
    """`with ServerProcess(contacts, start, cap=..., interval_ms=...) as server:` a HubSpotServer over
    `bulk_portal(contacts, start)`, built and served in a process of its own, so its work does not share
    the client's GIL (as a real HubSpot would not). `stats()` and `touch()` reach it over HTTP."""

    def __init__(self, contacts: int, start: datetime, *, cap: int, interval_ms: int, latency_ms: int = 0) -> None:
        self.argv = [
            sys.executable, "-m", "tests.support.hubspot_server", "--contacts", str(contacts),
            "--start", start.isoformat(), "--cap", str(cap), "--interval-ms", str(interval_ms),
            "--latency-ms", str(latency_ms),
        ]  # fmt: skip
        self.url = ""
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        root = Path(__file__).resolve().parents[2]
        self._process = subprocess.Popen(self.argv, cwd=root, stdout=subprocess.PIPE, text=True)
        line = self._process.stdout.readline() if self._process.stdout else ""
        if not line.startswith("http://"):
            self._process.kill()
            raise RuntimeError(f"the HubSpot server process did not start (exit {self._process.wait()})")
        self.url = line.strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=30)

    def stats(self) -> dict[str, float]:
        """Requests received so far, how many of them were answered 429, the server's CPU seconds."""
        return self._call("GET", "stats")

    def touch(self, contact_ids: list[str], modified: datetime, **properties: str) -> None:
        self._call("POST", "touch", {"ids": contact_ids, "modified_ms": epoch_ms(modified), "properties": properties})

    def _call(self, method: str, name: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{LOCAL}/{name}", data=data, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our own local server
            return json.loads(response.read())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve bulk_portal(contacts) until terminated; prints the URL.")
    parser.add_argument("--contacts", type=int, required=True)
    parser.add_argument("--start", type=datetime.fromisoformat, required=True)
    parser.add_argument("--cap", type=int, default=1000)
    parser.add_argument("--interval-ms", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=int, default=0)
    args = parser.parse_args(argv)
    portal = bulk_portal(args.contacts, args.start)
    server = HubSpotServer(portal, cap=args.cap, interval_ms=args.interval_ms, latency_ms=args.latency_ms)
    with server._lock:
        server._index()  # built before the URL is announced, not inside the first timed request
    print(server.url, flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
