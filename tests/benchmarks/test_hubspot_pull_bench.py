"""The HubSpot pull against the local server under a request cap: how much of the cap it uses, and
what an incremental pull after 1% of contacts changed costs beside the full pull.

The local server (tests/support/hubspot_server.py) runs in a process of its own (`ServerProcess`: its
JSON work must not share the client's GIL), holds CONTACTS contacts with a subscription status each and
caps requests at CAP per INTERVAL_MS (a sliding window, `X-HubSpot-RateLimit-*` headers, 429 over it):
HubSpot's private-app limit for Free and Starter portals. The connector paces itself from the headers.
A share of the cap is what the server admitted divided by the most the cap admits over the same span
(the full budget at the start plus the refill): 1.0 is the cap exactly. A sliding window refills in
laps, so N requests cannot end before (ceil(N / CAP) - 1) intervals: the share's ceiling at N requests
is N / (CAP * ceil(N / CAP)) (recorded beside it). GMP_BENCH_HUBSPOT_LATENCY_MS adds a round trip to
every answer (a far HubSpot; recorded under its own key). Figures go to bench/results.json under
"hubspot_pull"; one run each (a full pull at 100k takes about 100 s, capped). Nothing here asserts a time.
"""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime

import pytest
from governed_marketing import warehouse
from governed_marketing.crm import hubspot
from governed_marketing.policy import load_policy

from tests.benchmarks.conftest import record
from tests.support.hubspot_server import TOKEN, ServerProcess

pytestmark = pytest.mark.benchmark

CONTACTS = int(os.environ.get("GMP_BENCH_HUBSPOT_CONTACTS", "100000"))
LATENCY_MS = int(os.environ.get("GMP_BENCH_HUBSPOT_LATENCY_MS", "0"))
CAP = 100
INTERVAL_MS = 10_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _admitted_and_cpu(server: ServerProcess) -> tuple[int, float]:
    stats = server.stats()
    return int(stats["received"] - stats["rate_limited"]), stats["cpu_seconds"]


def _timed_pull(conn, policy, server: ServerProcess, tmp_path, name: str) -> dict:
    client = hubspot.HubSpotClient(TOKEN, base_url=server.url)
    admitted_before, server_cpu_before = _admitted_and_cpu(server)
    started, cpu_started = time.perf_counter(), time.process_time()
    pulled = hubspot.pull(conn, policy, client, out_root=tmp_path / name, now=datetime(2026, 12, 1))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    hubspot.settle(conn, pulled, run_id=name)
    admitted, server_cpu = _admitted_and_cpu(server)
    admitted -= admitted_before
    most = CAP * (1 + seconds / (INTERVAL_MS / 1000))
    return {
        "seconds": round(seconds, 2),
        "client_cpu_seconds": round(cpu, 2),
        "server_cpu_seconds": round(server_cpu - server_cpu_before, 2),
        "contacts": pulled.counts["contacts_pulled"],
        "contacts_per_second": round(pulled.counts["contacts_pulled"] / seconds, 1),
        "requests": pulled.counts["requests"]["made"],
        "rate_limited": pulled.counts["requests"]["rate_limited"],
        "paced_seconds": round(pulled.counts["requests"]["waited_seconds"], 2),
        "share_of_cap": round(admitted / most, 3),
        "share_ceiling_at_these_requests": round(admitted / (CAP * math.ceil(admitted / CAP)), 3),
    }


def test_hubspot_pull_under_the_cap(tmp_path):
    policy = load_policy()
    load_before = round(os.getloadavg()[0], 2)
    server = ServerProcess(CONTACTS, T0, cap=CAP, interval_ms=INTERVAL_MS, latency_ms=LATENCY_MS)
    with server, warehouse.session(tmp_path / "bench.duckdb") as conn:
        full = _timed_pull(conn, policy, server, tmp_path, "full")
        changed = max(1, CONTACTS // 100)
        moment = datetime(2026, 11, 1, tzinfo=UTC)  # after every contact, before the pull time
        server.touch([str(100_000 + i) for i in range(0, CONTACTS, CONTACTS // changed)], moment, city="Hamburg")
        time.sleep(INTERVAL_MS / 1000)  # a fresh window, as a daily run would find it
        incremental = _timed_pull(conn, policy, server, tmp_path, "incremental")
    figures = {
        "contacts": CONTACTS,
        "cap": f"{CAP} requests / {INTERVAL_MS} ms",
        "server_latency_ms": LATENCY_MS,
        "load_average_1m_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "full": full,
        "incremental_after_1pct": incremental,
        "incremental_requests_per_changed_contact": round(incremental["requests"] / incremental["contacts"], 4),
        "incremental_vs_full_seconds": round(incremental["seconds"] / full["seconds"], 4),
    }
    record("hubspot_pull" + (f"_latency_{LATENCY_MS}ms" if LATENCY_MS else ""), figures)
    print(figures)
    assert full["contacts"] == CONTACTS and incremental["contacts"] == changed
