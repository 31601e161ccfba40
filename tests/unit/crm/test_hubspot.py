"""The HubSpot source against the local HubSpot-compatible server (tests/support/hubspot_server.py).

Connector level: real SDK, real ingest, real DuckDB, real privacy processing; only HubSpot is faked.
The CSV side of each comparison is written here from the portal's records, independently of the
connector, in the contract's shape: the two sources must give the same raw tables.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from governed_marketing import warehouse
from governed_marketing.crm import contract, hubspot
from governed_marketing.crm.ingest import ingest_export
from governed_marketing.orchestration import task_bodies
from governed_marketing.policy import Policy, load_policy
from governed_marketing.privacy import dsr
from governed_marketing.privacy.process import process_pending
from governed_marketing.settings import get_settings, reset_settings

from tests.support.hubspot_server import TOKEN, HubSpotServer, Portal

REPO = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 15, 12, 0)
STAGES = ("subscriber", "lead", "marketingqualifiedlead", "customer", "other")
#: A recognizable identifier seeded into HubSpot: must never reach a request beyond the allow-list.
MARKER_PHONE = "+49 30 5550 1717"


@pytest.fixture(scope="module")
def policy() -> Policy:
    base = load_policy(REPO / "governance.yml")
    # Small pages, so a few dozen contacts already need paging.
    return base.model_copy(update={"hubspot": base.hubspot.model_copy(update={"page_size": 10})})


def seed(portal: Portal, n: int = 60) -> None:
    for i in range(n):
        email = f"person{i:03d}@hubspot-test.example"
        portal.add(
            {
                "email": email,
                "firstname": ["Zoë", "O'Brien", "Jean-Luc", "Łukasz"][i % 4],
                "lastname": f"Hubtester{chr(65 + i % 26)}",
                "phone": MARKER_PHONE if i == 7 else f"+49 30 1000 {i:04d}",
                "date_of_birth": "1980-02-03" if i % 5 else "",
                "country": ["DE", "FR", "BE"][i % 3],
                "hs_language": ["de", "fr", "en"][i % 3],
                "city": "Berlin",
                "lifecyclestage": STAGES[i % len(STAGES)],
                "interests": "hiking;books",
                "_created": T0 - timedelta(days=30),
            },
            modified=T0 + timedelta(minutes=i),
            contact_id=str(1000 + i),
        )
        portal.set_status(email, "101", "SUBSCRIBED", at=T0, basis="CONSENT_WITH_NOTICE")
        if i % 2:
            portal.set_status(email, "102", "SUBSCRIBED", at=T0, basis="CONSENT_WITH_NOTICE")
    # One contract breach: an invalid email, to be quarantined with its HubSpot object id.
    portal.contacts[str(1000 + n // 2)]["properties"]["email"] = "not-an-email"


def csv_export(portal: Portal, directory: Path, policy: Policy) -> Path:
    """The same contacts as a CSV export of the contract, written from the portal's data."""
    config = policy.hubspot
    directory.mkdir(parents=True)
    contacts, events = [], []
    for record in portal.contacts.values():
        if record["archived"]:
            continue
        props = record["properties"]
        row = dict.fromkeys(contract.CONTACTS.columns, "")
        for prop, column in config.properties.items():
            row[column] = props.get(prop) or ""
        row["lifecycle_stage"] = config.lifecycle_stages.get(row["lifecycle_stage"], "")
        row.update(contact_id=record["id"], created_at=props["createdate"], updated_at=props["lastmodifieddate"])
        contacts.append(row)
        for status in portal.statuses.get(contract.normalize_email(props.get("email")), []):
            stamp = datetime.fromisoformat(status["timestamp"].replace("Z", "+00:00"))
            events.append(
                {
                    "event_id": f"hubspot-{record['id']}-{status['subscriptionId']}-{int(stamp.timestamp() * 1000)}",
                    "contact_id": record["id"],
                    "purpose": config.subscription_types[status["subscriptionId"]],
                    "action": "grant" if status["status"] == "SUBSCRIBED" else "withdraw",
                    "source": f"hubspot:{status['legalBasis']}",
                    "notice_version": config.notice_version,
                    "occurred_at": status["timestamp"],
                }
            )
    for spec, rows in ((contract.CONTACTS, contacts), (contract.CONSENT_EVENTS, events), (contract.ACTIVITY, [])):
        with (directory / spec.name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=spec.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return directory


def raw_tables(conn) -> dict[str, list[tuple]]:
    return {
        "contacts": conn.execute("select * exclude (load_id) from raw.crm_contacts order by contact_id").fetchall(),
        "consent": conn.execute("select * exclude (load_id) from raw.crm_consent_events order by event_id").fetchall(),
        "quarantine": conn.execute(
            "select distinct file_name, reason, raw_record from raw.quarantine order by raw_record"
        ).fetchall(),
    }


def hubspot_load(conn, policy: Policy, client, tmp_path: Path) -> hubspot.Pull:
    pulled = hubspot.pull(conn, policy, client, out_root=tmp_path / "pulls", now=NOW)
    if pulled.export_dir is not None:
        ingest_export(pulled.export_dir, conn=conn, policy=policy, landing_root=tmp_path / "landing", now=NOW)
    hubspot.settle(conn, pulled, run_id="test")
    return pulled


def client_for(server: HubSpotServer, token: str = TOKEN) -> hubspot.HubSpotClient:
    return hubspot.HubSpotClient(token, base_url=server.url, sleep=lambda seconds: None)


def test_full_and_incremental_pulls_give_the_raw_tables_of_a_csv_export(policy, tmp_path):
    portal = Portal()
    seed(portal)
    with HubSpotServer(portal) as server:
        server.search_ceiling = 25  # 60 contacts: the first window passes the ceiling and is split
        client = client_for(server)
        client.search_ceiling = 25
        with warehouse.session(tmp_path / "hub.duckdb") as hub, warehouse.session(tmp_path / "csv.duckdb") as ref:
            full = hubspot_load(hub, policy, client, tmp_path / "h1")
            ingest_export(
                csv_export(portal, tmp_path / "csv1", policy),
                conn=ref,
                policy=policy,
                landing_root=tmp_path / "l1",
                now=NOW,
            )
            assert full.mode == "full" and full.counts["contacts_pulled"] == 60
            assert raw_tables(hub) == raw_tables(ref)
            assert len(raw_tables(hub)["contacts"]) == 59
            (quarantined,) = raw_tables(hub)["quarantine"]
            assert "email invalid" in quarantined[1] and json.loads(quarantined[2])["contact_id"] == "1030"

            # 1 of 60 contacts changed, and one consent withdrawn: the incremental pull asks for little.
            before = len(server.requests)
            portal.touch("1003", T0 + timedelta(days=10), city="Hamburg")
            portal.set_status(
                "person003@hubspot-test.example",
                "101",
                "NOT_SUBSCRIBED",
                at=T0 + timedelta(days=10),
                basis="CONSENT_WITH_NOTICE",
            )
            incremental = hubspot_load(hub, policy, client, tmp_path / "h2")
            ingest_export(
                csv_export(portal, tmp_path / "csv2", policy),
                conn=ref,
                policy=policy,
                landing_root=tmp_path / "l2",
                now=NOW,
            )
            assert incremental.mode == "incremental" and incremental.counts["contacts_pulled"] == 1
            assert len(server.requests) - before <= 3  # one search page, one status read, one archived page
            assert raw_tables(hub) == raw_tables(ref)
            # Consent proof names HubSpot as its source.
            sources = {row[0] for row in hub.execute("select distinct source from raw.crm_consent_events").fetchall()}
            assert sources == {"hubspot:CONSENT_WITH_NOTICE"}
    # Nothing beyond the allow-list left in a request: the phone never appears in what we sent.
    assert not any(MARKER_PHONE in json.dumps(r.body) for r in server.requests)


def test_merged_and_deleted_contacts(policy, tmp_path):
    portal = Portal()
    seed(portal, 12)
    with HubSpotServer(portal) as server:
        client = client_for(server)
        with warehouse.session(tmp_path / "hub.duckdb") as conn:
            hubspot_load(conn, policy, client, tmp_path / "a")
            portal.merge("1001", "1002", T0 + timedelta(days=2))  # 1002 merged into 1001
            portal.archive("1004", T0 + timedelta(days=2))
            pulled = hubspot_load(conn, policy, client, tmp_path / "b")
            assert pulled.merges == {"1002": "1001"} and set(pulled.archived) == {"1004"}
            held = {row[0] for row in conn.execute("select contact_id from raw.crm_contacts").fetchall()}
            assert "1002" not in held and "1001" in held
            owners = conn.execute(
                "select distinct contact_id from raw.crm_consent_events where event_id like 'hubspot-1002-%'"
            ).fetchall()
            assert owners == [("1001",)]  # the merged-away id's consent history belongs to the survivor
            assert conn.execute("select surviving_id from ops.hubspot_merges").fetchall() == [("1001",)]
            request = conn.execute(
                "select request_type, email_normalized from raw.crm_dsr_requests where request_id = ?",
                ["hubspot-archived-1004"],
            ).fetchall()
            assert request == [("erasure", "person004@hubspot-test.example")]
            assert conn.execute("select request_id from ops.hubspot_archived").fetchall() == [
                ("hubspot-archived-1004",)
            ]
            # A rerun changes nothing and records nothing twice.
            again = hubspot_load(conn, policy, client, tmp_path / "c")
            assert again.export_dir is None and again.archived == {} and again.merges == {}
            assert conn.execute("select count(*) from ops.hubspot_merges").fetchall() == [(1,)]


def test_a_429_storm_and_5xx_lose_nothing(policy, tmp_path):
    portal = Portal()
    seed(portal, 40)
    with HubSpotServer(portal) as calm, HubSpotServer(portal) as stormy:
        stormy.storm = True  # every other request answered 429
        stormy.fail_next(503, 2)
        with warehouse.session(tmp_path / "a.duckdb") as a, warehouse.session(tmp_path / "b.duckdb") as b:
            quiet = hubspot.pull(a, policy, client_for(calm), out_root=tmp_path / "a", now=NOW)
            pulled = hubspot.pull(b, policy, client_for(stormy), out_root=tmp_path / "b", now=NOW)
            hubspot.settle(b, pulled, run_id="storm")
            recorded = json.loads(b.execute("select counts_json from ops.hubspot_pulls").fetchall()[0][0])
    for spec in contract.EXPORT_FILES:  # the same export, byte for byte
        assert (quiet.export_dir / spec.name).read_bytes() == (pulled.export_dir / spec.name).read_bytes()
    assert pulled.counts["contacts_pulled"] == 40
    assert pulled.counts["requests"]["rate_limited"] > 5 and pulled.counts["requests"]["retried"] == 2
    assert recorded["requests"] == pulled.counts["requests"]  # the run records made, retried, rate-limited


def test_the_pacer_keeps_under_the_announced_cap():
    slept: list[float] = []
    pacer = hubspot.Pacer(sleep=slept.append)
    pacer.observe({"X-HubSpot-RateLimit-Max": "3", "X-HubSpot-RateLimit-Interval-Milliseconds": "60000"})
    for _ in range(4):
        pacer.wait()
    assert len(slept) == 1 and slept[0] > 50  # the fourth waits for the window


def test_the_pacer_counts_a_request_from_its_answer():
    """HubSpot admitted the request somewhere between send and answer: the slot frees an interval
    after the answer, never after the send (that was early by up to one round trip: a 429)."""
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = hubspot.Pacer(sleep=sleep, clock=lambda: now[0])
    pacer.observe({"X-HubSpot-RateLimit-Max": "2", "X-HubSpot-RateLimit-Interval-Milliseconds": "1000"})
    for _ in range(2):
        _, slot = pacer.acquire()
        now[0] += 0.05  # the round trip
        pacer.done(slot)
    assert pacer.until_room() == pytest.approx(1.001 - 0.05)
    waited, _ = pacer.acquire()
    assert slept == [waited] and now[0] == pytest.approx(1.051)  # the first answer (0.05) + the interval


def test_paced_requests_spend_the_cap_without_a_429(policy, tmp_path):
    """Stamped when answered, our window never frees a slot before the server's: laps after the first
    burst find room (a send-time stamp met a 429 at the start of every lap, each one waited out)."""
    portal = Portal()
    seed(portal, 40)
    with HubSpotServer(portal, cap=3, interval_ms=400) as server, warehouse.session(tmp_path / "w.duckdb") as conn:
        client = hubspot.HubSpotClient(TOKEN, base_url=server.url)  # real sleeps: the pacer must wait
        pulled = hubspot.pull(conn, policy, client, out_root=tmp_path / "pulls", now=NOW)
    assert pulled.counts["contacts_pulled"] == 40 and client.counts.made > 2 * server.cap
    assert [r.status for r in server.requests if r.status == 429] == []
    # No assertion on time waited: on a loaded machine requests may be slow enough never to fill the window;
    # that the pacer waits for room is proven on a fake clock (test_the_pacer_counts_a_request_from_its_answer).
    assert client.counts.rate_limited == 0


def test_429s_without_retry_after_back_off_from_a_requests_share_of_the_interval(policy, tmp_path):
    """No Retry-After and room in our window: one request's share of the interval (10 s / 100), doubled
    for each 429 in a row; never the whole interval for one 429."""
    slept: list[float] = []
    portal = Portal()
    seed(portal, 5)
    with HubSpotServer(portal, cap=100, interval_ms=10_000) as server, warehouse.session(tmp_path / "w.duckdb") as conn:
        client = hubspot.HubSpotClient(TOKEN, base_url=server.url, sleep=slept.append)
        client.pacer.observe({"X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"})
        server.fail_next(429, 3, path="/crm/v3/objects/contacts/search")
        pulled = hubspot.pull(conn, policy, client, out_root=tmp_path / "pulls", now=NOW)
    assert pulled.counts["contacts_pulled"] == 5 and client.counts.rate_limited == 3
    assert slept == pytest.approx([0.1, 0.2, 0.4])


def test_status_reads_overlap_the_next_search_and_the_export_is_the_same(policy, tmp_path):
    """A far HubSpot (a round trip on every answer): a page's status read is on the wire beside the
    next search, never more than those two at once, and the export is byte for byte the one-server one."""
    portal = Portal()
    seed(portal, 60)
    with (
        HubSpotServer(portal) as near,
        HubSpotServer(portal, latency_ms=30) as far,
        warehouse.session(tmp_path / "a.duckdb") as a,
        warehouse.session(tmp_path / "b.duckdb") as b,
    ):
        quick = hubspot.pull(a, policy, client_for(near), out_root=tmp_path / "a", now=NOW)
        slow = hubspot.pull(b, policy, client_for(far), out_root=tmp_path / "b", now=NOW)
    assert far.peak_in_flight == 2
    for spec in contract.EXPORT_FILES:
        assert (quick.export_dir / spec.name).read_bytes() == (slow.export_dir / spec.name).read_bytes()
    # 60 contacts, 90 statuses; the one with an invalid email (quarantined later) has no status read.
    assert slow.counts["contacts_pulled"] == 60 and slow.counts["consent_events_pulled"] == 89


def test_401_stops_at_once_with_a_clear_message(policy, tmp_path):
    with HubSpotServer(Portal()) as server, warehouse.session(tmp_path / "w.duckdb") as conn:
        client = client_for(server, token="pat-wrong")
        with pytest.raises(hubspot.HubSpotAuthRejected, match="HTTP 401.*hubspot_default"):
            hubspot.pull(conn, policy, client, out_root=tmp_path / "pulls", now=NOW)
        assert client.counts.made == 1
        assert conn.execute("select count(*) from ops.hubspot_cursor").fetchall() == [(0,)]


def test_erasure_reaches_hubspot_once_with_only_the_id_and_an_objection_is_written_back(tmp_path, monkeypatch):
    portal = Portal()
    seed(portal, 6)
    with HubSpotServer(portal) as server:
        monkeypatch.setenv("GMP_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
        monkeypatch.setenv("GMP_HUBSPOT_BASE_URL", server.url)
        reset_settings()
        try:
            settings = get_settings()
            policy = load_policy()
            counts = task_bodies.ingest_from_source("hubspot", None, run_id="run-1")
            assert counts["contacts_read"] == 6 and counts["hubspot"]["mode"] == "full"
            key = settings.resolve_pseudonym_key()[0]
            with warehouse.session(settings=settings) as conn:
                erasure = dsr.submit(conn, "erasure", "person002@hubspot-test.example", policy=policy, key=key)
                objection = dsr.submit(conn, "objection", "person003@hubspot-test.example", policy=policy, key=key)
            process_pending(settings=settings, policy=policy)
            for run in ("run-2", "run-3"):  # the second pass sends nothing again
                task_bodies.inform_crm(run_id=run)
        finally:
            reset_settings()
        deletes = server.calls("/crm/v3/objects/contacts/gdpr-delete")
        assert [r.body for r in deletes] == [{"objectId": "1002"}]  # once, the object id and nothing else
        unsubscribes = server.calls("/communication-preferences/v3/unsubscribe")
        assert {r.body["subscriptionId"] for r in unsubscribes} == {"101", "102"}
        assert {r.body["emailAddress"] for r in unsubscribes} == {"person003@hubspot-test.example"}
        assert all(objection in r.body["legalBasisExplanation"] for r in unsubscribes)
        statuses = {s["subscriptionId"]: s["status"] for s in portal.statuses["person003@hubspot-test.example"]}
        assert statuses == {"101": "NOT_SUBSCRIBED", "102": "NOT_SUBSCRIBED"}
        receipt = json.loads((tmp_path / "home" / "receipts" / f"{erasure}.json").read_text())
        informed = [r for r in receipt["recipients_to_notify"] if r["recipient"].startswith("HubSpot")]
        assert informed and informed[0]["identifier_sent"] == "the HubSpot object id only"
        with warehouse.session(tmp_path / "home" / "warehouse.duckdb", read_only=True) as conn:
            left = conn.execute("select status, identifier from ops.crm_upstream order by action").fetchall()
        assert left == [("sent", None), ("sent", None)]  # identifiers forgotten once sent
