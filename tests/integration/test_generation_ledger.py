"""The generation ledger end to end on a real warehouse: exactly one paid draft per unit, whatever happens.

A small generated export is ingested and the dbt models are built once per module; each test works
on its own copy of that DuckDB file, with the real `openai` SDK talking to the local server.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import openai
import pytest
from governed_marketing.generation import ledger
from governed_marketing.generation.batch_flow import collect_campaign_batches, submit_campaign_batch
from governed_marketing.generation.campaign import ModeRefused, UnitsFailed, prepare_campaign
from governed_marketing.generation.cost import BudgetExceeded
from governed_marketing.generation.publish import publish_campaign
from governed_marketing.generation.run import run_campaign
from governed_marketing.generation.sync_flow import draft_sync
from governed_marketing.generation.transports.sync import OpenAIProvider
from governed_marketing.policy import Policy, load_policy
from governed_marketing.validation import GateFailed
from governed_marketing.warehouse import connect as warehouse_connect

from tests.support.built_warehouse import build_home
from tests.support.openai_server import LocalOpenAIServer

pytestmark = pytest.mark.integration

CAMPAIGN = "spring_newsletter"
MODEL = "gpt-4.1-mini"
AS_OF_TEXT = "2026-11-15T12:00:00"


@pytest.fixture(scope="module")
def built_warehouse(tmp_path_factory) -> Path:
    return build_home(tmp_path_factory.mktemp("ledger"), contacts=400, seed=7, as_of=AS_OF_TEXT) / "warehouse.duckdb"


@pytest.fixture
def conn(built_warehouse: Path, tmp_path: Path):
    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(built_warehouse, copy)
    connection = warehouse_connect(copy)
    yield connection
    connection.close()


@pytest.fixture
def policy() -> Policy:
    return load_policy()


def _as_of():
    from governed_marketing.runs import parse_as_of

    return parse_as_of(AS_OF_TEXT)


def _provider(server: LocalOpenAIServer, **kwargs) -> OpenAIProvider:
    """Configured as build_provider configures it from governance.yml."""
    policy = load_policy()
    client = openai.OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=kwargs.pop("max_retries", 2))
    return OpenAIProvider(
        client,
        MODEL,
        kwargs.pop("concurrency", 4),
        max_body_chars=policy.content.max_body_chars,
        max_output_tokens=policy.vendors["openai"].max_output_tokens,
        **kwargs,
    )


def _client(server: LocalOpenAIServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0)


def _statuses(conn) -> dict[str, int]:
    return dict(conn.execute("select status, count(*) from ops.generation_ledger group by status").fetchall())


def _common(conn, policy, run_id="run-1") -> dict:
    return {"conn": conn, "policy": policy, "as_of": _as_of(), "run_id": run_id}


def _outbox(root: Path) -> list[dict]:
    rows = []
    for path in sorted(root.rglob("*.jsonl")):
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return rows


def _units(conn) -> int:
    found = conn.execute(
        "select count(distinct cohort_id) from marts.campaign_audience where campaign_id = ?", [CAMPAIGN]
    ).fetchone()
    return int(found[0])


def _paying_units(conn) -> int:
    """Units whose request was paid (the others shared an identical request: see mark_shared)."""
    found = conn.execute("select count(*) from ops.generation_ledger where shared_request_of is null").fetchone()
    return int(found[0])


def _body_key(request) -> str:
    return json.dumps(request.body, sort_keys=True)


def _largest_share(conn) -> int:
    """The most units one paid request answered (1 when no two units send the same body)."""
    found = conn.execute(
        "select coalesce(max(n), 0) + 1 from (select count(*) as n from ops.generation_ledger "
        "where shared_request_of is not null group by shared_request_of)"
    ).fetchone()
    return int(found[0])


class _Crash(BaseException):
    """Stands for the worker dying: not an Exception, so no handler of ours runs."""


def test_a_crash_after_submit_and_a_task_retry_pay_for_each_unit_once(conn, policy, openai_server, tmp_path):
    provider = _provider(openai_server)
    prepare_campaign(CAMPAIGN, provider="openai", model=MODEL, transport="sync", **_common(conn, policy))
    assert _statuses(conn) == {"planned": _units(conn)}, "intent is recorded before anything is sent"
    assert openai_server.paid_requests == 0

    stored = 0
    real_record = ledger.record_success

    def crash_after_three(*args, **kwargs):
        nonlocal stored
        if stored == 3:
            raise _Crash
        stored += 1
        real_record(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger, "record_success", crash_after_three)
        with pytest.raises(_Crash):
            draft_sync(CAMPAIGN, provider=provider, transport="sync", **_common(conn, policy))
    statuses = _statuses(conn)
    # Only what was handed to the transport (at most `concurrency` requests) is `submitted`: maybe at the
    # vendor. The rest was never sent and is still just planned.
    assert statuses["succeeded"] == 3 and 1 <= statuses["submitted"] <= 4 * _largest_share(conn)
    assert statuses["planned"] == _units(conn) - 3 - statuses["submitted"]
    left_in_flight = statuses["submitted"]
    paid_before_retry = openai_server.paid_requests

    # The task retry: finished units are reused, the ones left in flight are recorded as in doubt (with
    # their estimated cost) and go again under the same Idempotency-Key.
    draft_sync(CAMPAIGN, provider=provider, transport="sync", **_common(conn, policy, "run-1-try-2"))
    assert _statuses(conn) == {"succeeded": _units(conn)}
    ever_in_doubt, in_doubt_cost = conn.execute(
        "select count(*) filter (where in_doubt_attempts > 0), sum(in_doubt_cost_usd) from ops.generation_ledger"
    ).fetchone()
    assert ever_in_doubt == left_in_flight and in_doubt_cost > 0
    assert openai_server.paid_requests == _paying_units(conn), "an in-doubt unit was paid twice"
    assert paid_before_retry <= _paying_units(conn)
    keys = [r.headers.get("idempotency-key") for r in openai_server.chat_requests()]
    assert all(k and k.startswith("gmp-") for k in keys)
    assert len(set(keys)) == _paying_units(conn), "one key per paid request, reused by the retry"

    published = publish_campaign(
        CAMPAIGN, provider="openai", model=MODEL, transport="sync", outbox_root=tmp_path, **_common(conn, policy)
    )
    assert published.messages > 0
    # A rerun of the whole campaign pays nothing.
    run_campaign(CAMPAIGN, provider=provider, outbox_root=tmp_path, **_common(conn, policy, "run-2"))
    assert openai_server.paid_requests == _paying_units(conn)


def test_a_batch_crash_between_create_and_recording_reattaches_instead_of_paying_again(
    conn, policy, openai_server, tmp_path
):
    client = _client(openai_server)
    common = {**_common(conn, policy), "provider": "openai", "model": MODEL}
    prepare_campaign(CAMPAIGN, transport="batch", **common)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger, "set_batch", lambda *a, **k: (_ for _ in ()).throw(_Crash()))
        with pytest.raises(_Crash):
            submit_campaign_batch(CAMPAIGN, client=client, **common)
    assert len(openai_server.batch_api.created_batch_ids) == 1

    retried = submit_campaign_batch(CAMPAIGN, client=client, **common)  # the task retry
    assert len(openai_server.batch_api.created_batch_ids) == 1, "the retry created a second batch"
    assert retried["batch_ids"] == openai_server.batch_api.created_batch_ids
    openai_server.batch_api.advance()
    collected = collect_campaign_batches(CAMPAIGN, retried["batch_ids"], client=client, **common)
    assert collected["batch_ids"] == [] and collected["succeeded"] == _units(conn)
    assert openai_server.batch_api.paid_lines == _units(conn)
    assert _statuses(conn) == {"succeeded": _units(conn)}
    assert not openai_server.batch_api.files, "vendor-side input and output files are deleted once read"


def test_batch_and_sync_write_the_same_outbox(built_warehouse, policy, openai_server, tmp_path):
    outboxes = {}
    for transport in ("sync", "batch"):
        copy = tmp_path / transport / "warehouse.duckdb"
        copy.parent.mkdir()
        shutil.copy(built_warehouse, copy)
        with warehouse_connect(copy) as connection:
            common = {**_common(connection, policy), "provider": "openai", "model": MODEL}
            prepare_campaign(CAMPAIGN, transport=transport, **common)
            if transport == "sync":
                draft_sync(CAMPAIGN, provider=_provider(openai_server), transport="sync", **_common(connection, policy))
            else:
                client = _client(openai_server)
                submitted = submit_campaign_batch(CAMPAIGN, client=client, **common)
                openai_server.batch_api.advance()
                collect_campaign_batches(CAMPAIGN, submitted["batch_ids"], client=client, **common)
            publish_campaign(CAMPAIGN, transport=transport, outbox_root=tmp_path / transport / "outbox", **common)
        outboxes[transport] = [
            {k: v for k, v in row.items() if k != "generated_at"} for row in _outbox(tmp_path / transport / "outbox")
        ]
    assert outboxes["sync"] and outboxes["sync"] == outboxes["batch"]


def test_injected_faults_lose_no_unit_and_the_next_run_requests_only_the_failed(conn, policy, openai_server, tmp_path):
    units = _units(conn)
    provider = _provider(openai_server, max_retries=1, concurrency=1)
    prepare_campaign(CAMPAIGN, provider="openai", model=MODEL, transport="sync", **_common(conn, policy))
    for _ in range(4):  # two units fail: each gets a 500 and a 503 on its one SDK retry
        openai_server.fail_next(500)
    openai_server.malformed_next(2)  # one unit is re-asked twice and rejected
    with pytest.raises(UnitsFailed, match="could not be drafted"):
        draft_sync(CAMPAIGN, provider=provider, transport="sync", **_common(conn, policy))
    statuses = _statuses(conn)
    assert statuses.get("failed") == 3 and statuses["succeeded"] == units - 3 and "submitted" not in statuses
    kinds = dict(
        conn.execute(
            "select last_error_kind, count(*) from ops.generation_ledger group by 1 having count(*) > 0"
        ).fetchall()
    )
    assert kinds.get("server") == 2 and kinds.get("rejected") == 1
    with pytest.raises(UnitsFailed, match="no accepted draft"):
        publish_campaign(
            CAMPAIGN, provider="openai", model=MODEL, transport="sync", outbox_root=tmp_path, **_common(conn, policy)
        )
    assert not list(tmp_path.rglob("*.jsonl")), "nothing is written while units are missing"

    before = len(openai_server.chat_requests())
    draft_sync(CAMPAIGN, provider=provider, transport="sync", **_common(conn, policy, "run-2"))
    assert len(openai_server.chat_requests()) - before == 3, "only the failed units were requested again"
    assert _statuses(conn) == {"succeeded": units}
    assert publish_campaign(
        CAMPAIGN, provider="openai", model=MODEL, transport="sync", outbox_root=tmp_path, **_common(conn, policy)
    ).messages


def test_an_over_budget_campaign_submits_nothing(conn, policy, openai_server):
    campaign = policy.campaigns[CAMPAIGN].model_copy(update={"budget_usd": 0.0001})
    tight = policy.model_copy(update={"campaigns": {**policy.campaigns, CAMPAIGN: campaign}})
    with pytest.raises(BudgetExceeded, match="would exceed campaigns.spring_newsletter.budget_usd"):
        prepare_campaign(CAMPAIGN, provider="openai", model=MODEL, transport="sync", **_common(conn, tight))
    assert openai_server.requests == []
    assert set(_statuses(conn)) <= {"planned"}


def test_the_estimate_is_recorded_and_is_not_below_what_was_paid(conn, policy, openai_server, tmp_path):
    outcome = run_campaign(CAMPAIGN, provider=_provider(openai_server), outbox_root=tmp_path, **_common(conn, policy))
    estimated_in, estimated_out, paid_in, paid_out, cost = conn.execute(
        "select sum(estimated_input_tokens), sum(estimated_output_tokens), sum(input_tokens), sum(output_tokens), "
        "sum(cost_usd) from ops.generation_ledger"
    ).fetchone()
    assert estimated_in >= paid_in and estimated_out >= paid_out
    price = policy.vendors["openai"].prices_usd_per_1m_tokens[MODEL]
    assert cost == pytest.approx((paid_in * price.input + paid_out * price.output) / 1e6, rel=1e-6)
    assert outcome.cost_usd == pytest.approx(cost, rel=1e-6) and outcome.estimated_cost_usd >= outcome.cost_usd


def test_individual_mode_is_refused_without_a_processor_agreement(conn, policy, openai_server):
    vendor = policy.vendors["openai"].model_copy(update={"dpa_signed": None})
    campaign = policy.campaigns[CAMPAIGN].model_copy(update={"personalization": "individual"})
    risky = policy.model_copy(
        update={"vendors": {"openai": vendor}, "campaigns": {**policy.campaigns, CAMPAIGN: campaign}}
    )
    with pytest.raises(ModeRefused, match="dpa_signed is missing"):
        prepare_campaign(CAMPAIGN, provider="openai", model=MODEL, transport="sync", **_common(conn, risky))
    assert openai_server.requests == []


def test_individual_mode_sends_only_the_allow_listed_fields(conn, policy, openai_server, tmp_path):
    campaign = policy.campaigns[CAMPAIGN].model_copy(update={"personalization": "individual"})
    individual = policy.model_copy(update={"campaigns": {**policy.campaigns, CAMPAIGN: campaign}})
    outcome = run_campaign(
        CAMPAIGN, provider=_provider(openai_server), outbox_root=tmp_path, **_common(conn, individual)
    )
    recipients = conn.execute(
        "select count(*) from marts.campaign_audience where campaign_id = ?", [CAMPAIGN]
    ).fetchone()[0]
    assert outcome.units == recipients == outcome.messages
    # Recipients whose allow-listed fields are identical send the same request: it is paid once.
    assert (
        openai_server.paid_requests == _paying_units(conn) == len({_body_key(r) for r in openai_server.chat_requests()})
    )
    allowed = set(policy.purpose_of(CAMPAIGN).fields) - {"language"}
    for request in openai_server.chat_requests():
        user = request.body["messages"][1]["content"]
        data = json.loads(re.findall(r"<cohort_data>\s*(\{.*?\})\s*</cohort_data>", user, re.S)[-1])
        assert set(data) <= allowed


def test_individual_mode_judges_each_message_by_its_own_draft(conn, policy, openai_server, tmp_path):
    """A unit is a recipient there: each message meets the checks of its own draft, so a draft with a
    phone number in it is rejected (drafted again next run), not merely stopped in the merged message."""
    campaign = policy.campaigns[CAMPAIGN].model_copy(update={"personalization": "individual"})
    individual = policy.model_copy(update={"campaigns": {**policy.campaigns, CAMPAIGN: campaign}})
    openai_server.sign_off_next("Call us on +49 30 1234 5678.")

    with pytest.raises(GateFailed, match=r"draft\(s\) rejected") as failed:
        run_campaign(CAMPAIGN, provider=_provider(openai_server), outbox_root=tmp_path, **_common(conn, individual))

    rejected = conn.execute("select count(*) from ops.generation_ledger where status = 'rejected'").fetchone()[0]
    assert rejected >= 1 and f"{rejected} draft(s) rejected" in str(failed.value)
    assert not list(tmp_path.rglob("*.jsonl"))


def test_nothing_is_published_while_units_are_still_in_a_vendor_batch(conn, policy, openai_server, tmp_path):
    client = _client(openai_server)
    common = {**_common(conn, policy), "provider": "openai", "model": MODEL}
    prepare_campaign(CAMPAIGN, transport="batch", **common)
    submitted = submit_campaign_batch(CAMPAIGN, client=client, **common)
    with pytest.raises(UnitsFailed, match="no accepted draft"):
        publish_campaign(CAMPAIGN, transport="batch", outbox_root=tmp_path, **common)
    assert not list(tmp_path.rglob("*.jsonl"))
    openai_server.batch_api.advance()
    collect_campaign_batches(CAMPAIGN, submitted["batch_ids"], client=client, **common)
    assert publish_campaign(CAMPAIGN, transport="batch", outbox_root=tmp_path, **common).messages > 0


def test_a_stop_request_mid_drafting_records_the_units_in_flight_as_in_doubt(conn, policy, tmp_path):
    """SIGTERM (here: the stop flag its handler sets) stops submitting; what was sent is recorded in doubt."""
    import threading

    from governed_marketing import stopping

    with LocalOpenAIServer(latency_s=3.0) as slow:
        provider = _provider(slow, concurrency=4)
        prepare_campaign(CAMPAIGN, provider="openai", model=MODEL, transport="sync", **_common(conn, policy))

        def stop_once_calls_are_out() -> None:
            while len(slow.chat_requests()) < 4:
                threading.Event().wait(0.02)
            stopping.request_stop("SIGTERM")

        stopper = threading.Thread(target=stop_once_calls_are_out, daemon=True)
        stopper.start()
        try:
            with pytest.raises(stopping.RunInterrupted, match="in doubt"):
                draft_sync(CAMPAIGN, provider=provider, transport="sync", **_common(conn, policy))
        finally:
            stopper.join(timeout=30)
            stopping.reset()

        statuses = _statuses(conn)
        assert "submitted" not in statuses, "nothing is left looking merely submitted"
        # Every request out when the stop came is either answered (the vendor replied before the flag was
        # seen: on a loaded machine the first 3 s answer can beat the fourth request) or in doubt.
        assert statuses.get("in_doubt", 0) >= 1 and sum(statuses.values()) == _units(conn)
        assert statuses.get("in_doubt", 0) + statuses.get("succeeded", 0) >= 4
        sent_keys = {r.headers["idempotency-key"] for r in slow.chat_requests()}
        rows = conn.execute(
            "select status, custom_id, attempts, in_doubt_attempts, in_doubt_cost_usd, shared_request_of, "
            "estimated_cost_usd from ops.generation_ledger"
        ).fetchall()
        for status, cid, attempts, in_doubt_attempts, cost, shared_of, estimate in rows:
            if status == "in_doubt":
                assert attempts == 1 and in_doubt_attempts == 1
                assert (shared_of or cid) + "-1" in sent_keys, "only what was sent is in doubt"
                assert cost == (0 if shared_of else estimate)
            if status == "planned":
                assert attempts == 0 and f"{cid}-1" not in sent_keys, "a unit never sent is not in doubt"

        # The next run sends the in-doubt units again under the same key: the vendor answers from its record.
        draft_sync(CAMPAIGN, provider=provider, transport="sync", **_common(conn, policy, "run-2"))
        assert _statuses(conn) == {"succeeded": _units(conn)}
        assert slow.paid_requests == _paying_units(conn), "an in-doubt unit was paid twice"
        outcome = prepare_campaign(CAMPAIGN, provider="openai", model=MODEL, transport="sync", **_common(conn, policy))
        assert outcome.reused_drafts == _units(conn)
        doubt = ledger.in_doubt_totals(conn, CAMPAIGN)
        assert doubt["units_ever_in_doubt"] == statuses["in_doubt"] and doubt["in_doubt_units"] == 0
        assert doubt["in_doubt_cost_usd"] > 0


def test_offline_drafts_are_stored_in_sets_and_a_crash_between_sets_loses_none(conn, policy, monkeypatch):
    """Offline drafts cost nothing to make again: stored in sets, one transaction each (not one per draft)."""
    from governed_marketing.generation.transports import offline
    from governed_marketing.generation.transports.offline import OFFLINE_MODEL, OfflineProvider

    monkeypatch.setattr(ledger, "DRAFTS_PER_WRITE", 4)
    monkeypatch.setattr(offline, "SUBMIT_CHUNK", 4)
    prepare_campaign(CAMPAIGN, provider="offline", model=OFFLINE_MODEL, transport="offline", **_common(conn, policy))
    units = _units(conn)
    assert units > 8, "the test needs more than two sets"
    writes: list[int] = []
    real_write = ledger.record_successes

    def crash_from_second_set_on(conn_, stored, **kwargs):
        writes.append(len(stored))
        if len(writes) >= 2:
            raise _Crash
        real_write(conn_, stored, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger, "record_successes", crash_from_second_set_on)
        with pytest.raises(_Crash):
            draft_sync(CAMPAIGN, provider=OfflineProvider(), transport="offline", **_common(conn, policy))
    assert writes == [4, 4, 4], "four drafts per transaction; the failed set is tried once more on the way out"
    # The first set is stored with its ledger rows; the second was handed over, never stored; the rest planned.
    assert _statuses(conn) == {"succeeded": 4, "submitted": 4, "planned": units - 8}

    writes.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger, "record_successes", lambda c, s, **k: (writes.append(len(s)), real_write(c, s, **k)))
        draft_sync(CAMPAIGN, provider=OfflineProvider(), transport="offline", **_common(conn, policy, "run-1-try-2"))
    assert _statuses(conn) == {"succeeded": units}
    assert sum(writes) == units - 4 and max(writes) <= 4, "only what was not stored is drafted again, in sets"
    stored = conn.execute(
        "select count(*), count(distinct unit_id) from ops.generated_content where campaign_id = ?", [CAMPAIGN]
    ).fetchone()
    assert stored == (units, units)


def test_a_set_of_drafts_is_stored_whole_or_not_at_all(conn, policy):
    from governed_marketing.generation.base import Draft, DraftResult
    from governed_marketing.generation.campaign import load_work
    from governed_marketing.generation.transports.offline import OFFLINE_MODEL

    prepare_campaign(CAMPAIGN, provider="offline", model=OFFLINE_MODEL, transport="offline", **_common(conn, policy))
    work = load_work(conn, policy, CAMPAIGN, provider="offline", model=OFFLINE_MODEL, as_of=_as_of())
    first, second = list(work.requests.values())[:2]
    result = DraftResult(draft=Draft(subject="Hello", preheader="Spring", body="Our spring range is in."), model="m")
    # The same unit twice breaks generated_content's key on the insert: the whole set is rolled back.
    with pytest.raises(Exception, match="(?i)constraint|duplicate|unique"):
        ledger.record_successes(
            conn,
            [(first, result, 0.0), (second, result, 0.0), (first, result, 0.0)],
            provider="offline",
            model=OFFLINE_MODEL,
        )
    assert conn.execute("select count(*) from ops.generated_content").fetchone()[0] == 0
    assert _statuses(conn) == {"planned": _units(conn)}

    ledger.record_successes(
        conn, [(first, result, 0.5), (second, result, 0.25)], provider="offline", model=OFFLINE_MODEL
    )
    assert _statuses(conn) == {"succeeded": 2, "planned": _units(conn) - 2}
    assert conn.execute("select round(sum(cost_usd), 2) from ops.generation_ledger").fetchone()[0] == 0.75


def test_an_objection_received_after_drafting_keeps_the_person_out_of_the_outbox(conn, policy, tmp_path):
    """Publish is the last moment: a request received after the drafts were made still wins."""
    from governed_marketing.generation.transports.offline import OFFLINE_MODEL, OfflineProvider
    from governed_marketing.privacy import dsr
    from governed_marketing.settings import get_settings

    common = {"provider": "offline", "model": OFFLINE_MODEL, "transport": "offline"}
    prepare_campaign(CAMPAIGN, **common, **_common(conn, policy))
    draft_sync(CAMPAIGN, provider=OfflineProvider(), transport="offline", **_common(conn, policy))
    contact_id, email = conn.execute(
        "select c.contact_id, c.email_normalized from marts.campaign_recipients r "
        "join raw.crm_contacts c using (contact_id) where r.campaign_id = ? order by c.contact_id limit 1",
        [CAMPAIGN],
    ).fetchone()
    key, _ = get_settings().resolve_pseudonym_key()
    dsr.submit(conn, "objection", email, policy=policy, key=key, now=_as_of())

    outcome = publish_campaign(CAMPAIGN, **common, outbox_root=tmp_path, **_common(conn, policy))
    sent_to = {row["contact_id"] for row in _outbox(tmp_path)}
    assert contact_id not in sent_to and email not in {row["email"] for row in _outbox(tmp_path)}
    assert outcome.messages == len(sent_to) == _recipients(conn) - 1
    assert outcome.dropped_before_vendor == 1, "the summary and the report count who the last-moment check dropped"


def _recipients(conn) -> int:
    found = conn.execute("select count(*) from marts.campaign_recipients where campaign_id = ?", [CAMPAIGN]).fetchone()
    return int(found[0])
