"""Delivery throughput to a local SMTP server: the governed sender at 10k and 100k messages with the
cap off and on (share of the cap reached), beside a plain one-connection smtplib loop; peak RSS.

The SMTP server is aiosmtpd's discarding `Sink` in its own process (so it does not share our GIL).
The cap is set to half the uncapped rate measured just before (at most half the messages a minute,
so the capped send spans two minutes or more), and the share says whether pacing reaches it (goal
>= 0.9). Sizes: GMP_BENCH_DELIVERY_SIZES (default "10000,100000").
One run per measurement: a 100k send already takes minutes on a 2-core machine.

Peak RSS of each send is the process's VmHWM reset just before it (/proc/self/clear_refs): the
seeding of the test world (pandas frames of every contact) is not the sender's. `rss_before_mb` is
the process's RSS when the send starts (interpreter, DuckDB with the seeded warehouse); the growth
is what the send added, and `duckdb_memory_growth_mb` how much of it is DuckDB's own (duckdb_memory():
the ledger's rows and indexes), `python_live_blocks_growth` the Python objects left after the send.
Where clear_refs is refused, the process's lifetime peak is given instead.
"""

from __future__ import annotations

import gc
import os
import resource
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from governed_marketing import warehouse
from governed_marketing.delivery import tokens
from governed_marketing.delivery.message import render_message
from governed_marketing.delivery.sender import Relay, deliver_campaign, iter_outbox
from governed_marketing.settings import get_settings, reset_settings

from tests.benchmarks.conftest import record
from tests.support import delivery_world
from tests.support.smtp_sink import free_port

pytestmark = pytest.mark.benchmark
SIZES = [int(s) for s in os.environ.get("GMP_BENCH_DELIVERY_SIZES", "10000,100000").split(",")]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def _duckdb_mb(conn) -> float:
    """DuckDB's own memory (buffer pool, indexes, transactions): the warehouse's, not the sender's."""
    rows = conn.execute("select sum(memory_usage_bytes) from duckdb_memory()").fetchall()
    return (rows[0][0] or 0) / 2**20


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.fixture
def smtp_server():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}", "-c", "aiosmtpd.handlers.Sink"]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
            break
        except OSError:
            time.sleep(0.2)
    yield port
    server.terminate()
    server.wait()


@pytest.mark.parametrize("size", SIZES)
def test_delivery_throughput(size: int, smtp_server: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GMP_DELIVERY_KEY", "bench-delivery-key-0123456789abcdef0123")
    reset_settings()
    settings = get_settings()
    conn = warehouse.connect(settings.warehouse_path)
    delivery_world.seed(conn, size, campaigns=("spring_newsletter",))
    outbox = settings.home_dir / "outbox"
    path = delivery_world.write_outbox(outbox, "spring_newsletter", size)
    relay = Relay("127.0.0.1", smtp_server, security="none")
    keys = {"delivery_key": settings.resolve_delivery_key(), "pseudonym_key": settings.resolve_pseudonym_key()[0]}

    def governed(cap: int | None) -> tuple[float, dict[str, float | None]]:
        conn.execute("delete from ops.delivery_ledger").fetchall()
        conn.checkpoint()
        policy = delivery_world.policy_for(per_minute_cap=cap, connections=2)
        gc.collect()
        duck_before, blocks_before = _duckdb_mb(conn), sys.getallocatedblocks()
        reset = _reset_peak()
        before = _status_mb("VmRSS")
        start = time.perf_counter()
        outcome = deliver_campaign(
            "spring_newsletter", conn=conn, policy=policy, relay=relay, outbox_root=outbox,
            as_of=delivery_world.AS_OF, run_id=f"bench-{cap}", **keys,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        peak = _status_mb("VmHWM") if reset else _peak_rss_mb()
        assert outcome.sent == size
        rss = {"rss_before_mb": round(before or 0, 1), "peak_rss_mb": round(peak or 0, 1)}
        rss["peak_rss_growth_mb"] = round((peak or 0) - (before or 0), 1) if reset else None
        # Where RSS growth goes: DuckDB's memory (the ledger table and its two indexes grow with the
        # messages sent) and Python's live objects (what the sender keeps: flat when it streams).
        gc.collect()
        rss["duckdb_memory_growth_mb"] = round(_duckdb_mb(conn) - duck_before, 1)
        rss["python_live_blocks_growth"] = sys.getallocatedblocks() - blocks_before
        return size / elapsed, rss

    def plain_loop() -> float:
        """One connection, render + sendmail per row: no ledger, no checks, no cap."""
        policy = delivery_world.policy_for()
        campaign = policy.delivery.campaigns["spring_newsletter"]
        client = smtplib.SMTP("127.0.0.1", smtp_server)
        start = time.perf_counter()
        for row in (row for batch in iter_outbox(path, 1000) for row in batch):
            key = tokens.message_key(keys["delivery_key"], "spring_newsletter", row["contact_id"], "v")
            data = render_message(
                row, campaign=campaign, delivery=policy.delivery, message_key=key,
                token=tokens.unsubscribe_token(keys["delivery_key"], key),
            )  # fmt: skip
            client.sendmail("news@example.com", [row["email"]], data)
        elapsed = time.perf_counter() - start
        client.quit()
        return size / elapsed

    plain = plain_loop()
    uncapped, rss_off = governed(None)
    # Half the uncapped rate, and low enough that the capped send lasts two minutes or more: over a
    # shorter send the cap's one-second burst would count as pace (the cap allows `cap` in any minute).
    cap = max(60, min(int(uncapped * 60 * 0.5), size // 2))
    capped, rss_on = governed(cap)
    figures = {
        "messages": size,
        "connections": 2,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "plain_smtplib_one_connection_msgs_per_s": round(plain, 1),
        "governed_cap_off_msgs_per_s": round(uncapped, 1),
        "governed_vs_plain": round(uncapped / plain, 3),
        "cap_per_minute": cap,
        "governed_cap_on_msgs_per_s": round(capped, 1),
        "share_of_cap": round(capped / (cap / 60), 3),
        "cap_off_rss": rss_off,
        "cap_on_rss": rss_on,
        "process_peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    print(figures)
    record(f"delivery_{size}", figures)
    conn.close()
    reset_settings()
